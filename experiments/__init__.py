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
import warnings
from types import ModuleType

import jaxlib.version
from jax._src import xla_bridge

from dynamics.validation import require_choice


def _one_thread_cpu_pool() -> None:
    """jaxlib < 0.11.2 on CPU: a batched LAPACK call (eigh, cholesky, LU, ...) on a worker of
    XLA's intra-op pool schedules its chunks to the same pool and blocks, so as many concurrent
    calls as the pool has threads wedge a program forever (seen here: a sweep idle in
    BlockUntilReady with both workers in jax::ParallelBatchMap). A one-thread pool runs every call
    inline; the engine's parallelism (one program per device) is unaffected. It takes effect only
    if set before jax starts its CPU backend (warned otherwise); an explicit PJRT_NPROC wins."""
    if "PJRT_NPROC" in os.environ or jaxlib.version.__version_info__ >= (0, 11, 2):
        return
    if getattr(xla_bridge, "backends_are_initialized", lambda: False)():
        warnings.warn(
            "diffdyn: jax's CPU backend started before PJRT_NPROC=1 was set; batched linear algebra in a sweep can "
            "deadlock with jaxlib < 0.11.2. Import diffdyn's experiments before using jax, or set PJRT_NPROC=1.",
            stacklevel=3,
        )
    os.environ["PJRT_NPROC"] = "1"


_one_thread_cpu_pool()

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
