"""The spectral-bias study: schema, theory vs simulation, the quick run end to end, scans, bad input."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics import status
from diffdyn.dynamics.config import LogGrid
from diffdyn.experiments import cli, report, runner, spectral_bias

QUICK = spectral_bias.PRESETS["quick"]
SMALL = dataclasses.replace(
    QUICK, family=("one_layer", "circulant", "patch"), num_modes=6, q=(0.1, 0.6), tau=LogGrid(1e-3, 1e2, 14), sigma=LogGrid(0.002, 80.0, 24), num_samples=0
)


@pytest.fixture(scope="module")
def small_run():
    """Two init scales (the quick preset has one), no PF-ODE samples."""
    return spectral_bias.run(SMALL)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`diffdyn run spectral-bias` (the README's quick start) once, in a subprocess: its output
    folder and its results."""
    out = tmp_path_factory.mktemp("quick") / "run"
    done = subprocess.run([sys.executable, "-m", "diffdyn.experiments.cli", "run", "spectral-bias", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as results:
        return out, results.load()


def test_dataset_schema(quick_run):
    _, ds = quick_run
    assert list(ds.source.values) == ["theory", "simulation"]
    assert list(ds.family.values) == list(QUICK.family)
    assert ds.variance.dims == ("family", "q", "seed", "source", "tau", "mode")
    assert ds.variance.shape == (len(QUICK.family), 1, 2, 2, 26, 12)
    assert ds.weight.dims == ("family", "q", "seed", "source", "sigma", "tau", "mode")
    assert ds.rising.dtype == bool and ds.failure.dtype == np.int32 and not ds.diverged.any()
    np.testing.assert_allclose(ds.tau, np.geomspace(1e-3, 1e2, 26))
    np.testing.assert_allclose(ds.lam.sel(family="one_layer"), np.broadcast_to(np.geomspace(1e-2, 10.0, 12), (1, 2, 12)))
    assert json.loads(ds.attrs["config"])["family"] == list(QUICK.family)


def test_simulation_follows_theory(quick_run):
    _, ds = quick_run
    deviation = np.abs(ds.variance.sel(source="simulation") / ds.variance.sel(source="theory") - 1)
    assert float(deviation.sel(family="one_layer").max()) < 0.02
    assert float(deviation.max()) < 0.1
    weight_gap = np.abs(ds.weight.sel(source="simulation") - ds.weight.sel(source="theory"))
    assert float(weight_gap.sel(family=["one_layer", "circulant", "patch"]).max()) < 1e-8  # linear flows: exact at the nodes
    assert float(weight_gap.max()) < 1e-5  # two-layer and deep linear: their mode ODE vs the trained ODE (rtol 1e-6)


def test_per_mode_results_do_not_depend_on_the_random_rotation(quick_run):
    _, ds = quick_run
    one_layer = ds.variance.sel(source="simulation", family="one_layer")
    # Equal up to the PF-ODE solver tolerance (rtol 1e-6 per step; global error ~1e-5).
    np.testing.assert_allclose(one_layer.isel(seed=0), one_layer.isel(seed=1), rtol=2e-4)


def test_sampled_variance_within_monte_carlo_error(quick_run):
    _, ds = quick_run
    relative = np.abs(ds.variance_sampled / ds.variance.sel(source="simulation") - 1)
    assert float(relative.max()) < 5 * np.sqrt(2 / QUICK.num_samples)


def test_quick_run_end_to_end(quick_run):
    """`diffdyn run spectral-bias` with the quick preset: files, headline numbers."""
    out, _ = quick_run
    for name in ("results.nc", "config.json", "summary.json", "summary.md", "weights.png", "variance.png", "emergence.png", "scan.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    families = summary["families"]
    one_layer = families["one_layer"]["fits"]
    assert 0.9 < one_layer["theory"]["rising"]["alpha"] < 1.1
    assert abs(one_layer["simulation"]["rising"]["alpha"] - one_layer["theory"]["rising"]["alpha"]) < 0.05
    for family in ("one_layer", "two_layer", "deep_linear"):
        assert families[family]["max_rel_dev"] < 0.02
    for family in ("circulant", "patch"):
        assert families[family]["max_rel_dev"] < 0.1
    ratio = next(row for row in summary["rows"] if row["quantity"].startswith("rate ratio"))
    assert ratio["predicted"] == 12 and abs(ratio["measured"] / 12 - 1) < 0.01
    assert summary["sweep"]["runs"] == 10 and summary["sweep"]["failed"] == {}
    assert json.loads((out / "config.json").read_text())["preset"] == "quick"
    assert "| alpha (tau* ~ lambda^-alpha) | family=one_layer, Q=0.1 |" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--lam-min", "-1"], "lam_min"),
        (["--lam-min", "nan"], "lam_min"),
        (["--lam-min", "20"], "lam_min"),  # above lam_max
        (["--spectrum", "1,-2,3"], "spectrum"),
        (["--spectrum", "1,nan,3"], "spectrum"),
        (["--q", "1.5"], "q"),
        (["--q", "-0.1"], "q"),
        (["--q", "0.1,0.1"], "q"),
        (["--sigma.low", "80"], "sigma.low"),
        (["--no-such-field", "1"], "no_such_field"),
        (["--num-modes", "many"], "num_modes"),
        (["--family", "one_layer,mlp"], "family"),
        (["--family", ""], "family"),
        (["--preset", "huge"], "preset"),
        (["--kernel-size", "4"], "kernel_size"),
        (["--seeds", "0"], "seeds"),
    ],
)
def test_bad_input_fails_early_with_one_line(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "spectral-bias", arguments, field)
    assert list(tmp_path.iterdir()) == []


def test_non_psd_covariance_fails_early(tmp_path, capsys):
    path = tmp_path / "cov.npy"
    np.save(path, np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    line = assert_fails_early(capsys, tmp_path, "spectral-bias", ["--covariance", str(path)], "covariance")
    assert "must be positive semi-definite" in line
    line = assert_fails_early(capsys, tmp_path, "spectral-bias", ["--covariance", str(tmp_path / "missing.npy")], "covariance")
    assert "cannot read" in line


def test_given_covariance_is_studied_in_its_eigenbasis(tmp_path):
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(5, 5))
    cov = factor @ factor.T / 5 + 0.05 * np.eye(5)
    np.save(tmp_path / "cov.npy", cov)
    config = dataclasses.replace(
        SMALL,
        family=("one_layer", "circulant"),
        q=(0.1,),
        covariance=str(tmp_path / "cov.npy"),
        tau=LogGrid(1e-3, 1e2, 10),
        sigma=LogGrid(0.002, 80.0, 16),
        seeds=1,
    )
    ds = spectral_bias.run(config)
    np.testing.assert_allclose(ds.lam.sel(family="one_layer").squeeze(), np.linalg.eigvalsh(cov), rtol=1e-12)
    deviation = np.abs(ds.variance.sel(source="simulation") / ds.variance.sel(source="theory") - 1)
    assert float(deviation.max()) < 0.02


@pytest.mark.slow  # keeps the default suite within CI time; run with -m slow
def test_finite_training_set_deviates_from_population_theory():
    """With n samples the learned spectrum is the sample spectrum: deviations shrink with n."""
    base = dataclasses.replace(SMALL, family=("one_layer",), q=(0.1,), num_modes=4, tau=LogGrid(1e-3, 1e2, 8), sigma=LogGrid(0.002, 80.0, 12))
    deviations = []
    for n in (20, 2000):
        ds = spectral_bias.run(dataclasses.replace(base, n_train=n))
        final = ds.variance.isel(tau=-1)
        deviations.append(float(np.abs(final.sel(source="simulation") / final.sel(source="theory") - 1).max()))
        simulated = ds.variance.sel(source="simulation")
        assert not np.allclose(simulated.isel(seed=0), simulated.isel(seed=1))
    assert deviations[1] < deviations[0] / 3
    assert deviations[0] > 0.05


def test_overrides_are_typed_and_a_spectrum_sets_the_dimension():
    config = cli.build_config(spectral_bias, "quick", ["--num-modes", "8", "--q=0.1,0.5", "--criterion", "harmonic", "--tau.num", "30"])
    assert (config.num_modes, config.q, config.criterion, config.tau.num) == (8, (0.1, 0.5), "harmonic", 30)
    config = cli.build_config(spectral_bias, "quick", ["--spectrum", "3,1,2,4"])
    assert spectral_bias.dimension(config) == 4


def test_summary_is_strict_json(small_run, tmp_path):
    summary = spectral_bias.summarize(small_run, SMALL)
    fits = summary.values["families"]["one_layer"]["fits"]
    assert set(fits) == {"theory", "simulation"} and fits["simulation"]["rising"]["n_modes"] > 0
    path = tmp_path / "summary.json"
    report.write_json(path, {"fit": {"alpha": float("nan")}, **summary.values})
    assert json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))["fit"]["alpha"] is None


