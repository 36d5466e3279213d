"""Studies: one module per experiment, each a reproducible sweep with a CLI, figures and a
measured-vs-predicted table.

A study module follows the contract of :mod:`diffdyn.dynamics.study` (``Config``, ``PRESETS``,
``validate``, ``point``, ``outputs``, ``summarize``, optional ``figures``); adding one is a module,
a line in :data:`EXPERIMENTS` and a test file. Run one from Python with
``experiments.run(experiments.get("spectral-bias"), config)`` or ``spectral_bias.run(config)``.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from types import ModuleType

import jaxlib.version
from jax._src import xla_bridge

from diffdyn.dynamics.validation import require_choice


def cpu_pool_threads(xla_flags: str) -> int:
    """Threads of XLA's CPU intra-op pool that avoid a jaxlib < 0.11.2 deadlock: a batched LAPACK
    call (eigh, cholesky, LU, ...) running on a pool thread schedules its chunks to the same pool
    and blocks until they finish, so as many concurrent calls as the pool has threads wedge the
    program forever (seen here: every pool thread in jax::ParallelBatchMap). With one thread
    every call runs inline. With N forced host devices the pool has at least N threads and every
    device runs its own program concurrently, so it gets 4 N: a deadlock then needs 4 N
    concurrent LAPACK calls, N programs at a time."""
    match = re.search(r"--xla_force_host_platform_device_count=(\d+)", xla_flags)
    devices = int(match.group(1)) if match else 1
    return 1 if devices == 1 else 4 * devices


def _size_cpu_pool() -> None:
    """Set ``PJRT_NPROC`` to :func:`cpu_pool_threads` before jax starts its CPU backend (warned
    if it already has); an explicit ``PJRT_NPROC`` wins; jaxlib >= 0.11.2 needs nothing."""
    if "PJRT_NPROC" in os.environ or jaxlib.version.__version_info__ >= (0, 11, 2):
        return
    if getattr(xla_bridge, "backends_are_initialized", lambda: False)():
        warnings.warn(
            "diffdyn: jax's CPU backend started before PJRT_NPROC was set; batched linear algebra in a sweep can "
            "deadlock with jaxlib < 0.11.2. Import diffdyn's experiments before using jax, or set PJRT_NPROC=1.",
            stacklevel=3,
        )
    os.environ["PJRT_NPROC"] = str(cpu_pool_threads(os.environ.get("XLA_FLAGS", "")))


_size_cpu_pool()

EXPERIMENTS: dict[str, str] = {
    "spectral-bias": "diffdyn.experiments.spectral_bias",
    "inverse-design": "diffdyn.experiments.inverse_design",
    "speciation": "diffdyn.experiments.speciation",
    "class-imbalance": "diffdyn.experiments.class_imbalance",
    "nonlinear-spectral-bias": "diffdyn.experiments.nonlinear_spectral_bias",
    "memorization": "diffdyn.experiments.memorization",
    "simplicity-bias": "diffdyn.experiments.simplicity_bias",
    "simplicity-bias-images": "diffdyn.experiments.simplicity_bias_images",
    "collapse-refine": "diffdyn.experiments.collapse_refine",
}


def get(name: str) -> ModuleType:
    """The study module registered as ``name``."""
    return importlib.import_module(EXPERIMENTS[require_choice("experiment", name, EXPERIMENTS)])


def run(study: ModuleType, config=None):
    """The swept dataset of ``study`` (default config: its quick preset); see :mod:`diffdyn.experiments.runner`."""
    from diffdyn.experiments import runner

    return runner.run(study, config)
