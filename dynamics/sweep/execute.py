"""Execute a planned sweep: one compiled program per group, run chunk by chunk on the devices.

A program maps ``(root_seed, seeds[chunk], traced values[chunk])`` to the outputs of every run of
the chunk and a failure code per run. It is ``jax.shard_map`` over a mesh axis ``runs`` of the
local devices with ``jax.vmap`` inside: each device runs its own block of runs with no
collective communication, so an adaptive solver's loop on one device never waits for another's.
Run ``s`` uses the key ``fold_in(key(root_seed), s)`` wherever it lands (chunk, device,
process), so its numbers depend only on its field values and seed (bit for bit for the same
runs per device and call; see :mod:`diffdyn.dynamics.sweep`).

A run fails when its ``point`` reports a solver status other than ok (:mod:`diffdyn.dynamics.status`)
or when a checked output is NaN/inf; its float outputs are then set to NaN and its code kept.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from diffdyn.dynamics import config as configs
from diffdyn.dynamics import status
from diffdyn.dynamics.study import STATUS
from diffdyn.dynamics.sweep.plan import Group
from diffdyn.dynamics.sweep.store import ChunkStore
from diffdyn.dynamics.validation import ConfigError

TRACES: Counter = Counter()  # traces (hence compilations) of sweep programs, by study name


def mask_failed(outputs: Mapping[str, jax.Array], checked: Sequence[str] | None, code: jax.Array):
    """ONE run's outputs with float outputs set to NaN, and its failure code: ``code`` (the
    solver status) if it is not ok, else ``nonfinite`` if a ``checked`` output (default: every
    float output) has a NaN/inf, else ok."""
    names = outputs if checked is None else checked
    inexact = [outputs[name] for name in names if name in outputs and jnp.issubdtype(outputs[name].dtype, jnp.inexact)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(value)) for value in inexact])) if inexact else jnp.bool_(True)
    code = jnp.where(code != status.OK, code, jnp.where(finite, status.OK, status.NONFINITE)).astype(jnp.int32)
    masked = {name: jnp.where(code == status.OK, value, jnp.nan) if jnp.issubdtype(value.dtype, jnp.inexact) else value for name, value in outputs.items()}
    return masked, code


@functools.lru_cache(maxsize=64)
def program(study: ModuleType, config, devices: tuple) -> Callable:
    """The jitted program of one group (``config``: its cache key, traced fields at placeholders),
    sharded over ``devices``. Cached: a second sweep with other traced values, seeds or root seed
    reuses it."""
    checked = study.outputs(config).checked

    def one(root_seed, seed, values):
        key = jax.random.fold_in(jax.random.key(root_seed), seed)
        outputs = dict(study.point(key, configs.at_point(config, values)))
        code = outputs.pop(STATUS, jnp.int32(status.OK))
        return mask_failed(outputs, checked, code)

    def local(root_seed, seeds, values):
        TRACES[study.__name__] += 1  # runs at trace time only
        return jax.vmap(one, in_axes=(None, 0, 0))(root_seed, seeds, values)

    mesh = Mesh(np.asarray(devices), ("runs",))
    runs = PartitionSpec("runs")
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), runs, runs), out_specs=runs, check_vma=False))


def _dtype(values: np.ndarray):
    """The traced argument dtype at the sweep's precision (float64 only with x64 enabled)."""
    return jnp.asarray(values[:1]).dtype


@functools.lru_cache(maxsize=128)
def compiled(study: ModuleType, config, devices: tuple, size: int, fields: tuple[tuple[str, str], ...]):
    """:func:`program` compiled ahead of time for chunks of ``size`` runs with traced ``fields``
    (path, dtype): one compilation per group, chunk size and device set."""
    arguments = (
        jax.ShapeDtypeStruct((), jnp.uint32),
        jax.ShapeDtypeStruct((size,), jnp.int32),
        {path: jax.ShapeDtypeStruct((size,), jnp.dtype(dtype)) for path, dtype in fields},
    )
    return program(study, config, devices).lower(*arguments).compile()


def group_program(study: ModuleType, group: Group, devices: tuple, size: int):
    fields = tuple((path, str(_dtype(column))) for path, column in group.traced.items())
    return compiled(study, group.config, devices, size, fields)


