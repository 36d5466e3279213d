"""The simplicity-bias study: schema, test losses vs closed forms, scans, bad input; the quick
preset's exponents (slow)."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics.theory import cumulants as theory
from diffdyn.experiments import report, simplicity_bias

QUICK = simplicity_bias.PRESETS["quick"]
SMALL = dataclasses.replace(
    QUICK,
    dim=(6,),
    spike=("cumulant",),
    width=2,
    learning_rate=3.0,
    steps=300,
    records=8,
    seeds=2,
    test_samples=4096,
    generated_samples=64,
    langevin_steps=20,
    init_scale=1e-6,
)


@pytest.fixture(scope="module")
def small_run():
    """The cumulant spike, two couplings, d = 6, a near-zero initial W (step 0 has a closed-form loss)."""
    return simplicity_bias.run(SMALL)


def test_dataset_schema(small_run):
    ds = small_run
    assert ds.overlap.dims == ("dim", "coupling", "spike", "seed", "step", "direction")
    assert ds.loss.dims == ("dim", "coupling", "spike", "seed", "step", "law")
    assert list(ds.law.values) == list(theory.LAWS) and list(ds.direction.values) == list(theory.SPIKES)
    assert ds.failure.dtype == np.int32 and int(ds.failure.max()) == 0
    np.testing.assert_array_equal(ds.step.values, simplicity_bias.record_steps(SMALL))
    np.testing.assert_allclose(ds.recovery_samples, ds.recovery_step * SMALL.batch)
    np.testing.assert_allclose(ds.step_size, SMALL.learning_rate / 6**SMALL.lr_exponent, rtol=1e-6)
    overlap = ds.overlap.values
    assert np.all((overlap >= 0) & (overlap <= 1 + 1e-6))
    recovered = np.isfinite(ds.recovery_step.values)
    assert recovered.any()
    # a recorded overlap at or past the threshold means the run had recovered by then
    first_record_past = np.where((overlap >= SMALL.threshold).any(axis=-2), ds.step.values[np.argmax(overlap >= SMALL.threshold, axis=-2)], np.inf)
    assert np.all(np.where(recovered, ds.recovery_step.values, np.inf) <= first_record_past)


def test_initial_test_losses_equal_the_closed_form(small_run):
    """At step 0 (skip 1, W ~ 0) the loss per coordinate is ``(1/d)(E|x_t|^2 - 2 sqrt(Delta) d + d)``,
    the same on the MCM and its clones (they share the mean and the trace); Monte Carlo within error."""
    t, d = SMALL.t, 6
    for spike in SMALL.spike:
        for coupling in SMALL.coupling:
            model = simplicity_bias.model_of(dataclasses.replace(SMALL, dim=d, spike=spike, coupling=coupling))
            signal = np.exp(-2 * t) * (d - 1 + model.beta_u + model.mu**2) + (1 - np.exp(-2 * t)) * d
            exact = (signal - 2 * np.sqrt(1 - np.exp(-2 * t)) * d + d) / d
            measured = small_run.loss.sel(spike=spike, coupling=coupling, step=0).values
            assert np.abs(measured - exact).max() < 5 * np.sqrt(2 * exact**2 / (d * SMALL.test_samples)) * 2


def test_trained_losses_respect_the_clone_minima_and_kurtosis_targets(small_run):
    ds = small_run
    floor = ds.clone_floor.sel(clone="covariance_clone")
    final = ds.loss.isel(step=-1)
    assert float((final.sel(law="covariance_clone") - floor).min()) > -0.01  # no denoiser beats the Bayes loss of a Gaussian
    assert float((final.sel(law="mcm") - ds.loss.isel(step=0).sel(law="mcm")).max()) < 0  # training lowered the loss
    expected = np.exp(-4 * SMALL.t) * -2.0  # Rademacher, planted: e^-4t kappa_4
    np.testing.assert_allclose(ds.kurtosis_target, expected, rtol=1e-6)
    np.testing.assert_allclose(
        ds.clone_floor.sel(clone="mean_clone").sel(spike="cumulant", coupling="independent"),
        float(theory.clone_mmse(theory.MixedCumulantModel(mu=0.0, beta_u=1.0), SMALL.t, 6, "mean_clone")),
        rtol=1e-6,
    )


def test_summary_reports_exponents_with_their_predictions(small_run, tmp_path):
    summary = simplicity_bias.summarize(small_run, SMALL)
    exponents = summary.values["sample_complexity_exponent"]
    assert set(exponents) == {"independent", "correlated"} and set(exponents["independent"]) == {"cumulant"}
    assert exponents["independent"]["cumulant"]["order"] == 4 and exponents["independent"]["cumulant"]["predicted"] == 3.0
    assert exponents["correlated"]["cumulant"]["order"] == 2 and exponents["correlated"]["cumulant"]["predicted"] == 2.0
    assert exponents["independent"]["cumulant"]["predicted_best_step"] == 3.0 and exponents["correlated"]["cumulant"]["predicted_best_step"] == 1.0
    assert np.isnan(exponents["independent"]["cumulant"]["value"])  # one dim: no fit
    assert (
        simplicity_bias.predicted_order(SMALL, "covariance", "independent") == 2
        and simplicity_bias.predicted_order(dataclasses.replace(SMALL, readout="noise"), "covariance", "independent") is None
    )
    path = tmp_path / "summary.json"
    report.write_json(path, dict(summary.values))
    assert json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))["sample_complexity_exponent"]["independent"]["cumulant"]["value"] is None


def test_censored_fit_recovers_a_planted_power_law_through_censoring():
    dims = np.array([8, 16, 32, 64])
    rng = np.random.default_rng(3)
    samples = 5.0 * dims[:, None] ** 2.5 * np.exp(rng.normal(0, 0.3, (4, 9)))
    fit = simplicity_bias.fit_exponent(dims, samples, budget=2 * samples.max())
    assert abs(fit["value"] - 2.5) < 0.15 and fit["ci"][0] < 2.5 < fit["ci"][1]
    budget = np.sort(samples[3])[2]  # six of the nine d = 64 seeds run past the budget
    censored = np.where(samples > budget, np.nan, samples)
    fit = simplicity_bias.fit_exponent(dims, censored, budget=budget)
    assert fit["censored_seeds"] == [0, 0, 0, 6] and fit["median_samples"][3] is None
    assert abs(fit["value"] - 2.5) < 0.25  # censored likelihood: the d = 64 lower bounds still pull
    medians_only = np.polyfit(np.log(dims[:3]), np.log(np.median(samples[:3], axis=1)), 1)[0]
    assert abs(fit["value"] - medians_only) < 0.5


def test_scan_equals_runs():
    """``diffdyn scan --grid learning_rate=...``: one program, each slice equals the run."""
    config = dataclasses.replace(SMALL, spike=("cumulant",), coupling=("correlated",), steps=60, records=4, test_samples=64, generated_samples=0)
    scanned = assert_scan_equals_runs(simplicity_bias, config, "learning_rate", [2.0, 3.0], rtol=1e-6)
    assert scanned.overlap.dims == ("dim", "coupling", "spike", "learning_rate", "seed", "step", "direction")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--latent", "three_point", "--latent-parameter", "0.3"], "latent_parameter"),
        (["--latent", "skewed", "--latent-parameter", "0.2"], "coupling"),  # correlated needs a symmetric latent
        (["--dim", "3"], "dim"),
        (["--threshold", "1.5"], "threshold"),
        (["--steps", "10", "--records", "20"], "records"),
        (["--spike", "mean,bulk"], "spike"),
        (["--coupling", "independent,independent"], "coupling"),
        (["--readout", "both"], "readout"),
        (["--learning-rate", "0"], "learning_rate"),
        (["--learning-rate", "20"], "learning_rate"),  # past the skip's stability limit at d = 12
    ],
)
def test_bad_input_fails_early_with_one_line(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "simplicity-bias", arguments, field)


@pytest.mark.slow
def test_quick_preset_orders_the_exponents(tmp_path):
    """``diffdyn run simplicity-bias`` (the quick preset; about 6 min on the shared 2-core CPU):
    the files, the cumulant's exponent above the covariance's by >= 1 with independent latents and
    well below it with correlated ones, the generated kurtosis of the cumulant runs moving
    from 0 toward the data's."""
    out = tmp_path / "quick"
    done = subprocess.run([sys.executable, "-m", "diffdyn.experiments.cli", "run", "simplicity-bias", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("results.nc", "summary.json", "summary.md", "overlaps.png", "recovery.png", "losses.png", "kurtosis.png"):
        assert (out / name).is_file(), name
    exponents = json.loads((out / "summary.json").read_text())["sample_complexity_exponent"]
    independent, correlated = exponents["independent"], exponents["correlated"]
    assert independent["cumulant"]["value"] - independent["covariance"]["value"] >= 1.0
    assert independent["cumulant"]["value"] - correlated["cumulant"]["value"] >= 0.5
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as results:
        kurtosis = results.generated_kurtosis.sel(spike="cumulant").load()
    assert abs(float(kurtosis.isel(step=0).mean())) < 0.2
    assert float(kurtosis.isel(step=-1).mean()) < -0.3
