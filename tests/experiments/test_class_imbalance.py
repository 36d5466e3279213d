"""The class-imbalance study (reconstruction of [N] on [BUBM], THEORY.md 8): per-class curves,
times, the phase map and the reversal statement."""

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from dynamics import sweep
from dynamics.validation import ConfigError
from experiments import class_imbalance, cli

SMALL = class_imbalance.Config(variance_ratios=(1.0, 4.0), centroid_norms=(1.0,), imbalance_ratios=(1.0,), seeds=1, num_tau=49)


@pytest.fixture(scope="module")
def result():
    dataset = class_imbalance.run(SMALL)
    return dataset, class_imbalance.summary(dataset, SMALL)


def test_per_class_curves(result):
    dataset, _ = result
    assert dataset.test_loss.dims == ("seed", "variance_ratio", "centroid_norm", "imbalance_ratio", "class_", "tau")
    # A(0) = 0 gives L = 1 for every class; tau_min = 1e-3 is ~1e-3 of the fastest time scale.
    np.testing.assert_allclose(dataset.train_loss.isel(tau=0), 1.0, atol=5e-3)
    # Gradient flow decreases the training objective: the count-weighted sum of class train losses.
    counts = dataset["count"] / dataset["count"].sum("class_")
    total = (dataset.train_loss * counts).sum("class_")
    assert float(total.diff("tau").max()) < 1e-12
    # Memorization: at the end each class's train loss is below its test loss.
    assert float((dataset.test_loss - dataset.train_loss).isel(tau=-1).min()) > 0


def test_order_of_learning(result):
    dataset, summary = result
    times = dataset.generalization_time.isel(seed=0, centroid_norm=0)
    # Identical classes at balance generalize together (finite-sample noise only).
    equal = times.sel(variance_ratio=1.0, imbalance_ratio=1.0)
    assert abs(np.log(float(equal.sel(class_="class_1") / equal.sel(class_="class_0")))) < np.log(1.2)
    # The higher-variance class is learned first at balance ([N]'s primary claim).
    high = times.sel(variance_ratio=4.0, imbalance_ratio=1.0)
    assert float(high.sel(class_="class_1")) < 0.7 * float(high.sel(class_="class_0"))
    assert summary["higher_variance_learned_first_at_balance"] is True
    rows = {(r["variance_ratio"], r["centroid_norm"]): r for r in summary["rows"]}
    assert set(rows[(4.0, 1.0)]) >= {"learned_reversal_ratio", "memorized_reversal_ratio", "learned_first_at_balance"}
    assert summary["grid"]["imbalance_ratios (n_1/n_0)"] == [1.0]
    assert rows[(4.0, 1.0)]["learned_reversal_ratio"] is None  # one ratio: nothing can reverse


def test_reversal_ratio():
    ratios = np.array([0.1, 1.0, 10.0])
    assert class_imbalance.reversal_ratio(np.array([0, 0, 0]), ratios) is None
    np.testing.assert_allclose(class_imbalance.reversal_ratio(np.array([1, 0, 0]), ratios), np.sqrt(0.1))


def test_cli_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(class_imbalance, "PRESETS", {"quick": SMALL, "paper": class_imbalance.PRESETS["paper"]})
    out = tmp_path / "run"
    assert cli.main(["run", "class-imbalance", "--out", str(out)]) == 0  # SMALL again: compiled programs reused
    summary = json.loads((out / "summary.json").read_text())
    assert summary["higher_variance_learned_first_at_balance"] is True
    assert (out / "results.nc").exists() and (out / "summary.md").exists()


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--imbalance-ratios", "0.001"], "imbalance_ratios"),
        (["--class-weights", "1.0"], "class_weights"),
        (["--variance-ratios", "0,1"], "variance_ratios"),
        (["--activation", "cubic"], "activation"),
    ],
)
def test_bad_input_fails_early(tmp_path, capsys, arguments, field):
    assert cli.main(["run", "class-imbalance", "--out", str(tmp_path / "x"), *arguments]) == 2
    assert capsys.readouterr().err.startswith(f"diffdyn: error: {field}:")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_quick_preset_phase_map():
    config = class_imbalance.PRESETS["quick"]
    dataset = class_imbalance.run(config)
    summary = class_imbalance.summary(dataset, config)
    assert summary["higher_variance_learned_first_at_balance"] is True
    assert summary["higher_variance_memorized_first_at_balance"] is True  # at t = 0.5 (not at t = 0.1)
    # Every reversal ratio reported lies inside the searched grid.
    ratios = config.imbalance_ratios
    for row in summary["rows"]:
        for key in ("learned_reversal_ratio", "memorized_reversal_ratio"):
            assert row[key] is None or min(ratios) < row[key] < max(ratios)