@pytest.mark.slow  # keeps the default suite within CI time; run with -m slow
def test_depth_three_deep_linear_follows_its_mode_ode_theory():
    config = dataclasses.replace(SMALL, family=("deep_linear",), q=(0.1,), num_modes=12, depth=3, seeds=1, tau=LogGrid(1e-3, 1e2, 16))
    families = spectral_bias.summarize(spectral_bias.run(config), config).values["families"]["deep_linear"]
    fits = families["fits"]
    assert abs(fits["simulation"]["rising"]["alpha"] - fits["theory"]["rising"]["alpha"]) < 0.01
    assert families["max_rel_dev"] < 0.05  # sigma-grid interpolation with 24 nodes


def test_scan_equals_runs_and_follows_theory(small_run):
    """``diffdyn scan --grid lam_min=...``: lam_min traced inside the programs; each slice equals
    ``diffdyn run`` at that lam_min, and the run at the config's lam_min equals ``small_run``."""
    scanned = assert_scan_equals_runs(spectral_bias, SMALL, "lam_min", [0.01, 0.02])
    assert scanned.variance.dims == ("family", "q", "lam_min", "seed", "source", "tau", "mode")
    xr.testing.assert_allclose(scanned.variance.sel(lam_min=0.01, drop=True), small_run.variance, rtol=1e-12)
    shifted = scanned.sel(lam_min=0.02, family="one_layer")
    np.testing.assert_allclose(shifted.lam.isel(seed=0, q=0), np.geomspace(0.02, 10.0, 6), rtol=1e-12)
    deviation = shifted.variance.sel(source="simulation") / shifted.variance.sel(source="theory") - 1
    assert float(np.abs(deviation).max()) < 1e-2


