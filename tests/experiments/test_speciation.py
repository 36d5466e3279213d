"""The speciation study: measured vs predicted speciation times and minority delays, CLI end to end."""

import json

import numpy as np
import pytest

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
