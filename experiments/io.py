"""Atomic outputs: every file is written to a temporary name and renamed into place, and a run
directory appears only when the run has completed (no partial output directory)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import xarray as xr

from dynamics.storage import atomic_path


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: Path, payload) -> None:
    """Strict JSON: NaN and infinities (e.g. a fit with too few modes) are written as null."""
    text = json.dumps(_strict(payload), indent=2, allow_nan=False)
    write_text(path, text + "\n")


def _strict(value):
    if hasattr(value, "tolist"):  # numpy / jax arrays and scalars
        value = value.tolist()
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_dataset(path: Path, dataset: xr.Dataset) -> None:
    """netCDF (h5netcdf engine) written atomically."""
    with atomic_path(path) as temporary:
        dataset.to_netcdf(temporary, engine="h5netcdf")


def save_figure(path: Path, figure) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=Path(path).suffix.lstrip("."), dpi=120, bbox_inches="tight")


@contextlib.contextmanager
def run_directory(out: Path) -> Iterator[Path]:
    """Yield a fresh staging directory beside ``out``; on success it replaces ``out``.

    On any exception the staging directory is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    os.chmod(staging, 0o755)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)
