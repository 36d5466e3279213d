"""The diffdyn engine: how models evolve in training time and in diffusion time.

Submodules: ``schedules`` (noise processes and grids), ``objectives`` (denoising losses),
``training`` (optax / gradient-flow training loops), ``sampling`` (probability-flow ODE),
``measures`` (spectra, emergence times, fits) and ``theory`` (closed forms).
"""
