"""Test-wide JAX settings (float64 and strict rank promotion, as in diffrax's own suite; the CPU
pool size of ``experiments/__init__.py``) and the shared test modules (``toy_study``,
``helpers``) on the import path. Subprocess tests that force host devices drop ``PJRT_NPROC``
from their environment so that the child sizes its own pool."""

import sys
from pathlib import Path

import jax

import diffdyn.experiments  # noqa: F401  (sizes the CPU pool, PJRT_NPROC, before jax starts its backend)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

for folder in ("dynamics", "experiments"):
    sys.path.insert(0, str(Path(__file__).parent / folder))