SCAN_TINY = ["--dim", "8", "--num-features", "32", "--base-count", "8", "--num-noise", "4", "--num-test", "32",
             "--test-noise", "2", "--num-tau", "24", "--imbalance-ratios", "1"]


def test_scan_runs_equal_the_study_runs(tmp_path):
    """``diffdyn scan class-imbalance``: variance ratio and centroid norm traced in one program;
    run (point, seed) equals run()'s entry bit for bit (same keys, same operations)."""
    out = tmp_path / "scan"
    grid = ["--grid", "variance_ratios=1,4", "--grid", "centroid_norms=1,2", "--seeds", "2"]
    assert cli.main(["scan", "class-imbalance", "--out", str(out), *SCAN_TINY, *grid]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 8 and summary["programs"] == 1 and summary["diverged"] == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as scanned:
        scanned = scanned.load()
    assert scanned.test_loss.dims == ("variance_ratios", "centroid_norms", "seed", "class_", "tau")
    config = dataclasses.replace(cli.build_config(class_imbalance, "quick", SCAN_TINY), variance_ratios=(1.0, 4.0), centroid_norms=(1.0, 2.0), seeds=2)
    study = class_imbalance.run(config).isel(imbalance_ratio=0)
    names = {"variance_ratios": "variance_ratio", "centroid_norms": "centroid_norm"}
    for name in ("train_loss", "test_loss", "generalization_time", "memorization_time"):
        swept = scanned[name].rename(names).transpose(*study[name].dims)
        np.testing.assert_allclose(swept, study[name], rtol=1e-12, atol=0)
    class_1_first = lambda times: (times.sel(class_="class_1") < times.sel(class_="class_0")).astype(int)
    np.testing.assert_array_equal(scanned.learned_first.rename(names).transpose("seed", ...), class_1_first(study.generalization_time))
    np.testing.assert_array_equal(scanned.memorized_first.rename(names).transpose("seed", ...), class_1_first(study.memorization_time))


def test_scan_generated_memorization_equals_the_study(tmp_path):
    """With ``--generate-samples`` a scan run also reports the per-class and total copy fractions
    of the generated samples, equal to :func:`class_imbalance.run`'s entry (same keys)."""
    generator = ["--generate-samples", "16", "--generate-taus", "1e3,1e8", "--generate-num-times", "3", "--generate-steps", "8", "--num-features", "128"]
    out = tmp_path / "scan"
    assert cli.main(["scan", "class-imbalance", "--out", str(out), *SCAN_TINY, *generator, "--centroid-norms", "1", "--grid", "variance_ratios=1,4", "--seeds", "1"]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as scanned:
        scanned = scanned.load()
    assert scanned.memorization_fraction_generated.dims == ("variance_ratios", "seed", "class_", "tau_sample")
    np.testing.assert_array_equal(scanned.tau_sample, [1e3, 1e8])
    config = dataclasses.replace(cli.build_config(class_imbalance, "quick", SCAN_TINY + generator), variance_ratios=(1.0, 4.0), centroid_norms=(1.0,), seeds=1)
    study = class_imbalance.run(config).isel(imbalance_ratio=0, centroid_norm=0)
    for name in ("memorization_fraction_generated", "memorization_fraction_generated_total"):
        swept = scanned[name].rename(variance_ratios="variance_ratio").transpose(*study[name].dims)
        np.testing.assert_allclose(swept, study[name], rtol=1e-12, atol=0)
    total = scanned.memorization_fraction_generated_total
    assert float(total.sel(tau_sample=1e8).min()) > float(total.sel(tau_sample=1e3).max())  # copying grows with training


@pytest.mark.parametrize(
    "grid, overrides, field",
    [
        ({"class_weights": ["2"]}, {}, "class_weights"),  # a pair: not sweepable
        ({"variance_ratios": ["1", "4"]}, {"centroid_norms": (1.0, 2.0)}, "centroid_norms"),  # one norm per run
        ({"activation": ["tanh"]}, {}, "activation"),  # not numeric
        ({"imbalance_ratios": ["1", "0.01"]}, {}, "imbalance_ratios"),  # no class-1 training point
    ],
)
def test_bad_scan_grids_fail_before_any_compile(grid, overrides, field):
    point = {"variance_ratios": (4.0,), "centroid_norms": (1.0,), "imbalance_ratios": (1.0,)}
    config = class_imbalance.Config(**{**point, **overrides})
    before = sweep.TRACES[class_imbalance.__name__]
    with pytest.raises(ConfigError, match=rf"^(grid: )?{field}\b"):
        sweep.sweep(class_imbalance, config, grid, seeds=2, progress=False)
    assert sweep.TRACES[class_imbalance.__name__] == before
