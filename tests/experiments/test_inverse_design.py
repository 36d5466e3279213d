"""Inverse design through the differentiable simulator: objectives fall, re-simulation agrees,
scans equal runs, bad input fails early."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics.config import LogGrid
from diffdyn.experiments import cli, inverse_design

# two seeds (the linear tasks do not depend on the key): every program runs a batch of runs
SMALL = inverse_design.Config(task=("spectrum", "flatten"), num_modes=4, optimizer_steps=250, sigma=LogGrid(0.002, 80.0, 40), quadrature_nodes=96, seeds=2)
SPECTRUM = dataclasses.replace(SMALL, task=("spectrum",))
REWEIGHTING = inverse_design.Config(task=("class-reweighting",), optimizer_steps=100)


@pytest.fixture(scope="module")
def small_run():
    dataset = inverse_design.run(SMALL)
    return dataset, inverse_design.summarize(dataset, SMALL).values


def test_each_task_has_its_own_outputs(small_run):
    dataset, _ = small_run
    assert list(dataset.task.values) == ["spectrum", "flatten"]
    assert dataset.objective.dims == ("task", "seed", "iteration") and dataset.objective.sizes["iteration"] == 251
    assert dataset.spectrum_time_simulation.dims == ("task", "seed", "stage", "mode")
    assert np.isnan(dataset.spectrum.sel(task="flatten")).all() and np.isnan(dataset.learning_rate_profile.sel(task="spectrum")).all()
    assert not dataset.diverged.any()


def test_designed_spectrum_hits_the_target_times(small_run):
    _, summary = small_run
    row = summary["spectrum"]
    assert row["objective_optimized"] < 0.05 * row["objective_initial"]
    # Re-simulated hard emergence times within 25% of the targets (initially off by > 2x).
    assert row["max_abs_log_time_error_simulation"]["initial"] > np.log(2)
    assert row["max_abs_log_time_error_simulation"]["optimized"] < np.log(1.25)


def test_learning_rate_profile_flattens_the_law(small_run):
    _, summary = small_run
    row = summary["flatten"]
    assert row["spread_simulation"]["initial"] > 10
    assert row["spread_simulation"]["optimized"] <= 2.0
    # Theory (soft times, quadrature) and re-simulation (hard times) agree on the spread.
    assert abs(np.log(row["spread_theory"]["optimized"] / row["spread_simulation"]["optimized"])) < np.log(1.3)


def test_constant_profile_quadrature_equals_closed_form():
    lam = inverse_design.initial_spectrum(SMALL)
    closed = inverse_design.theory_variance(SMALL, lam)
    quadrature = inverse_design.theory_variance(SMALL, lam, jnp.zeros(SMALL.num_profile_nodes))
    np.testing.assert_allclose(quadrature, closed, rtol=1e-6)


def test_scan_equals_runs(small_run):
    """``diffdyn scan inverse-design --task spectrum --grid q=0.1,0.3``: one program; each slice
    equals the run at that Q (the one at 0.1 is ``small_run``'s), and both designs converge."""
    scanned = assert_scan_equals_runs(inverse_design, SPECTRUM, "q", [0.1, 0.3])
    np.testing.assert_allclose(scanned.spectrum.sel(q=0.1), small_run[0].spectrum.sel(task=["spectrum"]), rtol=1e-12)
    final = scanned.objective.isel(iteration=-1)
    assert float(final.max()) < 1e-3 and not np.allclose(scanned.spectrum.sel(q=0.3), scanned.spectrum.sel(q=0.1))


def test_cli_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(inverse_design.PRESETS, "quick", SMALL)
    out = tmp_path / "run"
    assert cli.main(["run", "inverse-design", "--out", str(out)]) == 0  # SMALL again: compiled programs reused
    summary = json.loads((out / "summary.json").read_text())
    assert summary["spectrum"]["objective_optimized"] < 1e-3 and summary["flatten"]["spread_simulation"]["optimized"] <= 2.0
    for name in ("results.nc", "summary.md", "inverse_spectrum.png", "inverse_flatten.png"):
        assert (out / name).is_file(), name
    assert "| spread max/min tau*, re-simulated | task=flatten |" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--target-times", "0.1,0.2"], "target_times"),  # needs num_modes = 6
        (["--target-times", "0.1,0.2,0.3,0.4,0.5,1e4"], "target_times"),  # beyond tau.high
        (["--lam-min", "20"], "lam_min"),
        (["--task", "spectrum,design"], "task"),
        (["--q", "1.5"], "q"),
        (["--optimizer-lr", "0"], "optimizer_lr"),
        (["--reweighting.imbalance-ratio", "0.001"], "reweighting.imbalance_ratio"),
        (["--reweighting.problem.num-features", "0"], "reweighting.problem.num_features"),
    ],
)
def test_bad_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "inverse-design", arguments, field)


@pytest.mark.slow  # ~1 min: 100 Adam steps through eigh of the 128 x 128 feature covariance
def test_class_reweighting_equalizes_generalization_times():
    """(c): a low-variance minority (sigma_1^2/sigma_0^2 = 0.25, n_1/n_0 = 1/8) generalizes ~2.5x
    later than the majority; optimized class loss weights bring the ratio within 25% of 1 on the
    test points optimized on and within 30% on fresh ones."""
    row = inverse_design.summarize(inverse_design.run(REWEIGHTING), REWEIGHTING).values["class-reweighting"]
    assert row["generalization_time_ratio_fresh_test"]["initial"] > 2.0
    assert abs(np.log(row["generalization_time_ratio_fresh_test"]["optimized"])) < np.log(1.3)
    assert abs(np.log(row["generalization_time_ratio_1_over_0"]["optimized"])) < np.log(1.25)
    assert row["objective_optimized"] < 0.1 * row["objective_initial"]
    assert row["class_weight_1"] < 1.0  # the minority's loss is weighted down
