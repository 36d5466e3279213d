"""The study contract: what a study module provides so that ONE engine sweeps, stores and reports it.

A study is a module (registered in :mod:`diffdyn.experiments`) that holds its science only:

* ``NAME``, ``REFERENCE`` (paper and equations), ``CONVENTIONS`` (time unit, loss scale) and
  ``PRECISION`` (``"float64"`` or ``"float32"``: the sweep runs the study in it; library
  functions never switch precision themselves);
* ``Config``: a frozen :class:`diffdyn.dynamics.config.StudyConfig` subclass whose fields are declared
  with :func:`diffdyn.dynamics.config.setting` (static or traced, grid or not, allowed values, a doc);
  ``PRESETS``: named configs, ``quick`` first;
* ``validate(config)``: the checks that relate several fields of ONE grid point (field-by-field
  checks come from the metadata); raises :class:`diffdyn.dynamics.validation.ConfigError`;
* ``point(key, config) -> {name: array}``: the pure function of ONE grid point and ONE seed: the
  simulation, the theory beside it and every in-graph measure. Grid fields hold one value;
  traced fields may be tracers. It may return :data:`STATUS` (a :mod:`diffdyn.dynamics.status` code of
  its solves);
* ``outputs(config) -> Outputs``: the dims and coords of every output of ``point`` for a static
  config, and which outputs' NaN/inf marks a failed run;
* ``summarize(dataset, config) -> Summary``: headline rows (measured vs predicted) and the
  numbers for ``summary.json``, from the swept dataset;
* optionally ``figures(dataset, config) -> {name: Figure}`` and
  ``validate_sweep(config, swept_paths)`` (checks on which fields a scan may sweep).

``diffdyn run X`` sweeps the config's grid fields x ``seeds``; ``diffdyn scan X --grid f=...``
sweeps more fields through the same engine (:mod:`diffdyn.dynamics.sweep`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Array, PRNGKeyArray

STATUS = "status"  # optional output of point(): the worst dynamics.status code of its solves
PRECISIONS = ("float64", "float32")


@dataclass(frozen=True)
class Outputs:
    """The output schema of ``point`` for one static config.

    ``dims[name]``: the axes of output ``name`` for ONE run; ``coords``: values for any of those
    axes (others get ``0..n-1``); ``checked``: the outputs whose NaN/inf marks the run as failed
    (``None``: every float output). Leave out outputs for which NaN is a legitimate value, such
    as an emergence time of a mode that never emerges. ``long_names``: a description per output.
    """

    dims: Mapping[str, tuple[str, ...]]
    coords: Mapping[str, Any] = field(default_factory=dict)
    checked: tuple[str, ...] | None = None
    long_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One headline number: a measured quantity, at a place in the grid, beside its prediction."""

    quantity: str
    measured: float | str | None
    predicted: float | str | None = None
    where: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Summary:
    """What ``summarize`` returns: ``rows`` (the measured-vs-predicted table of summary.md),
    ``values`` (study-specific numbers, merged into summary.json) and ``notes`` (definitions)."""

    rows: list[Row]
    values: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@runtime_checkable
class Study(Protocol):
    """A study module (see the module docstring); modules satisfy it structurally."""

    NAME: str
    REFERENCE: str
    CONVENTIONS: str
    PRECISION: str
    Config: type
    PRESETS: Mapping[str, Any]

    def validate(self, config: Any) -> None: ...

    def point(self, key: PRNGKeyArray, config: Any) -> Mapping[str, Array]: ...

    def outputs(self, config: Any) -> Outputs: ...

    def summarize(self, dataset: Any, config: Any) -> Summary: ...


def check_study(module: Any) -> None:
    """Raise ``TypeError`` naming what a study module lacks (used by the registry's tests)."""
    missing = [
        name
        for name in ("NAME", "REFERENCE", "CONVENTIONS", "PRECISION", "Config", "PRESETS", "validate", "point", "outputs", "summarize")
        if not hasattr(module, name)
    ]
    if missing:
        raise TypeError(f"{module.__name__}: a study needs {', '.join(missing)}")
    if module.PRECISION not in PRECISIONS:
        raise TypeError(f"{module.__name__}.PRECISION: one of {PRECISIONS}, got {module.PRECISION!r}")
    if next(iter(module.PRESETS)) != "quick":
        raise TypeError(f"{module.__name__}.PRESETS: 'quick' must come first (the default)")
