"""The spectral-bias study: schema, theory vs simulation, the quick run end to end, bad input."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from dynamics.sweep import sweep
from experiments import EXPERIMENTS, cli, spectral_bias

QUICK = spectral_bias.PRESETS["quick"]
SMALL = spectral_bias.Config(families=("one_layer", "circulant", "patch"), num_modes=6, q=(0.1, 0.6), num_tau=14, num_sigma_nodes=24, seeds=2, num_samples=0)


@pytest.fixture(scope="module")
def small_run():
    """Two init scales (the quick preset has one), no PF-ODE samples."""
    return spectral_bias.run(SMALL)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`diffdyn run spectral-bias` (the README's quick start) once, in a subprocess: its output
    folder and its results."""
    out = tmp_path_factory.mktemp("quick") / "run"
    done = subprocess.run([sys.executable, "-m", "experiments.cli", "run", "spectral-bias", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as results:
        return out, results.load()


def test_dataset_schema(quick_run):
    _, ds = quick_run
    assert list(ds.source.values) == ["theory", "simulation"]
    assert list(ds.family.values) == list(QUICK.families)
    assert ds.variance.dims == ("source", "family", "q", "seed", "tau", "mode")
    assert ds.variance.shape == (2, len(QUICK.families), 1, 2, 26, 12)
    assert ds.weight.dims == ("source", "family", "q", "seed", "sigma", "tau", "mode")
    np.testing.assert_allclose(ds.tau, np.geomspace(1e-3, 1e2, 26))
    np.testing.assert_allclose(ds.lam.sel(family="one_layer"), np.geomspace(1e-2, 10.0, 12))


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
    sim = ds.variance.sel(source="simulation")
    relative = np.abs(ds.variance_sampled / sim - 1)
    assert float(relative.max()) < 5 * np.sqrt(2 / QUICK.num_samples)


def test_quick_run_end_to_end(quick_run):
    """`diffdyn run spectral-bias` with the quick preset: files, headline numbers."""
    out, _ = quick_run
    for name in ("results.nc", "config.json", "summary.json", "summary.md", "weights.png", "variance.png", "emergence.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    families = summary["families"]
    one_layer = families["one_layer"]
    assert 0.9 < one_layer["alpha_theory"] < 1.1
    assert abs(one_layer["alpha_simulation"] - one_layer["alpha_theory"]) < 0.05
    for family in ("one_layer", "two_layer", "deep_linear"):
        assert families[family]["max_rel_dev"] < 0.02
    for family in ("circulant", "patch"):
        assert families[family]["max_rel_dev"] < 0.1
    ratio = summary["circulant_rate_ratio"]
    assert abs(ratio["median"] / ratio["expected"] - 1) < 0.01
    assert ratio["expected"] == 12
    assert json.loads((out / "config.json").read_text())["preset"] == "quick"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--lam-min", "-1"], "lam_min"),
        (["--lam-min", "nan"], "lam_min"),
        (["--spectrum", "1,-2,3"], "spectrum"),
        (["--spectrum", "1,nan,3"], "spectrum"),
        (["--q", "1.5"], "q"),
        (["--q", "-0.1"], "q"),
        (["--sigma-min", "80", "--sigma-max", "80"], "sigma_min"),
        (["--no-such-field", "1"], "no_such_field"),
        (["--num-modes", "many"], "num_modes"),
        (["--families", "one_layer,mlp"], "families"),
        (["--preset", "huge"], "preset"),
    ],
)
def test_bad_input_fails_early_with_one_line(tmp_path, capsys, arguments, field):
    out = tmp_path / "never"
    assert cli.main(["run", "spectral-bias", "--out", str(out), *arguments]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"diffdyn: error: {field}: ")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_non_psd_covariance_fails_early(tmp_path, capsys):
    path = tmp_path / "cov.npy"
    np.save(path, np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    out = tmp_path / "never"
    assert cli.main(["run", "spectral-bias", "--out", str(out), "--covariance", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("diffdyn: error: covariance: must be positive semi-definite")
    assert not out.exists()
    assert cli.main(["run", "spectral-bias", "--covariance", str(tmp_path / "missing.npy")]) == 2
    assert capsys.readouterr().err.startswith("diffdyn: error: covariance: cannot read")


def test_given_covariance_is_studied_in_its_eigenbasis(tmp_path):
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(5, 5))
    cov = factor @ factor.T / 5 + 0.05 * np.eye(5)
    np.save(tmp_path / "cov.npy", cov)
    config = spectral_bias.validate(spectral_bias.Config(families=("one_layer", "circulant"), covariance=str(tmp_path / "cov.npy"), num_tau=10, num_sigma_nodes=16, seeds=1, num_samples=0))
    ds = spectral_bias.run(config)
    np.testing.assert_allclose(ds.lam.sel(family="one_layer"), np.linalg.eigvalsh(cov), rtol=1e-12)
    deviation = np.abs(ds.variance.sel(source="simulation") / ds.variance.sel(source="theory") - 1)
    assert float(deviation.max()) < 0.02


def test_finite_training_set_deviates_from_population_theory():
    """With n samples the learned spectrum is the sample spectrum: deviations shrink with n."""
    base = spectral_bias.Config(families=("one_layer",), num_modes=4, num_tau=8, num_sigma_nodes=12, seeds=2, num_samples=0)
    deviations = []
    for n in (20, 2000):
        ds = spectral_bias.run(spectral_bias.Config(**{**base.__dict__, "n_train": n}))
        final = ds.variance.isel(tau=-1)
        deviations.append(float(np.abs(final.sel(source="simulation") / final.sel(source="theory") - 1).max()))
        assert not np.allclose(ds.variance.sel(source="simulation").isel(seed=0), ds.variance.sel(source="simulation").isel(seed=1))
    assert deviations[1] < deviations[0] / 3
    assert deviations[0] > 0.05


def test_unknown_experiment_exit_code_from_the_console_script(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.cli", "run", "no-such-study", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert done.returncode == 2
    allowed = ", ".join(EXPERIMENTS)
    assert done.stderr.strip() == f"diffdyn: error: experiment: unknown value 'no-such-study'; allowed: {allowed}"
    assert not (tmp_path / "x").exists()


def test_list_and_report(tmp_path, capsys):
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().out.startswith("spectral-bias")
    (tmp_path / "summary.md").write_text("# table\n")
    assert cli.main(["report", str(tmp_path)]) == 0
    assert "# table" in capsys.readouterr().out


def test_overrides_are_typed():
    config = cli.build_config(spectral_bias, "quick", ["--num-modes", "8", "--q=0.1,0.5", "--criterion", "harmonic"])
    assert (config.num_modes, config.q, config.criterion) == (8, (0.1, 0.5), "harmonic")
    config = cli.build_config(spectral_bias, "quick", ["--spectrum", "3,1,2,4"])
    assert (config.num_modes, config.lam_min, config.lam_max) == (4, 1.0, 4.0)


@pytest.mark.slow
def test_paper_preset(tmp_path):
    """[WP] figure settings (minutes on a laptop CPU)."""
    config = spectral_bias.PRESETS["paper"]
    ds = spectral_bias.run(config)
    summary = spectral_bias.summary(ds, spectral_bias.validate(config))
    one_layer = summary["families"]["one_layer"]
    assert abs(one_layer["alpha_theory"] - 1.02) < 0.03
    assert abs(one_layer["alpha_simulation"] - one_layer["alpha_theory"]) < 0.05
    assert abs(summary["circulant_rate_ratio"]["median"] / 20 - 1) < 0.01


def test_summary_has_fits_for_every_q_and_is_strict_json(small_run, tmp_path):
    from experiments import io

    summary = spectral_bias.summary(small_run, SMALL)
    by_q = summary["families"]["one_layer"]["fits_by_q"]
    assert set(by_q) == {"0.1", "0.6"}
    assert by_q["0.1"]["simulation"] == summary["families"]["one_layer"]["fits"]["simulation"]
    path = tmp_path / "summary.json"
    io.write_json(path, {"fit": {"alpha": float("nan")}, **summary})
    assert json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))["fit"]["alpha"] is None


def test_depth_three_deep_linear_follows_its_mode_ode_theory():
    config = spectral_bias.validate(spectral_bias.Config(families=("deep_linear",), depth=3, seeds=1, num_samples=0, num_tau=16, num_sigma_nodes=24))
    summary = spectral_bias.summary(spectral_bias.run(config), config)["families"]["deep_linear"]
    assert abs(summary["alpha_simulation"] - summary["alpha_theory"]) < 0.01
    assert summary["max_rel_dev"] < 0.05  # sigma-grid interpolation with 24 nodes


def test_scan_runs_equal_the_study_runs_and_follow_theory(small_run, tmp_path, capsys):
    """``diffdyn scan``: q and lam_min vary inside one program; run (q, seed) equals run()'s."""
    out = tmp_path / "scan"
    shape = ["--families", "one_layer,circulant,patch", "--num-modes", "6", "--num-tau", "14", "--num-sigma-nodes", "24"]
    grid = ["--grid", "q=0.1,0.6", "--grid", "lam_min=0.01,0.02", "--seeds", "2", "--num-samples", "0"]
    assert cli.main(["scan", "spectral-bias", "--out", str(out), *shape, *grid]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 8 and summary["programs"] == 1 and summary["diverged"] == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as scanned:
        scanned = scanned.load()
    assert scanned.variance.dims == ("q", "lam_min", "seed", "source", "family", "tau", "mode")
    same = scanned.variance.sel(lam_min=0.01).transpose("source", "family", "q", "seed", "tau", "mode")
    np.testing.assert_allclose(same.sel(source="theory"), small_run.variance.sel(source="theory"), rtol=1e-12)
    # the adaptive PF-ODE solve amplifies round-off differences of the batched linear algebra
    np.testing.assert_allclose(same.sel(source="simulation"), small_run.variance.sel(source="simulation"), rtol=1e-3)
    shifted = scanned.sel(lam_min=0.02, family="one_layer")
    np.testing.assert_allclose(shifted.lam.isel(seed=0, q=0), np.geomspace(0.02, 10.0, 6), rtol=1e-12)
    deviation = shifted.variance.sel(source="simulation") / shifted.variance.sel(source="theory") - 1
    assert float(np.abs(deviation).max()) < 1e-2


def test_scan_keeps_runs_whose_slowest_modes_never_emerge(tmp_path):
    """A NaN emergence time (the run stopped before the mode crossed) is a result, not divergence."""
    config = spectral_bias.Config(families=("one_layer",), num_modes=4, num_tau=8, tau_max=1.0, num_sigma_nodes=16, num_samples=0)
    result = sweep(spectral_bias, config, {"lam_min": [1e-3, 1e-2]}, seeds=1, out=tmp_path / "scan")
    emergence = result.dataset.emergence_time.sel(source="simulation")
    assert result.summary["diverged"] == 0
    assert bool(np.isnan(emergence.isel(mode=0)).all()) and bool(np.isfinite(emergence.isel(mode=-1)).all())
    assert bool(np.isfinite(result.dataset.variance).all())


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--grid", "eta=-1"], "eta"),
        (["--grid", "eta=fast"], "eta"),
        (["--grid", "families=1"], "families"),
        (["--grid", "lam_min=0.1", "--spectrum", "1,2,3,4,5"], "lam_min"),
        (["--grid", "eta=1", "--q", "0.1,0.5"], "q"),
        (["--grid", "eta=1", "--seeds", "0"], "seeds"),
    ],
)
def test_bad_scan_input_fails_early(tmp_path, capsys, arguments, field):
    out = tmp_path / "scan"
    assert cli.main(["scan", "spectral-bias", "--out", str(out), *arguments]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("diffdyn: error: ")
    assert re.search(rf"\b{field}\b", error[0]), error[0]
    assert not out.exists()


def test_scan_of_an_experiment_without_a_workload_is_refused(capsys):
    assert cli.main(["scan", "inverse-design", "--grid", "num_tau=10"]) == 2
    assert "cannot be scanned" in capsys.readouterr().err
