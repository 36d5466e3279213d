"""The memorization study ([BUBM], THEORY.md 7): schema, closed form vs GD, times, CLI, bad input."""

import dataclasses
import json

import numpy as np
import pytest
import xarray as xr

from experiments import cli, memorization

TINY = ["--dim", "8", "--psi-p", "4", "--psi-n", "1,2", "--num-tau", "40", "--tau-max", "1e5",
        "--simulate-tau-max", "30", "--num-records", "12", "--num-bins", "12"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("memorization") / "run"
    assert cli.main(["run", "memorization", "--out", str(out), *TINY]) == 0
    return out


def test_cli_writes_results_summary_and_figures(tiny):
    for name in ("results.nc", "config.json", "summary.json", "summary.md", "curves.png", "spectrum.png", "time_scales.png"):
        assert (tiny / name).is_file(), name
    ds = xr.open_dataset(tiny / "results.nc", engine="h5netcdf")
    assert ds.train_loss.dims == ("psi_n", "tau") and ds.train_loss.shape == (2, 40)
    assert ds.eigenvalues.shape == (2, 32)
    np.testing.assert_allclose(ds.spectrum_theory.sum("bin"), 1.0, atol=0.02)  # bins cover the support
    np.testing.assert_allclose(ds.spectrum_empirical.sum("bin"), 1.0)
    summary = json.loads((tiny / "summary.json").read_text())
    assert set(summary["per_psi_n"]) == {"1.0", "2.0"}
    assert "tau_mem_slope" in summary and "tau_gen_relative_change" in summary
    assert summary["tau_mem_local_slopes"] == {"1.0-2.0": pytest.approx(summary["tau_mem_slope"], rel=1e-12)}  # two points
    by_fraction = summary["tau_mem_slope_by_gap_fraction"]
    assert by_fraction["0.5"] == pytest.approx(summary["tau_mem_slope"], rel=1e-9)  # the same crossing as tau_mem
    assert set(by_fraction) == {"0.1", "0.25", "0.5"} and all(np.isfinite(list(by_fraction.values())))


def test_gap_fraction_times_increase_with_the_fraction(tiny):
    with xr.open_dataset(tiny / "results.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    times = np.stack([memorization.gap_fraction_times(ds, fraction) for fraction in (0.1, 0.25, 0.5, 0.9)])
    np.testing.assert_allclose(times[2], ds.tau_mem, rtol=1e-9)
    assert np.all(np.diff(times, axis=0) > 0)


def test_curves_start_at_one_and_generalize_then_memorize(tiny):
    ds = xr.open_dataset(tiny / "results.nc", engine="h5netcdf")
    np.testing.assert_allclose(ds.train_loss.isel(tau=0), 1.0, atol=2e-3)  # L(A = 0) = 1
    final_gap = (ds.test_loss - ds.train_loss).isel(tau=-1)
    assert np.all(final_gap > 0.05)  # p > n: the flow ends memorizing
    assert np.all(ds.train_loss.diff("tau") <= 1e-12)  # the training loss only decreases
    assert np.all(ds.tau_gen < ds.tau_mem)


def test_simulated_gd_follows_the_closed_form(tiny):
    """Plain GD at 0.1 of the stability limit vs the exact flow at the recorded times."""
    deviation = json.loads((tiny / "summary.json").read_text())["closed_form_vs_gd_max_abs"]
    assert deviation["train_loss"] < 1e-2 and deviation["test_loss"] < 1e-2 and deviation["score_error"] < 2e-2


def test_measured_generalization_time_matches_prediction(tiny):
    ds = xr.open_dataset(tiny / "results.nc", engine="h5netcdf")
    np.testing.assert_allclose(ds.tau_gen, ds.tau_gen_predicted, rtol=0.3)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--dim", "1"], "dim"),
        (["--psi-n", "0.33"], "psi_n"),
        (["--psi-p", "-1"], "psi_p"),
        (["--activation", "swish"], "activation"),
        (["--tau-min", "10", "--tau-max", "1"], "tau_min"),
        (["--simulate-tau-max", "1e9"], "simulate_tau_max"),
        (["--step-fraction", "2"], "step_fraction"),
        (["--feature-statistics", "gaussian"], "feature_statistics"),
        (["--feature-statistics", "gaussian-equivalent"], "simulate_tau_max"),  # its default 300 simulates GD
        (["--feature-statistics", "gaussian-equivalent", "--simulate-tau-max", "0", "--generate-samples", "10"], "generate_samples"),
    ],
)
def test_bad_input_fails_early_with_one_line(tmp_path, capsys, arguments, field):
    out = tmp_path / "never"
    assert cli.main(["run", "memorization", "--out", str(out), *arguments]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"diffdyn: error: {field}: ")
    assert not out.exists()


@pytest.mark.slow
def test_paper_preset():
    """[BUBM] figure settings (d = 100, psi_p = 64; 16 min on the quiet 2-core CPU): tau_gen flat and at its
    prediction; tau_mem growing with n, near the THEORY.md edge prediction at the two smallest
    psi_n and bending over (falling local slopes) as psi_n approaches psi_p (README)."""
    config = memorization.PRESETS["paper"]
    ds = memorization.run(config)
    result = memorization.summary(ds, config)
    assert result["tau_gen_relative_change"] < 0.2
    np.testing.assert_allclose(ds.tau_gen, ds.tau_gen_predicted, rtol=0.1)
    local = list(result["tau_mem_local_slopes"].values())
    assert all(slope > 0 for slope in local) and np.all(np.diff(local) < 0)
    np.testing.assert_allclose(ds.tau_mem[:2], ds.tau_mem_predicted[:2], rtol=0.2)