def default_memory_budget(device) -> int:
    """Bytes one chunk may use per device: 70% of an accelerator's memory limit; on CPU, where
    host devices share RAM, half the machine's memory divided over the local devices."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(0.7 * stats["bytes_limit"])
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(0.5 * physical / jax.local_device_count())


def parse_bytes(text: str | int | float) -> int:
    """``"512MB"``, ``"2GiB"``, ``"1e9"`` -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*", str(text))
    if not match:
        raise ConfigError(f"max_memory: expected a size like 512MB or 2GiB, got {text!r}")
    unit = (match.group(2) or "b").lower().rstrip("b").rstrip("i")
    try:
        value = float(match.group(1)) * 1024 ** " kmgt".index(unit or " ")
    except ValueError:
        raise ConfigError(f"max_memory: expected a size like 512MB or 2GiB, got {text!r}") from None
    if value <= 0:
        raise ConfigError(f"max_memory: must be > 0, got {text!r}")
    return int(value)


def compiled_bytes(executable) -> int:
    """Bytes per device of a compiled program: arguments + outputs + XLA temporaries."""
    stats = executable.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)


def choose_chunk_size(study: ModuleType, group: Group, devices: tuple, budget: int, *, max_runs: int = 4096) -> int:
    """Runs per program call: the whole group (at most ``max_runs`` per device) if its compiled
    program fits in ``budget`` bytes per device, else the multiple of the device count that the
    measured bytes per run allow (memory is linear in the runs per device). In the common case
    this costs no compilation beyond the one that runs the sweep."""
    num_devices = len(devices)
    per_device = min(-(-len(group.seeds) // num_devices), max_runs)
    while True:
        used = compiled_bytes(group_program(study, group, devices, num_devices * per_device))
        if used <= budget:
            return num_devices * per_device
        if per_device == 1:
            raise ConfigError(f"max_memory: one run needs {used / 2**20:.1f} MiB per device, over the budget {budget / 2**20:.1f} MiB")
        per_device = max(1, min(per_device - 1, int(budget // (used / per_device))))


def chunks(group: Group, size: int) -> list[np.ndarray]:
    """Run indices of each chunk; the last is padded with its final run (outputs discarded)."""
    runs = len(group.seeds)
    return [np.minimum(np.arange(start, start + size), runs - 1) for start in range(0, runs, size)]


class Progress:
    """Runs done, runs/s and ETA on the terminal (rich); silent when stderr is not a TTY."""

    def __init__(self, total: int, enabled: bool | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        console = Console(stderr=True)
        enabled = console.is_terminal if enabled is None else enabled
        self.bar = RichProgress(
            TextColumn("runs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.bar.add_task("sweep", total=total, rate="")
        self.start, self.done = time.perf_counter(), 0

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def advance(self, runs: int) -> None:
        self.done += runs
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=runs, rate=f"{rate:.1f} runs/s")


def run_chunks(
    study: ModuleType, store: ChunkStore, groups: Sequence[Group], devices: tuple, sizes: Sequence[int], root_seed: int, progress: bool | None
) -> None:
    """Compute and store every chunk this process owns (every ``process_count``-th) that is not
    stored yet."""
    mine = lambda number: number % jax.process_count() == jax.process_index()
    todo = [
        (group, size, number, runs)
        for group, size in zip(groups, sizes)
        for number, runs in enumerate(chunks(group, size))
        if mine(number) and not store.done(group.index, number)
    ]
    valid = lambda group, size, number: min(size, len(group.seeds) - number * size)
    with Progress(sum(valid(g, s, n) for g, s, n, _ in todo), progress) as bar:
        for group, size, number, runs in todo:
            executable = group_program(study, group, devices, size)
            values = {path: jnp.asarray(column[runs], _dtype(column)) for path, column in group.traced.items()}
            outputs, failure = executable(jnp.uint32(root_seed), jnp.asarray(group.seeds[runs]), values)
            count = valid(group, size, number)
            arrays = {name: np.asarray(value)[:count] for name, value in outputs.items()}
            store.save(group.index, number, {**arrays, "failure": np.asarray(failure)[:count]})
            bar.advance(count)


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
