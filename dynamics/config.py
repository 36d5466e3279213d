"""Study configurations: frozen dataclasses whose field metadata is the single source of truth.

Every field of a study's ``Config`` is declared with :func:`setting`, which records

* ``doc``: a one-line meaning (the CLI's ``--help`` and the docs print it);
* ``traced``: whether the value may vary *inside* one compiled program (a learning rate, an
  init scale, a noise level) or is *static* (it changes shapes or compiled constants: a
  dimension, a width, a number of steps, a family name). Static is the default;
* ``grid``: whether the field is a tuple of values that ``diffdyn run`` sweeps (one grid axis);
* the allowed values: ``choices`` for strings, ``low`` / ``high`` (``low_open``) for numbers.

:func:`check_fields` checks a config against that metadata (elementwise for tuples), so a study's
own ``validate`` holds only the checks that relate several fields. Configs may nest: a field
whose type is itself a frozen dataclass (e.g. :class:`LogGrid`) is addressed with dotted paths
(``tau.num``) by :func:`replace`, the CLI and the sweep.

Inside a study's ``point`` function every grid field holds ONE value (see :func:`at_point`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from diffdyn.dynamics.validation import ConfigError, require_choice, require_positive_int, require_range

_UNSET = object()


def setting(
    default: Any,
    doc: str,
    *,
    traced: bool = False,
    grid: bool = False,
    choices: tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> Any:
    """A dataclass field with the metadata described in the module docstring."""
    metadata = {"doc": doc, "traced": traced, "grid": grid, "choices": choices, "low": low, "high": high, "low_open": low_open}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class StudyConfig:
    """Fields every study has: how many independent runs per grid point, and the root seed.

    Run ``s`` of every grid point uses the key ``fold_in(key(seed), s)``: runs that differ only in
    a hyperparameter see the same data and noise (common random numbers), and any single run of a
    grid can be rerun alone with the same numbers.
    """

    seeds: int = setting(1, "independent runs (seeds) per grid point", low=1)
    seed: int = setting(0, "root random seed: run s uses the key fold_in(key(seed), s)", low=0)


@dataclass(frozen=True)
class LogGrid:
    """``num`` log-spaced values in ``[low, high]`` (a time or noise grid)."""

    low: float = setting(1e-3, "smallest value", low=0.0, low_open=True)
    high: float = setting(1e2, "largest value", low=0.0, low_open=True)
    num: int = setting(26, "number of log-spaced values", low=2)

    def values(self) -> np.ndarray:
        return np.geomspace(self.low, self.high, self.num)

    def check(self, path: str) -> None:
        """``low < high`` (the field metadata checks each value)."""
        if not self.low < self.high:
            raise ConfigError(f"{path}.low: must be < {path}.high ({self.high}); got {self.low}")


# ----------------------------------------------------------------------------- fields


class FieldInfo(NamedTuple):
    """One (possibly nested) field: dotted ``path``, type hint, default, metadata."""

    path: str
    kind: Any
    default: Any
    doc: str
    traced: bool
    grid: bool
    choices: tuple[str, ...] | None
    low: float | None
    high: float | None
    low_open: bool

    @property
    def item(self) -> Any:
        """The type of one value: ``float`` for ``tuple[float, ...]``."""
        return typing.get_args(self.kind)[0] if typing.get_origin(self.kind) is tuple else self.kind

    @property
    def is_tuple(self) -> bool:
        return typing.get_origin(self.kind) is tuple

    @property
    def numeric(self) -> bool:
        return self.item in (int, float)


def is_config(value_or_type: Any) -> bool:
    return dataclasses.is_dataclass(value_or_type)


def fields(config_type: type, prefix: str = "", defaults: Any = None, context: str = "") -> Iterator[FieldInfo]:
    """Every leaf field of ``config_type`` (nested configs flattened to dotted paths, their docs
    prefixed with the parent field's doc, their defaults taken from the parent's default), in
    declaration order."""
    hints = typing.get_type_hints(config_type)
    for item in dataclasses.fields(config_type):
        kind, path, meta = hints[item.name], prefix + item.name, item.metadata
        if "doc" not in meta:
            raise TypeError(f"{config_type.__name__}.{item.name}: declare it with dynamics.config.setting(default, doc, ...)")
        default = item.default if defaults is None else getattr(defaults, item.name)
        doc = f"{context}: {meta['doc']}" if context else meta["doc"]
        if is_config(kind):
            yield from fields(kind, path + ".", default, meta["doc"])
            continue
        yield FieldInfo(path, kind, default, doc, meta["traced"], meta["grid"], meta["choices"], meta["low"], meta["high"], meta["low_open"])


def field_info(config_type: type, path: str) -> FieldInfo:
    """The field at dotted ``path``; :class:`ConfigError` listing the known fields otherwise."""
    known = {info.path: info for info in fields(config_type)}
    if path not in known:
        raise ConfigError(f"{path}: unknown field; allowed: {', '.join(known)}")
    return known[path]


def get(config: Any, path: str) -> Any:
    for name in path.split("."):
        config = getattr(config, name)
    return config


def replace(config: Any, values: Mapping[str, Any]) -> Any:
    """``config`` with the dotted ``path -> value`` entries of ``values`` replaced (no checks)."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    for head, inner in nested.items():
        top[head] = replace(getattr(config, head), inner)
    return dataclasses.replace(config, **top)


