"""Studies: one module per experiment, each a reproducible sweep with a CLI, figures and a
measured-vs-predicted table.

A study module follows the contract of :mod:`dynamics.study` (``Config``, ``PRESETS``,
``validate``, ``point``, ``outputs``, ``summarize``, optional ``figures``); adding one is a module,
a line in :data:`EXPERIMENTS` and a test file. Run one from Python with
``experiments.run(experiments.get("spectral-bias"), config)`` or ``spectral_bias.run(config)``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

# jaxlib < 0.11.2 on CPU: a batched LAPACK call (eigh, cholesky, LU, ...) running on a worker of
# XLA's intra-op pool schedules its chunks to the same pool and blocks, so as many concurrent
# calls as the pool has threads wedge a program forever (seen here: a sweep idle in
# BlockUntilReady with both workers in jax::ParallelBatchMap). A one-thread pool makes every
# call run inline; the engine's parallelism (one program per device) is unaffected. Set before
# jax starts its CPU backend; an explicit PJRT_NPROC wins.
os.environ.setdefault("PJRT_NPROC", "1")

from dynamics.validation import require_choice

EXPERIMENTS: dict[str, str] = {
    "spectral-bias": "experiments.spectral_bias",
    "inverse-design": "experiments.inverse_design",
    "speciation": "experiments.speciation",
    "class-imbalance": "experiments.class_imbalance",
    "nonlinear-spectral-bias": "experiments.nonlinear_spectral_bias",
    "memorization": "experiments.memorization",
    "simplicity-bias": "experiments.simplicity_bias",
    "simplicity-bias-images": "experiments.simplicity_bias_images",
    "collapse-refine": "experiments.collapse_refine",
}


def get(name: str) -> ModuleType:
    """The study module registered as ``name``."""
    return importlib.import_module(EXPERIMENTS[require_choice("experiment", name, EXPERIMENTS)])


def run(study: ModuleType, config=None):
    """The swept dataset of ``study`` (default config: its quick preset); see :mod:`experiments.runner`."""
    from experiments import runner

    return runner.run(study, config)
