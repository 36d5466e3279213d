"""Sweeps: a study's grid x seeds as one compiled, vmapped program per shape.

``sweep(study, config, extra)`` is the one engine behind ``diffdyn run`` (the config's own grid)
and ``diffdyn scan`` (more fields swept on top). Four steps, one module each:

* :mod:`~diffdyn.dynamics.sweep.plan`: resolve the axes, check every grid point (field metadata and the
  study's ``validate``) before anything compiles, and group runs by their static values;
* :mod:`~diffdyn.dynamics.sweep.execute`: per group one ``jit(shard_map(vmap(point)))`` program; runs go
  through it in chunks sized to a memory budget, each device running its own runs with no
  collective; failed runs (solver status or NaN/inf) are masked, never raised;
* :mod:`~diffdyn.dynamics.sweep.store`: finished chunks written atomically; an interrupted sweep resumes
  bit-identically; several ``jax.distributed`` processes take every ``process_count``-th chunk;
* :mod:`~diffdyn.dynamics.sweep.assemble`: one labelled ``xarray.Dataset`` with ``failure`` codes.

Guarantees (tested in ``tests/dynamics/test_sweep.py`` and ``tests/experiments/test_engine.py``):
a run's numbers depend only on its field values and seed: bit for bit across devices, processes
and resumed sweeps with the same runs per device and call; across chunk sizes and grid shapes to
rounding (XLA may vectorise a batch of 1 and of 8 differently, and an adaptive solver can amplify
that ~1e-16 to its tolerance). A second sweep of the same shapes does not recompile.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import xarray as xr

from diffdyn.dynamics import config as configs
from diffdyn.dynamics.storage import atomic_path
from diffdyn.dynamics.sweep.assemble import assemble, failure_counts
from diffdyn.dynamics.sweep.execute import TRACES, barrier, choose_chunk_size, default_memory_budget, parse_bytes, run_chunks
from diffdyn.dynamics.sweep.plan import Plan, parse_grid_option, plan
from diffdyn.dynamics.sweep.store import ChunkStore
from diffdyn.dynamics.validation import ConfigError

__all__ = ["SweepResult", "TRACES", "parse_bytes", "parse_grid_option", "plan", "sweep"]


class SweepResult(NamedTuple):
    dataset: xr.Dataset | None  # None on processes other than 0
    summary: dict
    config: Any  # the config swept (with the grid values given on top)


def sweep(
    study: ModuleType,
    config: Any,
    extra: Mapping[str, Sequence] | None = None,
    *,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
    devices: Sequence | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Run ``study`` on every point of its grid (``config``'s grid fields, with ``extra`` values
    or extra swept fields) x ``config.seeds``; return one labelled dataset and the bookkeeping.

    ``chunk_size`` (runs per program call, a multiple of the device count) defaults to the
    largest that fits ``max_memory`` bytes per device. With ``out`` the chunks and
    ``results.nc`` are written there (``resume`` finishes an interrupted sweep; ``overwrite``
    replaces a finished one). ``devices`` defaults to every local device. With several
    ``jax.distributed`` processes call this in each with the same arguments; process 0 returns
    the dataset. Runs in the precision that is active (the caller sets the study's).
    """
    devices = tuple(jax.local_devices() if devices is None else devices)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size % len(devices)):
        raise ConfigError(f"chunk_size: must be a positive multiple of the {len(devices)} devices, got {chunk_size!r}")
    budget = parse_bytes(max_memory) if max_memory is not None else default_memory_budget(devices[0])
    planned = plan(study, config, extra)
    if jax.process_count() > 1 and out is None:
        raise ConfigError("out: a multi-process sweep needs --out on a filesystem that all processes share")
    store = ChunkStore(out)
    traces_before = TRACES[study.__name__]
    started = time.perf_counter()
    sizes = _chunk_sizes(study, planned, store, resume, overwrite, chunk_size, devices, budget)
    run_chunks(study, store, planned.groups, devices, sizes, planned.config.seed, progress)
    barrier("diffdyn-sweep-chunks")
    summary = {
        "experiment": study.NAME,
        "runs": planned.runs,
        "programs": len(planned.groups),
        "chunk_sizes": sizes,
        "devices": len(devices),
        "processes": jax.process_count(),
        "compiles": TRACES[study.__name__] - traces_before,
        "seconds": time.perf_counter() - started,
    }
    if jax.process_index() != 0:
        return SweepResult(None, summary, planned.config)
    dataset = assemble(study, planned, store, sizes)
    summary["failed"] = failure_counts(dataset)
    if out is not None:
        with atomic_path(Path(out) / "results.nc") as temporary:
            dataset.to_netcdf(temporary, engine="h5netcdf")
    return SweepResult(dataset, summary, planned.config)


def _chunk_sizes(study, planned: Plan, store: ChunkStore, resume, overwrite, chunk_size, devices, budget) -> list[int]:
    """Process 0 starts (or resumes) the store and fixes the chunk sizes in its manifest; the
    other processes read them after a barrier, so every process cuts the same chunks."""
    manifest = {
        "experiment": study.NAME,
        "config": configs.to_dict(planned.config),
        "axes": {axis.path: list(axis.values) for axis in planned.axes},
        "chunk_sizes": None,
    }
    if jax.process_index() == 0:
        stored = store.open(manifest, resume=resume, overwrite=overwrite)
        sizes = stored["chunk_sizes"] or [chunk_size or choose_chunk_size(study, group, devices, budget) for group in planned.groups]
        if store.out is not None:
            store.write_manifest({**stored, "chunk_sizes": sizes})
    barrier("diffdyn-sweep-manifest")
    return store.read_manifest()["chunk_sizes"] if store.out is not None else sizes
