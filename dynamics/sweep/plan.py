"""Plan a sweep on the host: resolve the grid, check every grid point, group the runs by shape.

The axes of a sweep are the study config's grid fields (its tuples) plus any field swept on top
(``diffdyn scan --grid FIELD=V1,V2``), in that order. Axes over *traced* fields vary inside one
compiled program; axes over *static* fields (shapes, family names) split the grid into groups,
one program each. Inside a group the runs are the product of its traced axes and the seeds,
seed fastest. Nothing here traces or compiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from diffdyn.dynamics import config as configs
from diffdyn.dynamics.validation import ConfigError

RESERVED = ("seed", "seeds")


class Axis(NamedTuple):
    """One swept field: dotted ``path``, its values (in grid order) and whether it is traced."""

    path: str
    values: tuple
    traced: bool

    @property
    def name(self) -> str:
        """The dataset dimension: the dotted path with ``_`` for ``.``."""
        return self.path.replace(".", "_")


class Group(NamedTuple):
    """The runs that share every static value: one compiled program.

    ``config`` is the group's point config with every traced field and the seed count at
    placeholders (the cache key of its program); ``traced[path][run]`` the traced values of each run (every traced field,
    swept or not); ``seeds[run]`` the seed index; ``shape`` the traced axes' sizes + (seeds,).
    """

    index: int
    static: dict[str, Any]
    config: Any
    traced: dict[str, np.ndarray]
    seeds: np.ndarray
    shape: tuple[int, ...]


class Plan(NamedTuple):
    config: Any
    axes: tuple[Axis, ...]
    groups: tuple[Group, ...]

    @property
    def runs(self) -> int:
        return sum(len(group.seeds) for group in self.groups)


def parse_grid_option(text: str) -> tuple[str, list[str]]:
    """``"eta=0.1,1"`` -> ``("eta", ["0.1", "1"])`` (the CLI's ``--grid`` syntax)."""
    path, separator, values = text.partition("=")
    path = path.strip().replace("-", "_")
    if not separator or not path:
        raise ConfigError(f"grid: expected FIELD=V1,V2,..., got {text!r}")
    return path, [value.strip() for value in values.split(",") if value.strip()]


def resolve_axes(config: Any, extra: Mapping[str, Sequence]) -> tuple[Any, tuple[Axis, ...]]:
    """The config with ``extra`` values set on its grid fields, and every axis of the sweep.

    ``extra`` maps fields to values (numbers or text, as the CLI gives them): a grid field's
    values replace its tuple; any other field becomes a new axis after the grid fields."""
    infos = {info.path: info for info in configs.fields(type(config))}
    grid_values: dict[str, tuple] = {}
    new_axes: dict[str, tuple] = {}
    for path, raw in extra.items():
        if path in RESERVED:
            raise ConfigError(f"{path}: not a grid axis; set the number of runs per point with --seeds N")
        if path not in infos:
            raise ConfigError(f"{path}: unknown field; allowed: {', '.join(infos)}")
        info = infos[path]
        if info.is_tuple and not info.grid:
            raise ConfigError(f"{path}: a tuple read as a whole by every run; it cannot be swept")
        values = tuple(configs.parse_item(info, value) for value in raw)
        if not values:
            raise ConfigError(f"{path}: --grid needs at least one value")
        if len(set(values)) != len(values):
            raise ConfigError(f"{path}: repeated values {list(values)}")
        (grid_values if info.grid else new_axes)[path] = values
    config = configs.replace(config, grid_values)
    axes = [Axis(info.path, configs.get(config, info.path), info.traced) for info in infos.values() if info.grid]
    axes += [Axis(path, values, infos[path].traced) for path, values in new_axes.items()]
    return config, tuple(axes)


def check_points(study: ModuleType, config: Any, axes: Sequence[Axis]) -> None:
    """Every grid point through the field metadata and the study's ``validate`` (host only)."""
    configs.check_fields(config)
    if hasattr(study, "validate_sweep"):
        study.validate_sweep(config, tuple(axis.path for axis in axes if not configs.field_info(type(config), axis.path).grid))
    for combination in itertools.product(*(axis.values for axis in axes)):
        point = configs.at_point(config, {axis.path: value for axis, value in zip(axes, combination)})
        configs.check_fields(point, point=True)
        study.validate(point)


def _placeholder(info: configs.FieldInfo) -> Any:
    """A fixed stand-in for a traced field in a program's cache key (its value is an argument)."""
    default = info.default
    return (default[0] if default else 0.0) if info.is_tuple else default


def plan(study: ModuleType, config: Any, extra: Mapping[str, Sequence] | None = None) -> Plan:
    """Resolve, check and group a sweep of ``study`` (see the module docstring)."""
    if not isinstance(config, study.Config):
        raise ConfigError(f"config: expected {study.__name__}.Config, got {type(config).__name__}")
    config, axes = resolve_axes(config, extra or {})
    check_points(study, config, axes)
    traced_infos = [info for info in configs.fields(type(config)) if info.traced]
    traced_axes = [axis for axis in axes if axis.traced]
    static_axes = [axis for axis in axes if not axis.traced]
    runs = list(itertools.product(*(axis.values for axis in traced_axes), range(config.seeds)))
    columns = list(zip(*runs))
    swept = {axis.path: np.asarray(column) for axis, column in zip(traced_axes, columns[:-1])}
    groups = []
    for index, combination in enumerate(itertools.product(*(axis.values for axis in static_axes))):
        static = {axis.path: value for axis, value in zip(static_axes, combination)}
        point = configs.at_point(config, static)
        traced = {info.path: swept[info.path] if info.path in swept else np.full(len(runs), configs.get(point, info.path)) for info in traced_infos}
        # the program's cache key: traced values and the seed count are arguments (the root seed
        # stays: a study may draw host-side data that all seeds share from it)
        key = configs.at_point(point, {"seeds": 1, **{info.path: _placeholder(info) for info in traced_infos}})
        shape = tuple(len(axis.values) for axis in traced_axes) + (config.seeds,)
        groups.append(Group(index, static, key, traced, np.asarray(columns[-1], np.int32), shape))
    return Plan(config, tuple(axes), tuple(groups))
