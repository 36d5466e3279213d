"""Test-wide JAX settings: float64 and strict rank promotion, as in diffrax's own suite."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
