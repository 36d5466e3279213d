"""Reporting shared by every study: summary.json and summary.md from headline rows, atomic files,
and the results page ``docs/studies/<study>.md`` that ``diffdyn report DIR`` writes from a run.

``summary.json`` = ``{experiment, preset, reference, conventions, config, rows, <the study's
values>, sweep}``: strict JSON (NaN and infinities written as null). ``summary.md`` = the
measured-vs-predicted table of the rows, the study's notes and the sweep's bookkeeping.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import xarray as xr

from diffdyn.dynamics import config as configs
from diffdyn.dynamics.storage import atomic_path
from diffdyn.dynamics.study import Summary

RESERVED = {"experiment", "preset", "reference", "conventions", "config", "rows", "notes", "sweep", "by_point"}


def extra_axes(study: ModuleType, dataset: xr.Dataset) -> list[str]:
    """The fields a scan swept on top of the study's own grid."""
    grid = configs.grid_paths(study.Config)
    return [path for path in dataset.attrs["swept"].split(",") if path and path not in grid]


def summary(study: ModuleType, dataset: xr.Dataset, config: Any, bookkeeping: dict, preset: str | None) -> dict:
    """The study's :class:`~diffdyn.dynamics.study.Summary` of ``dataset`` with the sweep's bookkeeping.

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
    return "\n".join(
        [
            "| runs | failed (masked) | programs (static groups) | compilations | chunk sizes | devices x processes | seconds |",
            "|---|---|---|---|---|---|---|",
            f"| {bookkeeping['runs']} | {reasons} | {bookkeeping['programs']} | {bookkeeping['compiles']} | "
            f"{', '.join(map(str, bookkeeping['chunk_sizes']))} | {bookkeeping['devices']} x {bookkeeping['processes']} | {bookkeeping['seconds']:.1f} |",
            "",
        ]
    )


def failure_line(bookkeeping: dict) -> str | None:
    """One terminal line about failed runs, or None if every run succeeded."""
    failed = bookkeeping.get("failed", {})
    if not failed:
        return None
    reasons = ", ".join(f"{reason}: {count}" for reason, count in failed.items())
    return (
        f"diffdyn: {sum(failed.values())} of {bookkeeping['runs']} runs failed ({reasons}); their outputs are NaN in results.nc (variables failure, diverged)"
    )


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
    """Lay out ``figure``, write it to ``path`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
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


def replace_section(path: Path, name: str, markdown: str, *, title: str) -> None:
    """Replace (or append) the section ``<!-- begin name -->...<!-- end name -->`` of the
    markdown file ``path`` (created with ``# title`` if missing), atomically: the rest of the
    file (hand-written text) is kept."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = Path(path).read_text() if Path(path).exists() else f"# {title}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(Path(path), text)


def command_line(payload: dict, manifest: dict, study: ModuleType) -> str:
    """The ``diffdyn`` command that reproduces a run: its preset, the fields that differ from
    the preset, and ``--grid`` for the fields a scan swept on top of the study's grid."""
    preset = payload.get("preset") or "quick"
    base = strict(configs.to_dict(study.PRESETS.get(preset, study.PRESETS["quick"])))
    flat = lambda tree, prefix="": {
        key: value
        for name, item in tree.items()
        for key, value in (flat(item, f"{prefix}{name}.").items() if isinstance(item, dict) else [(prefix + name, item)])
    }
    ran, preset_values = flat(payload["config"]), flat(base)
    show = lambda value: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    grid = configs.grid_paths(study.Config)
    extra = [path for path in manifest.get("axes", {}) if path not in grid]
    options = [f"--{path.replace('_', '-')} {show(value)}" for path, value in ran.items() if value != preset_values.get(path)]
    options += [f"--grid {path}={show(manifest['axes'][path])}" for path in extra]
    verb = "scan" if extra else "run"
    return " ".join([f"diffdyn {verb} {payload['experiment']}"] + ([f"--preset {preset}"] if preset != "quick" else []) + options)


def study_page(run_dir: Path, docs: Path, study: ModuleType) -> Path:
    """Write the generated section of ``docs/<study>.md`` from the run in ``run_dir``: the command
    that reproduces it, its measured-vs-predicted table and notes, its figures (copied next to
    the page), the sweep's bookkeeping. Hand-written text around the section is kept."""
    run_dir, docs = Path(run_dir), Path(docs)
    payload = json.loads((run_dir / "summary.json").read_text())
    manifest = json.loads((run_dir / "scan.json").read_text()) if (run_dir / "scan.json").exists() else {}
    figures = sorted(run_dir.glob("*.png"))
    if figures:
        (docs / payload["experiment"]).mkdir(parents=True, exist_ok=True)
    for figure in figures:
        shutil.copyfile(figure, docs / payload["experiment"] / figure.name)
    table = markdown(payload).split("\n", 2)[2]  # without the title line
    lines = [
        "## Results (generated by `diffdyn report`)",
        "",
        f"Reproduce with `{command_line(payload, manifest, study)}`; regenerate this section with `diffdyn report DIR`.",
        "",
        table.rstrip(),
        "",
    ]
    lines += [f"![{figure.stem}]({payload['experiment']}/{figure.name})" for figure in figures]
    page = docs / f"{payload['experiment']}.md"
    docs.mkdir(parents=True, exist_ok=True)
    replace_section(page, "diffdyn report", "\n".join(lines), title=f"{payload['experiment']}: {study.__doc__.strip().splitlines()[0]}")
    return page