def grid_paths(config_type: type) -> tuple[str, ...]:
    """The grid fields: tuples that ``diffdyn run`` sweeps, one axis each."""
    return tuple(info.path for info in fields(config_type) if info.grid)


def traced_paths(config_type: type) -> tuple[str, ...]:
    """The fields that vary inside one compiled program."""
    return tuple(info.path for info in fields(config_type) if info.traced)


def at_point(config: Any, values: Mapping[str, Any]) -> Any:
    """The config of ONE grid point: every field in ``values`` set to that single value (grid
    fields hold a scalar instead of their tuple; the value may be a traced array)."""
    return replace(config, values)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for config.json and the dataset's attrs)."""
    return dataclasses.asdict(config)


def from_dict(config_type: type, payload: Mapping[str, Any]) -> Any:
    """Inverse of :func:`to_dict` (lists become tuples, nested configs are rebuilt)."""
    hints = typing.get_type_hints(config_type)
    values = {}
    for item in dataclasses.fields(config_type):
        if item.name not in payload:
            continue
        kind, value = hints[item.name], payload[item.name]
        if is_config(kind):
            value = from_dict(kind, value)
        elif typing.get_origin(kind) is tuple:
            value = tuple(value)
        values[item.name] = value
    return config_type(**values)


# ----------------------------------------------------------------------------- parsing and checks


def parse(info: FieldInfo, text: str) -> Any:
    """A command-line value for ``info``: ``"0.1,0.5"`` for a tuple, ``true``/``false`` for a bool."""
    if info.is_tuple:
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts and info.grid:
            raise ConfigError(f"{info.path}: needs at least one value")
        return tuple(parse_item(info, part) for part in parts)
    return parse_item(info, text)


def parse_item(info: FieldInfo, text: Any) -> Any:
    kind = info.item
    if kind is bool:
        if isinstance(text, bool):
            return text
        lowered = str(text).lower()
        if lowered not in ("true", "false"):
            raise ConfigError(f"{info.path}: expected true or false, got {text!r}")
        return lowered == "true"
    if kind in (int, float):
        try:
            number = float(text)
        except (TypeError, ValueError):
            raise ConfigError(f"{info.path}: expected {kind.__name__}, got {text!r}") from None
        if kind is int:
            if not math.isfinite(number) or number != round(number):
                raise ConfigError(f"{info.path}: expected an integer, got {text!r}")
            return int(round(number))
        return number
    return str(text)


def allowed(info: FieldInfo) -> str:
    """The allowed values of a field, in words (for errors and ``--help``)."""
    if info.choices:
        return "one of " + ", ".join(info.choices)
    if info.item is bool:
        return "true or false"
    if info.low is None and info.high is None:
        return "any " + ("integer" if info.item is int else "number" if info.item is float else "text")
    low = "-inf" if info.low is None else f"{info.low:g}"
    high = "inf" if info.high is None else f"{info.high:g}"
    return f"{'(' if info.low_open else '['}{low}, {high}]" + (" (integer)" if info.item is int else "")


def check_value(info: FieldInfo, value: Any) -> None:
    """Check ONE value (a tuple's element, or a scalar field) against ``info``'s metadata."""
    if info.choices is not None:
        require_choice(info.path, value, info.choices)
    elif info.item is int:
        require_positive_int(info.path, value, minimum=-(2**62) if info.low is None else math.ceil(info.low))
        if info.high is not None and value > info.high:
            raise ConfigError(f"{info.path}: allowed {allowed(info)}; got {value}")
    elif info.item is float:
        low = -math.inf if info.low is None else info.low
        high = math.inf if info.high is None else info.high
        require_range(info.path, value, low=low, high=high, low_open=info.low_open)
    elif info.item is bool and not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{info.path}: expected true or false, got {value!r}")


def check_fields(config: Any, *, point: bool = False) -> None:
    """Check every field of ``config`` against its metadata; raise :class:`ConfigError` naming
    the first bad one. With ``point=True`` grid fields hold one value (see :func:`at_point`)."""
    for info in fields(type(config)):
        value = get(config, info.path)
        if info.is_tuple and not (point and info.grid):
            if not isinstance(value, tuple):
                raise ConfigError(f"{info.path}: expected a tuple of values, got {value!r}")
            if info.grid and not value:
                raise ConfigError(f"{info.path}: needs at least one value")
            if info.grid and len(set(value)) != len(value):
                raise ConfigError(f"{info.path}: repeated values {value}")
            for item in value:
                check_value(info, item)
        else:
            check_value(info, value)
    _check_nested(config, "")


def _check_nested(config: Any, prefix: str) -> None:
    """Cross-field checks of nested configs: their ``check(path)`` method, if they have one."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if is_config(value):
            _check_nested(value, prefix + item.name + ".")
            if hasattr(value, "check"):
                value.check(prefix + item.name)
