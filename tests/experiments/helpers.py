"""Checks every study's tests share: a scan equals the runs it sweeps, bad input fails early."""

from __future__ import annotations

import numpy as np
import xarray as xr

from diffdyn.dynamics import config as configs
from diffdyn.experiments import cli, runner


def assert_scan_equals_runs(study, config, path: str, values: list, *, rtol: float = 1e-12, atol: float = 0.0) -> xr.Dataset:
    """``diffdyn scan`` of ``path`` over ``values`` (one program for a traced field) equals
    ``diffdyn run`` at each value, output by output; returns the scanned dataset."""
    scanned = runner.execute(study, config, {path: values}, progress=False).dataset
    dim = path.replace(".", "_")
    grid = configs.field_info(type(config), path).grid
    for value in values:
        alone = runner.execute(study, configs.replace(config, {path: (value,) if grid else value}), progress=False).dataset
        swept = scanned.sel({dim: value}, drop=True)
        assert set(swept.data_vars) == set(alone.data_vars)
        for name in alone.data_vars:
            np.testing.assert_allclose(
                swept[name].transpose(*alone[name].dims).values, alone[name].values, rtol=rtol, atol=atol, err_msg=f"{name} at {path}={value}"
            )
    return scanned


def assert_fails_early(capsys, tmp_path, experiment: str, arguments: list[str], field: str, command: str = "run") -> str:
    """The CLI exits with 2 and ONE line naming ``field`` before creating anything."""
    out = tmp_path / "never"
    assert cli.main([command, experiment, "--out", str(out), *arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"diffdyn: error: {field}"), lines
    assert not out.exists()
    return lines[-1]
