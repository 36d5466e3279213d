"""Reporting shared by every study: summary.json and summary.md from headline rows, atomic files.

``summary.json`` = ``{experiment, preset, reference, conventions, config, rows, <the study's
values>, sweep}``: strict JSON (NaN and infinities written as null). ``summary.md`` = the
measured-vs-predicted table of the rows, the study's notes and the sweep's bookkeeping.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import xarray as xr

from dynamics import config as configs
from dynamics.storage import atomic_path
from dynamics.study import Summary


RESERVED = {"experiment", "preset", "reference", "conventions", "config", "rows", "notes", "sweep", "by_point"}


def extra_axes(study: ModuleType, dataset: xr.Dataset) -> list[str]:
    """The fields a scan swept on top of the study's own grid."""
    grid = configs.grid_paths(study.Config)
    return [path for path in dataset.attrs["swept"].split(",") if path and path not in grid]


def summary(study: ModuleType, dataset: xr.Dataset, config: Any, bookkeeping: dict, preset: str | None) -> dict:
    """The study's :class:`~dynamics.study.Summary` of ``dataset`` with the sweep's bookkeeping.

    A scan that swept fields beyond the study's grid is summarized at every combination of
    those fields: rows say where, and the study's numbers go to ``by_point``."""
    extra = extra_axes(study, dataset)
    rows, notes, values = [], [], {}
    for combination in itertools.product(*(dataset[path.replace(".", "_")].values for path in extra)):
        point = {path: value.item() for path, value in zip(extra, combination)}
        label = ", ".join(f"{path}={value:g}" if isinstance(value, float) else f"{path}={value}" for path, value in point.items())
        selected = dataset.sel({path.replace(".", "_"): value for path, value in point.items()})
        result: Summary = study.summarize(selected, configs.replace(config, point))
        clash = RESERVED & set(result.values)
        if clash:
            raise ValueError(f"{study.NAME}: summarize() values may not use the reserved keys {sorted(clash)}")
        rows += [dataclasses.replace(row, where=", ".join(filter(None, (label, row.where)))) for row in result.rows]
        notes = list(result.notes)
        if extra:
            values.setdefault("by_point", {})[label] = dict(result.values)
        else:
            values = dict(result.values)
    return {
        "experiment": study.NAME,
        "preset": preset,
        "reference": study.REFERENCE,
        "conventions": study.CONVENTIONS,
        "config": configs.to_dict(config),
        "rows": [row.as_dict() for row in rows],
        "notes": notes,
        **values,
        "sweep": bookkeeping,
    }


def number(value: Any, digits: int = 4) -> str:
    """A table cell: ``n/a`` for None/NaN, 4 significant digits for floats."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(payload: dict) -> str:
    """summary.md of a :func:`summary` payload."""
    lines = [f"# {payload['experiment']}" + (f" (preset {payload['preset']})" if payload.get("preset") else ""), "", f"Reference: {payload['reference']}.", ""]
    lines += ["| quantity | where | measured | predicted | note |", "|---|---|---|---|---|"]
    for row in payload["rows"]:
        lines.append(f"| {row['quantity']} | {row['where']} | {number(row['measured'])} | {number(row['predicted'])} | {row['note']} |")
    lines += [""] + [f"- {note}" for note in payload["notes"]]
    lines += ["", f"Conventions: {payload['conventions']}.", "", sweep_markdown(payload["sweep"])]
    return "\n".join(lines)


def sweep_markdown(bookkeeping: dict) -> str:
    failed = bookkeeping.get("failed", {})
    reasons = ", ".join(f"{reason}: {count}" for reason, count in failed.items()) or "none"
    return "\n".join([
        "| runs | failed (masked) | programs (static groups) | compilations | chunk sizes | devices x processes | seconds |",
        "|---|---|---|---|---|---|---|",
        f"| {bookkeeping['runs']} | {reasons} | {bookkeeping['programs']} | {bookkeeping['compiles']} | "
        f"{', '.join(map(str, bookkeeping['chunk_sizes']))} | {bookkeeping['devices']} x {bookkeeping['processes']} | {bookkeeping['seconds']:.1f} |",
        "",
    ])


def failure_line(bookkeeping: dict) -> str | None:
    """One terminal line about failed runs, or None if every run succeeded."""
    failed = bookkeeping.get("failed", {})
    if not failed:
        return None
    reasons = ", ".join(f"{reason}: {count}" for reason, count in failed.items())
    return f"diffdyn: {sum(failed.values())} of {bookkeeping['runs']} runs failed ({reasons}); their outputs are NaN in results.nc (variables failure, diverged)"


def strict(value: Any) -> Any:
    """JSON-ready: arrays as lists, NaN and infinities as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(strict(payload), indent=2, allow_nan=False) + "\n")


def save_figure(path: Path, figure) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def write(study: ModuleType, out: Path, dataset: xr.Dataset, config: Any, payload: dict, preset: str | None) -> None:
    """config.json, summary.json, summary.md and the study's figures into ``out`` (results.nc is
    the sweep's)."""
    write_json(out / "config.json", {"experiment": study.NAME, "preset": preset, **configs.to_dict(config)})
    write_json(out / "summary.json", payload)
    write_text(out / "summary.md", markdown(payload))
    if hasattr(study, "figures") and not extra_axes(study, dataset):  # figures show the study's own grid
        for name, figure in study.figures(dataset, config).items():
            save_figure(out / f"{name}.png", figure)
