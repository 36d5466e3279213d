"""Run a study: sweep its grid in its precision, then write the results, summary and figures.

One code path for ``diffdyn run`` (the config's own grid) and ``diffdyn scan`` (more fields
swept on top) and for the Python API: ``experiments.run(study, config)``, or
``spectral_bias.run(config)`` (each study module binds :func:`bind`).

An output directory holds ``results.nc`` (the swept dataset), ``config.json``, ``summary.json``
(headline rows, the study's numbers and the sweep's bookkeeping), ``summary.md`` (the
measured-vs-predicted table), the study's figures as ``*.png``, and ``scan.json`` + ``chunks/``
(what ``--resume`` continues from). Every file is written atomically.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import xarray as xr

from diffdyn.dynamics import sweep
from diffdyn.experiments import report


class Result(NamedTuple):
    dataset: xr.Dataset | None  # None on processes other than 0 of a multi-process sweep
    summary: dict


def execute(
    study: ModuleType,
    config: Any,
    extra: Mapping[str, Sequence] | None = None,
    *,
    out: Path | None = None,
    preset: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    chunk_size: int | None = None,
    max_memory: int | str | None = None,
    devices: Sequence | None = None,
    progress: bool | None = None,
) -> Result:
    """Sweep ``study`` (see :func:`diffdyn.dynamics.sweep.sweep`) in ``study.PRECISION``, summarize it,
    and with ``out`` write every output file there."""
    with jax.enable_x64(study.PRECISION == "float64"):
        swept = sweep.sweep(
            study,
            config,
            extra,
            out=out,
            resume=resume,
            overwrite=overwrite,
            chunk_size=chunk_size,
            max_memory=max_memory,
            devices=devices,
            progress=progress,
        )
        if swept.dataset is None:
            return Result(None, swept.summary)
        summary = report.summary(study, swept.dataset, swept.config, swept.summary, preset)
        if out is not None:
            report.write(study, Path(out), swept.dataset, swept.config, summary, preset)
    return Result(swept.dataset, summary)


def run(study: ModuleType, config: Any = None) -> xr.Dataset:
    """The swept dataset of ``study`` at ``config`` (default: its quick preset), no files."""
    return execute(study, study.PRESETS["quick"] if config is None else config).dataset


def bind(module_name: str):
    """``run(config=quick preset) -> Dataset`` for the study module ``module_name``."""

    def run_study(config: Any = None) -> xr.Dataset:
        return run(sys.modules[module_name], config)

    run_study.__doc__ = f"Run :mod:`{module_name}` over its grid x seeds; returns the labelled dataset."
    return run_study
