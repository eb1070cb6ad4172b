"""Advanced representation theory (lab m15): the empirical neural tangent kernel of a one-layer transformer,
random-matrix spectra of weights (Marchenko-Pastur, Wigner, heavy tails), and lottery tickets by iterative
magnitude pruning with rewinding."""
