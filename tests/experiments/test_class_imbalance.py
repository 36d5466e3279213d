"""The class-imbalance study (reconstruction of [N] on [BUBM], docs/theory.md section 8): per-class
curves, the order of learning, the summary, scans and bad input."""

import json

import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics.config import LogGrid
from diffdyn.experiments import class_imbalance, cli, runner
from diffdyn.models.classes import ClassProblem

# the quick preset's model (d = 16, p = 128, n_0 = 32, t = 0.5) at balance, one seed
SMALL = class_imbalance.Config(variance_ratio=(1.0, 4.0), centroid_norm=(1.0,), imbalance_ratio=(1.0,), problem=ClassProblem(tau=LogGrid(1e-3, 1e6, 49)))


@pytest.fixture(scope="module")
def small_run():
    return class_imbalance.run(SMALL)


def test_per_class_curves(small_run):
    dataset = small_run
    assert dataset.test_loss.dims == ("variance_ratio", "centroid_norm", "imbalance_ratio", "seed", "class_", "tau")
    assert dataset["count"].dtype == np.int32 and (dataset["count"] == 32).all()
    # A(0) = 0 gives L = 1 for every class; tau = 1e-3 is ~1e-3 of the fastest time scale.
    np.testing.assert_allclose(dataset.train_loss.isel(tau=0), 1.0, atol=5e-3)
    # Gradient flow decreases the training objective: the count-weighted sum of class train losses.
    shares = dataset["count"] / dataset["count"].sum("class_")
    assert float((dataset.train_loss * shares).sum("class_").diff("tau").max()) < 1e-12
    # Memorization: at the end each class's train loss is below its test loss.
    assert float((dataset.test_loss - dataset.train_loss).isel(tau=-1).min()) > 0


def test_higher_variance_class_is_learned_first(small_run):
    """Identical classes generalize together (finite-sample noise only); the 4x-variance class
    generalizes in < 0.7 of class 0's time ([N]'s primary claim); the summary says so."""
    times = small_run.generalization_time.isel(seed=0, centroid_norm=0, imbalance_ratio=0)
    equal = times.sel(variance_ratio=1.0)
    assert abs(np.log(float(equal.sel(class_="class_1") / equal.sel(class_="class_0")))) < np.log(1.2)
    high = times.sel(variance_ratio=4.0)
    assert float(high.sel(class_="class_1")) < 0.7 * float(high.sel(class_="class_0"))
    assert int(small_run.learned_first.sel(variance_ratio=4.0).item()) == 1
    summary = class_imbalance.summarize(small_run, SMALL)
    assert summary.values["higher_variance_learned_first_at_balance"] is True
    learned = [row for row in summary.rows if row.quantity == "class learned first" and row.where.startswith("sigma_1^2/sigma_0^2=4")]
    assert [(row.measured, row.predicted) for row in learned] == [("class_1", "class_1")]
    assert "order reverses at n_1/n_0 = none in grid" in learned[0].note  # one ratio: nothing can reverse


def test_reversal_ratio():
    ratios = np.array([0.1, 1.0, 10.0])
    assert class_imbalance.reversal_ratio(np.array([0, 0, 0]), ratios) is None
    np.testing.assert_allclose(class_imbalance.reversal_ratio(np.array([1, 0, 0]), ratios), np.sqrt(0.1))


def test_cli_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(class_imbalance.PRESETS, "quick", SMALL)
    out = tmp_path / "run"
    assert cli.main(["run", "class-imbalance", "--out", str(out)]) == 0  # SMALL again: compiled programs reused
    summary = json.loads((out / "summary.json").read_text())
    assert summary["higher_variance_learned_first_at_balance"] is True and summary["balance"] == 1.0
    assert summary["sweep"]["runs"] == 2 and summary["sweep"]["failed"] == {}
    for name in ("results.nc", "summary.md", "phase_map.png", "class_curves.png"):
        assert (out / name).is_file(), name
    assert "| class learned first | sigma_1^2/sigma_0^2=4, mu~_1=1, n_1/n_0=1 | class_1 | class_1 |" in (out / "summary.md").read_text()


