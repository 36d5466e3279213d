"""Test-wide JAX settings (float64 and strict rank promotion, as in diffrax's own suite; the CPU
pool setting of ``experiments/__init__.py``) and the shared test modules (``toy_study``,
``helpers``) on the import path."""

import os
import sys
from pathlib import Path

# The CPU pool setting of experiments/__init__.py (a jaxlib < 0.11.2 deadlock of batched LAPACK
# calls), before jax starts its backend; subprocesses inherit it.
os.environ.setdefault("PJRT_NPROC", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

for folder in ("dynamics", "experiments"):
    sys.path.insert(0, str(Path(__file__).parent / folder))