def test_tau_mem_is_linear_in_n_only_when_psi_p_dominates_psi_n():
    """THEORY.md 7's tau_mem ~ n holds for psi_p >> psi_n (its derivation's regime): in the
    Gaussian-equivalent model (the one the theory solves, any psi_p) at d = 20 the measured slope
    of log tau_mem on log n over psi_n = 4..32 is 0.95 at psi_p = 1024 (0.99 at d = 100, the
    ``asymptotic`` preset) and in [0.85, 1.15] at every onset fraction of the gap, while at
    psi_p = 64 (psi_p/psi_n = 16..2) it bends to 0.45 as n nears p; tau_gen stays flat in both."""
    slopes = {}
    for psi_p in (1024.0, 64.0):
        config = dataclasses.replace(memorization.PRESETS["asymptotic"], dim=20, psi_p=psi_p, num_tau=141, num_bins=12)
        result = memorization.summary(memorization.run(config), config)
        assert result["feature_statistics"] == "gaussian-equivalent"
        assert result["tau_gen_relative_change"] < 0.2
        slopes[psi_p] = [result["tau_mem_slope"], *result["tau_mem_slope_by_gap_fraction"].values()]
    assert all(0.85 <= slope <= 1.15 for slope in slopes[1024.0])
    assert all(slope < 0.6 for slope in slopes[64.0])


@pytest.mark.slow
def test_asymptotic_preset():
    """``--preset asymptotic`` (d = 100, psi_p = 1024, Gaussian-equivalent; 4 min, 11 GB):
    tau_mem slope in [0.85, 1.15] (0.99 measured), tau_gen flat and within 10% of prediction."""
    config = memorization.PRESETS["asymptotic"]
    ds = memorization.run(config)
    result = memorization.summary(ds, config)
    assert 0.85 <= result["tau_mem_slope"] <= 1.15
    assert result["tau_gen_relative_change"] < 0.2
    np.testing.assert_allclose(ds.tau_gen, ds.tau_gen_predicted, rtol=0.1)


def test_scan_over_time_and_training_set_size(tmp_path, tiny):
    """``diffdyn scan memorization``: OU time traced inside one program per psi_n; tau_gen
    follows its prediction at t = 0.1 and scales as 1/Delta_t."""
    out = tmp_path / "scan"
    shape = ["--dim", "8", "--psi-p", "4", "--num-tau", "40", "--tau-max", "1e5", "--simulate-tau-max", "0"]
    assert cli.main(["scan", "memorization", "--out", str(out), *shape, "--grid", "psi_n=1,2", "--grid", "time=0.1,0.4", "--seeds", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["programs"] == 2 and summary["compiles"] == 2 and summary["runs"] == 8
    scanned = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    assert scanned.score_error.dims == ("psi_n", "time", "seed", "tau")
    study = xr.open_dataset(tiny / "results.nc", engine="h5netcdf")
    np.testing.assert_allclose(scanned.tau_gen.sel(time=0.1).mean("seed"), study.tau_gen_predicted, rtol=0.3)
    delta = lambda t: 1 - np.exp(-2 * t)
    ratio = scanned.tau_gen.sel(time=0.1) / scanned.tau_gen.sel(time=0.4)
    np.testing.assert_allclose(ratio, delta(0.4) / delta(0.1), rtol=0.2)


def test_scan_runs_the_gaussian_equivalent_model(tmp_path):
    """``diffdyn scan memorization --feature-statistics gaussian-equivalent``: the restricted
    closed form inside the sweep program; curves start at the untrained loss 1 and tau_gen
    follows its prediction as in the exact model."""
    out = tmp_path / "scan"
    shape = ["--dim", "8", "--psi-p", "64", "--psi-n", "2", "--num-tau", "40", "--tau-max", "1e6", "--simulate-tau-max", "0"]
    assert cli.main(["scan", "memorization", "--out", str(out), *shape, "--feature-statistics", "gaussian-equivalent", "--grid", "time=0.1,0.4"]) == 0
    scanned = xr.open_dataset(out / "results.nc", engine="h5netcdf")
    np.testing.assert_allclose(scanned.train_loss.isel(tau=0), 1.0, atol=1e-2)  # tau = 1e-2: barely trained
    assert np.all(scanned.test_loss.isel(tau=-1) > scanned.train_loss.isel(tau=-1))  # memorized by tau = 1e6
    config = memorization.Config(dim=8, psi_p=64.0, psi_n=(2.0,), simulate_tau_max=0.0, feature_statistics="gaussian-equivalent")
    study = memorization.run(dataclasses.replace(config, num_tau=40, tau_max=1e6))
    np.testing.assert_allclose(scanned.tau_gen.sel(time=0.1).squeeze(), study.tau_gen_predicted.squeeze(), rtol=0.3)

