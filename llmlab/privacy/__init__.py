"""Differential privacy (lab m14): the Rényi-DP accountant of the subsampled Gaussian mechanism and its
conversion to (epsilon, delta) (``accountant``), and the analytic Gaussian mechanism (``gaussian``)."""
