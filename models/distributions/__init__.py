"""Data distributions: Gaussian data with chosen spectra (``models.distributions.gaussian``) and
Gaussian mixtures with classes, imbalance and exact noised scores (``models.distributions.mixtures``)."""

from diffdyn.models.distributions.gaussian import (
    GaussianData,
    empirical_data,
    gaussian_data,
    log_normal_spectrum,
    log_spaced_spectrum,
    power_law_spectrum,
    random_rotation,
    sample,
    stationary_data,
)

__all__ = [
    "GaussianData",
    "empirical_data",
    "gaussian_data",
    "log_normal_spectrum",
    "log_spaced_spectrum",
    "power_law_spectrum",
    "random_rotation",
    "sample",
    "stationary_data",
]
