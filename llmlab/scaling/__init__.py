"""Scaling laws (lab m11): power-law and Chinchilla fits, IsoFLOP minima, the compute-optimal allocation, the
gradient noise scale, a model zoo that llmlab trains itself, and a compute-optimal planner."""

from llmlab.scaling.laws import (
    EPOCH_2024,
    EPOCH_2024_SE,
    HOFFMANN_2022,
    ChinchillaFit,
    approach2,
    bootstrap,
    chinchilla_objective,
    compute_optimal,
    fit_chinchilla,
    fit_power_law,
    huber,
    isoflop_minimum,
)
from llmlab.scaling.noise import NoiseScale, batch_gradient_norms, noise_scale_estimates

__all__ = ["EPOCH_2024", "EPOCH_2024_SE", "HOFFMANN_2022", "ChinchillaFit", "NoiseScale", "approach2",
           "batch_gradient_norms", "bootstrap", "chinchilla_objective", "compute_optimal", "fit_chinchilla",
           "fit_power_law", "huber", "isoflop_minimum", "noise_scale_estimates"]