def test_a_stiff_point_ends_at_its_step_budget_and_the_others_are_untouched():
    """eta = 1e6 makes the two-layer flow need ~1e9 steps: it stops at max_steps, is flagged
    with that reason, and the eta = 1 runs equal a grid without it."""
    config = dataclasses.replace(
        SMALL, family=("two_layer",), q=(0.1,), num_modes=4, tau=LogGrid(1e-2, 10.0, 8), sigma=LogGrid(0.002, 80.0, 8), seeds=2, max_steps=3000
    )
    stiff = runner.execute(spectral_bias, config, {"eta": [1.0, 1e6]}, progress=False)
    tame = runner.execute(spectral_bias, config, {"eta": [1.0]}, progress=False)
    failure = stiff.dataset.failure
    assert (failure.sel(eta=1e6) == status.MAX_STEPS).all() and (failure.sel(eta=1.0) == status.OK).all()
    assert stiff.summary["sweep"]["failed"] == {"max_steps": 2}
    assert np.isnan(stiff.dataset.variance.sel(eta=1e6)).all()
    xr.testing.assert_allclose(stiff.dataset.sel(eta=[1.0]), tame.dataset, rtol=1e-10)
    assert any(row["where"].startswith("eta=1e+06") for row in stiff.summary["rows"])


def test_modes_that_never_emerge_are_results_not_failures():
    """A NaN emergence time (the record stopped before the mode crossed) is not a failure."""
    config = dataclasses.replace(SMALL, family=("one_layer",), q=(0.1,), num_modes=4, tau=LogGrid(1e-3, 1.0, 8), sigma=LogGrid(0.002, 80.0, 16), seeds=1)
    result = runner.execute(spectral_bias, config, {"lam_min": [1e-3, 1e-2]}, progress=False)
    emergence = result.dataset.emergence_time.sel(source="simulation")
    assert result.summary["sweep"]["failed"] == {}
    assert bool(np.isnan(emergence.isel(mode=0)).all()) and bool(np.isfinite(emergence.isel(mode=-1)).all())


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--grid", "eta=-1"], "eta"),
        (["--grid", "eta=fast"], "eta"),
        (["--grid", "weight_sigmas=1"], "weight_sigmas"),
        (["--grid", "lam_min=0.1", "--spectrum", "1,2,3,4,5"], "lam_min"),
        (["--grid", "eta=1", "--grid", "eta=2"], "grid"),
        (["--num-samples", "0"], "grid"),  # a scan needs a --grid
    ],
)
def test_bad_scan_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "spectral-bias", arguments, field, command="scan")


@pytest.mark.slow
def test_paper_preset():
    """[WP] figure settings (minutes on a laptop CPU)."""
    config = spectral_bias.PRESETS["paper"]
    summary = spectral_bias.summarize(spectral_bias.run(config), config).values
    one_layer = summary["families"]["one_layer"]["fits"]
    assert abs(one_layer["theory"]["rising"]["alpha"] - 1.02) < 0.03
    assert abs(one_layer["simulation"]["rising"]["alpha"] - one_layer["theory"]["rising"]["alpha"]) < 0.05
