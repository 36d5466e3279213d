"""The speciation study: measured vs predicted speciation times and minority delays, CLI end to end."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from dynamics import sweep
from dynamics.validation import ConfigError
from experiments import cli, speciation

SMALL = speciation.Config(dims=(8,), omegas=(0.5, 0.9), num_pairs=150, num_times=9, num_steps=30, bisection_steps=24)


@pytest.fixture(scope="module")
def result():
    dataset = speciation.run(SMALL)
    return dataset, speciation.summary(dataset, SMALL)


def test_speciation_time_and_minority_delay(result):
    dataset, summary = result
    # Cloning vs the exact 1-D curve: Monte Carlo (2 x 150 pairs per time) + Euler-Maruyama error.
    assert summary["max_abs_speciation_time_minus_exact_curve"] < 0.08
    assert summary["max_abs_speciation_time_minus_half_log_lambda"] < 0.12  # offset 0.022 at d = 8
    # Basins from exact scores: exact up to bisection (2^-24 of the bracket) and grid.
    assert summary["max_abs_minority_delay_error"] < 2e-4
    row = next(r for r in summary["rows"] if r["omega"] == 0.9)
    np.testing.assert_allclose(row["minority_delay_predicted"], 0.5052, atol=1e-3)
    assert dataset.same_class.dims == ("dim", "omega", "reference", "time_index")
    # Clones agree with certainty near the data and as often as chance far from it (balanced).
    balanced = dataset.same_class.sel(omega=0.5, dim=8).mean("reference").values
    assert balanced[0] > 0.85 and balanced[-1] < 0.65


def test_cli_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(speciation, "PRESETS", {"quick": SMALL, "paper": speciation.PRESETS["paper"]})
    out = tmp_path / "run"
    assert cli.main(["run", "speciation", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_abs_minority_delay_error"] < 2e-4
    assert (out / "results.nc").exists() and (out / "summary.md").exists()


@pytest.mark.parametrize(
    "arguments, field",
    [(["--omegas", "0.9,0.99"], "omegas"), (["--dims", "0"], "dims"), (["--num-times", "2"], "num_times"), (["--omegas", "0.5,1.0"], "omegas")],
)
def test_bad_input_fails_early(tmp_path, capsys, arguments, field):
    assert cli.main(["run", "speciation", "--out", str(tmp_path / "x"), *arguments]) == 2
    assert capsys.readouterr().err.startswith(f"diffdyn: error: {field}:")
    assert not (tmp_path / "x").exists()


SCAN_GRID = {"centroid_norm": [1.0, 1.5], "window": [1.0, 0.5]}
BALANCED = dataclasses.replace(SMALL, omegas=(0.5,))  # omega index 0 as in SMALL: the same keys


def test_scan_runs_equal_the_study_and_its_cloning(result):
    """``sweep``: mu~ and the window traced in one program. Seed 0 at SMALL's own point is
    run()'s balanced cloning bit for bit, with summary()'s times; every run's curves are the
    cloning of :func:`speciation.commitment` with the documented keys; t_S = 1/2 ln(1 + d mu~^2)."""
    dataset, summary = result
    scan = sweep.sweep(speciation, BALANCED, SCAN_GRID, seeds=2, progress=False)
    scanned = scan.dataset.sel(omega=0.5)
    assert scan.summary["programs"] == 1 and scan.summary["runs"] == 8 and scan.summary["diverged"] == 0
    assert scanned.same_class.dims == ("centroid_norm", "window", "seed", "reference", "time_index")
    own, study = scanned.sel(centroid_norm=1.0, window=1.0, seed=0), dataset.sel(dim=8, omega=0.5)
    for name in ("same_class", "stay_in_class", "same_class_theory", "stay_in_class_theory", "clone_time"):
        np.testing.assert_allclose(own[name], study[name], rtol=1e-12, atol=1e-15, err_msg=name)
    row = next(row for row in summary["rows"] if row["omega"] == 0.5)
    np.testing.assert_allclose(own.commitment_time, [row[f"commitment_time_{c}_measured"] for c in speciation.CLASSES], rtol=1e-12)
    np.testing.assert_allclose(own.commitment_time_exact_curve, [row[f"commitment_time_{c}_exact_curve"] for c in speciation.CLASSES], rtol=1e-9)
    np.testing.assert_allclose(own.speciation_time, row["speciation_time_measured"], rtol=1e-12)
    np.testing.assert_allclose(own.speciation_time_exact_curve, row["speciation_time_exact_curve"], rtol=1e-12)
    for norm in SCAN_GRID["centroid_norm"]:
        for window in SCAN_GRID["window"]:
            point = dataclasses.replace(BALANCED, centroid_norm=norm, window=window)
            times = speciation.clone_times(point, 8)
            for seed in range(2):
                swept = scanned.sel(centroid_norm=norm, window=window, seed=seed)
                np.testing.assert_allclose(swept.speciation_time_theory, 0.5 * np.log(1 + 8 * norm**2), rtol=1e-14)
                key = jax.random.fold_in(jax.random.fold_in(jax.random.key(SMALL.seed), seed), 0)
                _, same, stay, *_ = speciation.commitment(point, 8, 0.5, norm, key, times)
                np.testing.assert_allclose(swept.same_class, same, rtol=1e-12)
                np.testing.assert_allclose(swept.stay_in_class, stay, rtol=1e-12)


@pytest.mark.parametrize(
    "grid, overrides, field",
    [
        ({"omegas": ["0.5", "0.9"]}, {}, "omegas"),  # every run holds all omegas
        ({"window": ["0.5"]}, {"dims": (8, 32)}, "dims"),  # one d per run
        ({"centroid_norm": ["0", "1"]}, {}, "centroid_norm"),  # out of range
    ],
)
def test_bad_scan_grids_fail_before_any_compile(grid, overrides, field):
    before = sweep.TRACES[speciation.__name__]
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        sweep.sweep(speciation, dataclasses.replace(SMALL, **overrides), grid, progress=False)
    assert sweep.TRACES[speciation.__name__] == before
