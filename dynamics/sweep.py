"""Sweeps: a grid of configurations x seeds as one jit-compiled, vmapped program per shape.

A *study* (an experiment module) exposes what a sweep needs:

* ``validate(config) -> config``: host-side checks that raise :class:`ConfigError`;
* ``SCAN_TRACED``: the numeric config fields that can vary *inside* one compiled program
  (learning rate, init scale, spectrum end points, ...);
* ``scan_workload(config) -> Workload``: ONE run as a pure function
  ``run(key, values) -> {name: array}`` of a PRNG key and the traced field values (scalars),
  with the dims and coords of each output.

Every other numeric field changes shapes or compiled constants (dimension, width, number of
samples, time grids): the sweep groups the grid by those *static* values, compiles one program
per group, and vmaps over the traced values and seeds inside it.

Guarantees (tested in ``tests/dynamics/test_sweep.py``):

* Keys: the run with seed index ``s`` uses ``fold_in(key(root_seed), s)`` whatever its place in
  the grid, so a run's numbers depend only on its field values and seed, not on the grid's
  shape, the chunk size, the device count or the number of processes (common random numbers
  across grid points: runs that differ only in a hyperparameter see the same data and noise).
* Chunking: runs go through the program in chunks of a fixed size (the last one padded), chosen
  so that the compiled program's memory (XLA's ``memory_analysis``) stays under a budget.
* Sharding: each chunk is split over the local devices along a mesh axis ``runs``
  (``jax.sharding.NamedSharding``); several processes started with ``jax.distributed`` take
  every ``process_count``-th chunk and meet at a barrier, and process 0 assembles the result
  (the output directory must be on a filesystem that all processes see).
* Storage: each finished chunk is written atomically to ``OUT/chunks/``; a resumed sweep
  (``resume=True``) computes only the missing chunks with the same chunk size, so its result
  equals an uninterrupted sweep's bit for bit (on the same machine).
* Divergence: a run with any NaN/inf output (or, if the workload names them, any NaN/inf in its
  ``divergence_outputs``) is masked (its float outputs set to NaN), flagged in the ``diverged``
  variable and counted; vmapped runs are independent, so others are intact.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import re
import time
import typing
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, PRNGKeyArray

from dynamics.storage import atomic_path
from dynamics.validation import ConfigError

RunFn = Callable[[PRNGKeyArray, Mapping[str, Array]], Mapping[str, Array]]
RESERVED_DIMS = ("seed",)
TRACES: Counter = Counter()  # traces (hence compilations) of sweep programs, by study name


@dataclasses.dataclass(frozen=True)
class Workload:
    """One run of a study: ``run(key, values)`` for the traced field values (scalars).

    ``dims[name]`` names the axes of output ``name`` (one run); ``coords`` gives coordinate
    values for any of those axes (others get ``0..n-1``). ``divergence_outputs`` names the
    outputs whose NaN/inf marks the run as diverged (default ``None``: every float output);
    leave out outputs for which NaN is a legitimate value, such as an emergence time that is
    NaN when a mode never emerges.
    """

    run: RunFn
    dims: Mapping[str, tuple[str, ...]]
    coords: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    divergence_outputs: tuple[str, ...] | None = None


# ----------------------------------------------------------------------------- grids


def parse_grid_option(text: str) -> tuple[str, list[str]]:
    """``"eta=0.1,1"`` -> ``("eta", ["0.1", "1"])`` (the CLI's ``--grid`` syntax)."""
    field, separator, values = text.partition("=")
    field = field.strip().replace("-", "_")
    if not separator or not field:
        raise ConfigError(f"grid: expected FIELD=V1,V2,..., got {text!r}")
    return field, [value.strip() for value in values.split(",") if value.strip()]


def numeric_kind(config, field: str) -> type | None:
    """``int`` or ``float`` for a numeric field (a tuple of numbers sweeps as one value per
    run), ``None`` for anything else (strings, booleans, paths)."""
    hint = typing.get_type_hints(type(config))[field]
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    return hint if hint in (int, float) else None


def _parse_value(field: str, kind: type, value) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"grid: {field} takes {kind.__name__} values, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"grid: {field} values must be finite, got {value!r}")
    if kind is int:
        if number != round(number):
            raise ConfigError(f"grid: {field} takes integer values, got {value!r}")
        return int(round(number))
    return number


def with_values(config, values: Mapping[str, float | int]):
    """``config`` with swept fields replaced (a tuple field gets a one-element tuple)."""
    hints = typing.get_type_hints(type(config))
    return dataclasses.replace(
        config,
        **{
            field: (value,) if typing.get_origin(hints[field]) is tuple else value
            for field, value in values.items()
        },
    )


def require_one_value_per_run(config, fields: Sequence[str], swept: Sequence[str]) -> None:
    """For a study's ``validate_sweep`` when one run takes ONE value of each tuple field in
    ``fields`` (a grid point): each must be swept or hold a single value, else a
    :class:`ConfigError` naming the first that does not."""
    for field in fields:
        values = getattr(config, field)
        if field not in swept and len(values) > 1:
            raise ConfigError(
                f"{field}: a sweep run takes one value; sweep it with --grid {field}=... or give one value, got {values}"
            )


def resolve_grid(study: ModuleType, config, grid: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """Check a grid on the host and return its values as arrays, in the grid's order.

    Errors (:class:`ConfigError`, naming the field): unknown or non-numeric field, empty or
    duplicate values, non-numbers, and any combination that the study's ``validate`` rejects
    (ranges, orderings such as ``lam_min < lam_max``). Every combination is validated.
    """
    if not grid:
        raise ConfigError("grid: give at least one FIELD=V1,V2,... to sweep")
    names = [field.name for field in dataclasses.fields(config)]
    numeric = [name for name in names if numeric_kind(config, name) is not None]
    resolved = {}
    for field, raw in grid.items():
        if field in RESERVED_DIMS:
            raise ConfigError(f"grid: {field!r} is a reserved dimension; use --seeds N for seeds")
        if field not in names:
            raise ConfigError(f"grid: unknown field {field!r}; sweepable fields: {', '.join(numeric)}")
        kind = numeric_kind(config, field)
        if kind is None:
            raise ConfigError(f"grid: {field} is not numeric and cannot be swept; sweepable fields: {', '.join(numeric)}")
        values = [_parse_value(field, kind, value) for value in raw]
        if not values:
            raise ConfigError(f"grid: {field} needs at least one value")
        if len(set(values)) != len(values):
            raise ConfigError(f"grid: {field} has repeated values {values}")
        resolved[field] = np.asarray(values, dtype=kind)
    if hasattr(study, "validate_sweep"):
        study.validate_sweep(config, tuple(resolved))
    for combination in itertools.product(*resolved.values()):
        study.validate(with_values(config, dict(zip(resolved, (v.item() for v in combination)))))
    return resolved


class Group(NamedTuple):
    """Grid points that share the static fields: one compiled program."""

    index: int
    static: dict[str, float | int]  # the static field values
    config: object  # the study config with those values (traced fields at their defaults)
    traced: dict[str, np.ndarray]  # per run (flattened traced grid x seeds), C order
    seeds: np.ndarray  # per run seed index
    shape: tuple[int, ...]  # traced grid shape + (seeds,)


def plan_groups(study: ModuleType, config, grid: Mapping[str, np.ndarray], seeds: int) -> list[Group]:
    """Split a resolved grid into static groups, each a flat list of runs (seed fastest)."""
    traced = {field: values for field, values in grid.items() if field in study.SCAN_TRACED}
    static = {field: values for field, values in grid.items() if field not in study.SCAN_TRACED}
    points = list(itertools.product(*traced.values(), range(seeds)))
    columns = list(zip(*points))
    groups = []
    for index, combination in enumerate(itertools.product(*static.values())):
        values = {field: value.item() for field, value in zip(static, combination)}
        groups.append(
            Group(
                index=index,
                static=values,
                config=with_values(config, values),
                traced={field: np.asarray(column) for field, column in zip(traced, columns[:-1])},
                seeds=np.asarray(columns[-1], dtype=np.int32),
                shape=tuple(len(v) for v in traced.values()) + (seeds,),
            )
        )
    return groups


# ----------------------------------------------------------------------------- programs


def _traced_defaults(config, swept: Sequence[str]):
    """The config with the swept traced fields at their class defaults: the compile-cache key
    (their values are arguments of the program, so they must not distinguish cache entries)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in swept}
    return dataclasses.replace(config, **defaults)


def _mask_diverged(
    outputs: Mapping[str, Array], checked: Sequence[str] | None = None
) -> tuple[dict[str, Array], Bool[Array, ""]]:
    """One run's outputs with float outputs set to NaN if any ``checked`` output (default: any
    output) is not finite."""
    names = outputs if checked is None else checked
    inexact = [outputs[name] for name in names if jnp.issubdtype(outputs[name].dtype, jnp.inexact)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(value)) for value in inexact])) if inexact else jnp.bool_(True)
    masked = {
        name: jnp.where(finite, value, jnp.nan) if jnp.issubdtype(value.dtype, jnp.inexact) else value
        for name, value in outputs.items()
    }
    return masked, ~finite


@functools.lru_cache(maxsize=64)
def chunk_program(study: ModuleType, static_config, devices: tuple) -> Callable:
    """The jitted program for one static group: ``(root_seed, seeds[chunk], values[chunk]) ->
    (outputs[chunk, ...], diverged[chunk])``, sharded over ``devices`` along ``runs``.

    Cached on the static config (hashable, frozen) and the devices, so a second sweep with
    other traced values or seeds of the same chunk size reuses the compiled program.
    """
    workload = study.scan_workload(static_config)
    mesh = Mesh(np.asarray(devices), ("runs",))
    over_runs, replicated = NamedSharding(mesh, PartitionSpec("runs")), NamedSharding(mesh, PartitionSpec())

    def one(root_seed, seed, values):
        key = jax.random.fold_in(jax.random.key(root_seed), seed)
        return _mask_diverged(workload.run(key, values), workload.divergence_outputs)

    def batch(root_seed, seeds, values):
        TRACES[study.__name__] += 1  # runs at trace time only
        return jax.vmap(one, in_axes=(None, 0, 0))(root_seed, seeds, values)

    return jax.jit(batch, in_shardings=(replicated, over_runs, over_runs), out_shardings=over_runs)


def _chunk_arguments(group: Group, runs: np.ndarray, root_seed: int):
    values = {field: jnp.asarray(column[runs]) for field, column in group.traced.items()}
    return jnp.uint32(root_seed), jnp.asarray(group.seeds[runs]), values


@functools.lru_cache(maxsize=128)
def compiled_chunk(study: ModuleType, static_config, devices: tuple, size: int, fields: tuple[tuple[str, str], ...]):
    """:func:`chunk_program` compiled ahead of time for chunks of ``size`` runs with traced
    ``fields`` (name, dtype): one compilation per static group, chunk size and device set."""
    arguments = (
        jax.ShapeDtypeStruct((), jnp.uint32),
        jax.ShapeDtypeStruct((size,), jnp.int32),
        {name: jax.ShapeDtypeStruct((size,), jnp.dtype(dtype)) for name, dtype in fields},
    )
    return chunk_program(study, static_config, devices).lower(*arguments).compile()


def _compiled(study: ModuleType, group: Group, devices: tuple, size: int):
    fields = tuple((name, str(jnp.asarray(column).dtype)) for name, column in group.traced.items())
    return compiled_chunk(study, _traced_defaults(group.config, list(group.traced)), devices, size, fields)


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


def compiled_bytes(compiled) -> int:
    """Bytes per device of a compiled program: arguments + outputs + XLA temporaries."""
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)


def choose_chunk_size(study: ModuleType, group: Group, devices: tuple, budget: int, *, max_runs: int = 4096) -> int:
    """Runs per program call: the whole group (at most ``max_runs`` per device) if its compiled
    program fits in ``budget`` bytes per device, else the multiple of the device count that the
    measured bytes per run allow (memory is linear in the runs per device). In the common case
    this costs no compilation beyond the one that runs the sweep."""
    num_devices = len(devices)
    per_device = min(-(-len(group.seeds) // num_devices), max_runs)
    while True:
        used = compiled_bytes(_compiled(study, group, devices, num_devices * per_device))
        if used <= budget:
            return num_devices * per_device
        if per_device == 1:
            raise ConfigError(
                f"max_memory: one run needs {used / 2**20:.1f} MiB per device, over the budget {budget / 2**20:.1f} MiB"
            )
        per_device = max(1, min(per_device - 1, int(budget // (used / per_device))))


# ----------------------------------------------------------------------------- storage


class ChunkStore:
    """Finished chunks as ``OUT/chunks/g{group}-c{chunk}.npz`` (atomic writes) and the sweep's
    identity in ``OUT/scan.json``; ``None`` keeps chunks in memory only."""

    def __init__(self, out: Path | None):
        self.out = None if out is None else Path(out)
        self.memory: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def path(self, group: int, chunk: int) -> Path:
        return self.out / "chunks" / f"g{group:04d}-c{chunk:06d}.npz"

    def open(self, manifest: dict, *, resume: bool) -> dict:
        """Start or resume; returns the manifest in force (a resumed one keeps its chunk sizes)."""
        if self.out is None:
            return manifest
        if (self.out / "scan.json").exists():
            if not resume:
                raise ConfigError(f"out: {self.out} already holds a sweep; pass --resume to finish it or choose another --out")
            stored = self.read_manifest()
            identity = lambda m: {key: m[key] for key in m if key != "chunk_sizes"}
            if identity(stored) != identity(json.loads(json.dumps(manifest))):
                raise ConfigError(f"out: {self.out} holds a different sweep (experiment, config, grid or seeds differ); cannot resume")
            return stored
        (self.out / "chunks").mkdir(parents=True, exist_ok=True)
        self.write_manifest(manifest)
        return manifest

    def read_manifest(self) -> dict:
        return json.loads((self.out / "scan.json").read_text())

    def write_manifest(self, manifest: dict) -> None:
        with atomic_path(self.out / "scan.json") as temporary:
            temporary.write_text(json.dumps(manifest, indent=2) + "\n")

    def done(self, group: int, chunk: int) -> bool:
        return (group, chunk) in self.memory or (self.out is not None and self.path(group, chunk).exists())

    def save(self, group: int, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        if self.out is None:
            self.memory[(group, chunk)] = arrays
            return
        with atomic_path(self.path(group, chunk)) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)

    def load(self, group: int, chunk: int) -> dict[str, np.ndarray]:
        if self.out is None:
            return self.memory[(group, chunk)]
        with np.load(self.path(group, chunk)) as stored:
            return {name: stored[name] for name in stored.files}


# ----------------------------------------------------------------------------- progress


class Progress:
    """Runs done, runs/s and ETA on the terminal (rich); silent when stderr is not a TTY."""

    def __init__(self, total: int, enabled: bool | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        console = Console(stderr=True)
        enabled = console.is_terminal if enabled is None else enabled
        self.bar = RichProgress(
            TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not enabled,
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


# ----------------------------------------------------------------------------- the sweep


class SweepResult(NamedTuple):
    dataset: xr.Dataset | None  # None on processes other than 0
    summary: dict


def sweep(
    study: ModuleType,
    config,
    grid: Mapping[str, Sequence],
    *,
    seeds: int = 1,
    root_seed: int = 0,
    out: Path | None = None,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> SweepResult:
    """Run ``study`` on every point of ``grid`` x ``seeds`` and return one labelled dataset.

    ``grid`` maps config fields to values (numbers or strings); the dataset has one dim per
    swept field (in the grid's order), then ``seed``, then each output's own dims, plus
    ``diverged[fields..., seed]``. Fields that change shapes may make an output's dims differ
    between static groups: the dataset is their outer join (NaN where a group has no entry).
    ``chunk_size`` (runs per program call, a multiple of the local device count) defaults to
    the largest that fits ``max_memory`` bytes per device (default :func:`default_memory_budget`).
    With ``out``, chunks go to ``out/chunks/`` and the dataset to ``out/results.nc``.
    With several ``jax.distributed`` processes, call this in every process with the same
    arguments; process 0 returns (and writes) the dataset.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds: must be an integer >= 1, got {seeds!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ConfigError(f"chunk_size: must be an integer >= 1, got {chunk_size!r}")
    config = study.validate(config)
    resolved = resolve_grid(study, config, grid)
    groups = plan_groups(study, config, resolved, seeds)
    devices = tuple(jax.local_devices())
    if chunk_size is not None and chunk_size % len(devices):
        raise ConfigError(f"chunk_size: must be a multiple of the {len(devices)} local devices, got {chunk_size}")
    budget = parse_bytes(max_memory) if max_memory is not None else default_memory_budget(devices[0])
    manifest = {
        "experiment": study.NAME,
        "config": dataclasses.asdict(config),
        "grid": {field: values.tolist() for field, values in resolved.items()},
        "seeds": seeds,
        "root_seed": root_seed,
    }
    store = ChunkStore(out)
    traces_before = TRACES[study.__name__]
    started = time.perf_counter()
    with jax.enable_x64(True):
        sizes = _chunk_sizes(study, store, manifest, resume, groups, chunk_size, devices, budget)
        _run_chunks(study, store, groups, devices, sizes, root_seed, progress)
    _barrier("diffdyn-sweep-chunks")
    summary = {
        "experiment": study.NAME,
        "runs": sum(len(group.seeds) for group in groups),
        "programs": len(groups),
        "chunk_sizes": sizes,
        "devices": len(devices),
        "processes": jax.process_count(),
        "compiles": TRACES[study.__name__] - traces_before,
        "seconds": time.perf_counter() - started,
    }
    if jax.process_index() != 0:
        return SweepResult(None, summary)
    dataset = assemble(study, groups, resolved, store, sizes)
    summary["diverged"] = int(dataset["diverged"].sum())
    if out is not None:
        with atomic_path(Path(out) / "results.nc") as temporary:
            dataset.to_netcdf(temporary, engine="h5netcdf")
    return SweepResult(dataset, summary)


def _chunk_sizes(study, store, manifest, resume, groups, chunk_size, devices, budget) -> list[int]:
    """Process 0 starts (or resumes) the store and fixes the chunk sizes in its manifest; the
    other processes read them after a barrier, so every process cuts the same chunks."""
    if jax.process_count() > 1 and store.out is None:
        raise ConfigError("out: a multi-process sweep needs --out on a filesystem that all processes share")
    if jax.process_index() == 0:
        stored = store.open({**manifest, "chunk_sizes": None}, resume=resume)
        sizes = stored["chunk_sizes"] or [
            chunk_size or choose_chunk_size(study, group, devices, budget) for group in groups
        ]
        if store.out is not None:
            store.write_manifest({**stored, "chunk_sizes": sizes})
    _barrier("diffdyn-sweep-manifest")
    return store.read_manifest()["chunk_sizes"] if store.out is not None else sizes


def _chunks(group: Group, size: int) -> list[np.ndarray]:
    """Run indices of each chunk; the last is padded with its final run (outputs discarded)."""
    runs = len(group.seeds)
    starts = range(0, runs, size)
    return [np.minimum(np.arange(start, start + size), runs - 1) for start in starts]


def _run_chunks(study, store, groups, devices, sizes, root_seed, progress) -> None:
    mine = lambda chunk: chunk % jax.process_count() == jax.process_index()
    todo = [
        (group, _compiled(study, group, devices, size), size, number, runs)
        for group, size in zip(groups, sizes)
        for number, runs in enumerate(_chunks(group, size))
        if mine(number) and not store.done(group.index, number)
    ]
    total = sum(min(size, len(group.seeds) - number * size) for group, _, size, number, _ in todo)
    with Progress(total, progress) as bar:
        for group, program, size, number, runs in todo:
            outputs, diverged = program(*_chunk_arguments(group, runs, root_seed))
            valid = min(size, len(group.seeds) - number * size)
            arrays = {name: np.asarray(value)[:valid] for name, value in outputs.items()}
            store.save(group.index, number, {**arrays, "diverged": np.asarray(diverged)[:valid]})
            bar.advance(valid)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def assemble(study, groups: list[Group], grid: Mapping[str, np.ndarray], store: ChunkStore, sizes) -> xr.Dataset:
    """Read every chunk back and build the labelled dataset (fields..., seed, output dims...)."""
    parts = []
    for group, size in zip(groups, sizes):
        workload = study.scan_workload(_traced_defaults(group.config, list(group.traced)))
        chunks = [store.load(group.index, number) for number in range(len(_chunks(group, size)))]
        arrays = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}
        traced_fields = list(group.traced)
        run_dims = traced_fields + ["seed"]
        variables = {
            name: (run_dims + list(workload.dims.get(name, ())), values.reshape(group.shape + values.shape[1:]))
            for name, values in arrays.items()
        }
        coords = {field: grid[field] for field in traced_fields}
        coords["seed"] = np.arange(group.shape[-1])
        sizes_by_dim = {dim: n for dims, values in variables.values() for dim, n in zip(dims, values.shape)}
        for dim, n in sizes_by_dim.items():
            coords.setdefault(dim, np.asarray(workload.coords.get(dim, np.arange(n))))
        part = xr.Dataset(variables, coords=coords)
        parts.append(part.expand_dims({field: [value] for field, value in group.static.items()}))
    if len(parts) > 1:  # outer join: a boolean output becomes 0/1 so that absent entries can be NaN
        as_float = lambda part: part.map(lambda v: v.astype(float) if v.dtype == bool and v.name != "diverged" else v)
        dataset = xr.combine_by_coords(
            [as_float(part) for part in parts], data_vars="minimal", join="outer", combine_attrs="drop_conflicts"
        )
    else:
        dataset = parts[0]
    dataset = dataset.reindex({field: grid[field] for field in grid if field not in groups[0].traced})
    order = list(grid) + ["seed"]
    dataset = dataset.transpose(*order, ...)
    dataset.attrs.update(experiment=study.NAME, swept=",".join(grid), keys="run key = fold_in(key(root_seed), seed)")
    return dataset


def summary_markdown(summary: dict) -> str:
    """The sweep's bookkeeping as markdown: runs, divergences, programs, compiles, time."""
    lines = [
        f"# sweep of {summary['experiment']}",
        "",
        "| runs | diverged (masked) | programs (static groups) | compilations | chunk sizes | devices x processes | seconds |",
        "|---|---|---|---|---|---|---|",
        f"| {summary['runs']} | {summary.get('diverged', 'n/a')} | {summary['programs']} | {summary['compiles']} | "
        f"{', '.join(map(str, summary['chunk_sizes']))} | {summary['devices']} x {summary['processes']} | {summary['seconds']:.1f} |",
    ]
    return "\n".join(lines) + "\n"