def test_scan_equals_runs(small_run):
    """``diffdyn scan --grid centroid_norm_0=1,1.5``: one program; each slice equals the run at
    that value, and the one at the config's value equals ``small_run``."""
    scanned = assert_scan_equals_runs(class_imbalance, SMALL, "centroid_norm_0", [1.0, 1.5])
    assert scanned.test_loss.dims == ("variance_ratio", "centroid_norm", "imbalance_ratio", "centroid_norm_0", "seed", "class_", "tau")
    xr.testing.assert_allclose(scanned.test_loss.sel(centroid_norm_0=1.0, drop=True), small_run.test_loss, rtol=1e-12)
    assert not np.allclose(scanned.test_loss.sel(centroid_norm_0=1.5), scanned.test_loss.sel(centroid_norm_0=1.0))


def test_class_weight_delays_the_weighted_class(small_run):
    """A loss weight w_1 = 4 on class 1 (a scan: the same program as the centroid scan) raises
    tau_gen,1 / tau_gen,0 at every variance ratio (measured 1.017 -> 1.079 and 0.509 -> 0.558):
    the direction in which the inverse-design study weights a late class *down*."""
    scanned = runner.execute(class_imbalance, SMALL, {"class_weight": [1.0, 4.0]}, progress=False).dataset.isel(seed=0, centroid_norm=0, imbalance_ratio=0)
    times = scanned.generalization_time
    ratio = times.sel(class_="class_1") / times.sel(class_="class_0")
    assert bool((ratio.sel(class_weight=4.0) > 1.05 * ratio.sel(class_weight=1.0)).all()), ratio.values
    xr.testing.assert_allclose(
        times.sel(class_weight=1.0, drop=True), small_run.generalization_time.isel(seed=0, centroid_norm=0, imbalance_ratio=0), rtol=1e-12
    )


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--imbalance-ratio", "0.001"], "imbalance_ratio"),
        (["--imbalance-ratio", "1,1"], "imbalance_ratio"),
        (["--class-weight", "0"], "class_weight"),
        (["--variance-ratio", "0,1"], "variance_ratio"),
        (["--centroid-norm", "-1"], "centroid_norm"),
        (["--time", "0"], "time"),
        (["--problem.activation", "cubic"], "problem.activation"),
        (["--problem.dim", "1"], "problem.dim"),
        (["--problem.tau.low", "1e7"], "problem.tau.low"),
        (["--generator.samples", "-1"], "generator.samples"),
        (["--generator.taus", "0,1e3"], "generator.taus"),
        (["--generator.time.low", "2", "--generator.time.high", "1"], "generator.time.low"),
        (["--generator.steps", "1"], "generator.steps"),
        (["--generator.bias", "-0.5"], "generator.bias"),
    ],
)
def test_bad_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "class-imbalance", arguments, field)


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--grid", "imbalance_ratio=1,0.01"], "imbalance_ratio"),
        (["--grid", "time=0.1,-1"], "time"),
        (["--grid", "seed=0,1"], "seed"),
    ],
)
def test_bad_scan_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "class-imbalance", arguments, field, command="scan")


@pytest.mark.slow
def test_quick_preset_phase_map():
    """The quick preset (24 runs, ~1 min): the higher-variance class is learned and memorized
    first at balance (at t = 0.5; at t = 0.1 it is memorized later); reversals lie in the grid."""
    config = class_imbalance.PRESETS["quick"]
    summary = class_imbalance.summarize(class_imbalance.run(config), config).values
    assert summary["higher_variance_learned_first_at_balance"] is True
    assert summary["higher_variance_memorized_first_at_balance"] is True
    ratios = config.imbalance_ratio
    for entry in summary["points"]:
        assert entry["reversal_ratio"] is None or min(ratios) < entry["reversal_ratio"] < max(ratios)
