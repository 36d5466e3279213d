"""The speciation study: measured vs predicted speciation times, commitment times and minority
delays; a scan equal to its runs; the CLI end to end; bad input."""

import json

import jax
import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics.theory import speciation as theory
from diffdyn.experiments import cli, speciation
from diffdyn.models.distributions import backward

SMALL = ["--dim", "8", "--omega", "0.5,0.9", "--num-pairs", "150", "--num-times", "9", "--num-steps", "30", "--bisection-steps", "24"]
CONFIG = cli.build_config(speciation, "quick", SMALL)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """``diffdyn run speciation`` at d = 8, omega = 0.5 and 0.9: output folder, dataset, summary."""
    out = tmp_path_factory.mktemp("speciation") / "run"
    assert cli.main(["run", "speciation", "--out", str(out), *SMALL]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as results:
        return out, results.load(), json.loads((out / "summary.json").read_text())


def test_files_and_schema(small_run):
    out, ds, summary = small_run
    for name in ("results.nc", "config.json", "summary.json", "summary.md", "speciation.png"):
        assert (out / name).is_file(), name
    assert ds.same_class.dims == ("dim", "omega", "seed", "source", "reference", "time_index")
    assert list(ds.source.values) == ["theory", "measured"] and list(ds.reference.values) == ["majority", "minority"]
    assert summary["sweep"]["failed"] == {} and summary["sweep"]["runs"] == 2
    assert "| minority delay (exact drift zeros) | d=8, omega=0.9 |" in (out / "summary.md").read_text()


def test_speciation_time_and_minority_delay(small_run):
    _, ds, summary = small_run
    # Cloning vs the exact 1-D curve: Monte Carlo (2 x 150 pairs per time) + Euler-Maruyama error.
    assert summary["max_abs_speciation_time_minus_exact_curve"] < 0.08
    assert summary["max_abs_speciation_time_minus_half_log_lambda"] < 0.12  # offset 0.022 at d = 8
    # One class's 150 pairs per time, and 30 Euler-Maruyama steps commit late (crossing early):
    # measured 0.089 (balanced minority 1.033 vs 1.122).
    assert summary["max_abs_minority_commitment_time_minus_exact_curve"] < 0.15
    # Basins from exact scores: exact up to bisection (2^-24 of the bracket) and grid.
    assert summary["max_abs_minority_delay_error"] < 2e-4
    point = next(p for p in summary["points"] if p["omega"] == 0.9)
    np.testing.assert_allclose(point["minority_delay_predicted"], 0.5052, atol=1e-3)
    np.testing.assert_allclose(point["basin_time_measured"], point["basin_time_predicted"], atol=1e-4)
    # Clones agree with certainty near the data and as often as chance far from it (balanced).
    balanced = ds.same_class.sel(omega=0.5, dim=8, source="measured").mean(("seed", "reference")).values
    assert balanced[0] > 0.85 and balanced[-1] < 0.65
    np.testing.assert_allclose(ds.balanced_speciation_time, 0.5 * np.log(1 + 8), rtol=1e-14)


def test_exact_curves_obey_detailed_balance(small_run):
    """rho_0 P(0 -> 1) = rho_1 P(1 -> 0) makes the rho-pooled agreement an affine function of each
    class's P(stay), ``omega - (1 - omega) + 2 (1 - omega) P(stay in 1)``, whose midpoint levels
    match: on the exact curves the speciation time equals both commitment times."""
    _, ds, _ = small_run
    exact = ds.sel(source="theory")
    for reference in ("majority", "minority"):
        np.testing.assert_allclose(exact.commitment_time.sel(reference=reference), exact.speciation_time, rtol=1e-8)
    # and the pooled P(agree) = the pooled P(stay) (Bayes), on the exact curves up to the 81-node
    # Gauss-Hermite error at the earliest times (signal a ~ 3: measured 4e-6)
    weights = np.array([[0.5, 0.5], [0.9, 0.1]])  # rho per omega of the grid
    pool = lambda curves: np.einsum("oc,dosct->dost", weights, curves.transpose("dim", "omega", "seed", "reference", "time_index").values)
    np.testing.assert_allclose(pool(exact.same_class), pool(exact.stay_in_class), atol=1e-5)


def test_scan_equals_runs_and_follows_theory(small_run):
    """``diffdyn scan --grid centroid_norm=...`` (mu~ traced: one program) equals the runs; the
    run at mu~ = 1 is the CLI's; t_S = 1/2 ln(1 + d mu~^2) and the cloning curves are
    :func:`diffdyn.models.distributions.backward.commitment_curves` with the run key fold_in(key(0), 0)."""
    scanned = assert_scan_equals_runs(speciation, CONFIG, "centroid_norm", [1.0, 1.5])
    assert scanned.same_class.dims == ("dim", "omega", "centroid_norm", "seed", "source", "reference", "time_index")
    xr.testing.assert_allclose(scanned.same_class.sel(centroid_norm=1.0, drop=True), small_run[1].same_class, rtol=1e-12)
    wider = scanned.sel(centroid_norm=1.5, dim=8, seed=0)
    np.testing.assert_allclose(wider.balanced_speciation_time, 0.5 * np.log(1 + 8 * 1.5**2), rtol=1e-14)
    point = speciation.mixture_at(speciation.Config(dim=8, omega=0.9, centroid_norm=1.5))
    times = wider.clone_time.sel(omega=0.9).values
    key = jax.random.fold_in(jax.random.key(CONFIG.seed), 0)
    curves = jax.jit(backward.commitment_curves, static_argnames=("num_pairs", "t_end", "num_steps"))
    same, stay = curves(point, key, times, num_pairs=CONFIG.num_pairs, t_end=CONFIG.t_end, num_steps=CONFIG.num_steps)
    np.testing.assert_allclose(wider.same_class.sel(omega=0.9, source="measured"), same, rtol=1e-10)
    np.testing.assert_allclose(wider.stay_in_class.sel(omega=0.9, source="measured"), stay, rtol=1e-10)
    delays = wider.basin_time.sel(omega=0.5) - wider.basin_time.sel(omega=0.9)
    np.testing.assert_allclose(delays, theory.minority_delay(0.9), atol=2e-4)  # independent of mu~


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--omega", "0.9,0.99"], "omega"),  # the balanced reference is missing
        (["--omega", "0.5,1.0"], "omega"),
        (["--omega", "0.4,0.5"], "omega"),
        (["--dim", "0"], "dim"),
        (["--num-times", "2"], "num_times"),
        (["--centroid-norm", "0"], "centroid_norm"),
        (["--t-end", "0.7"], "t_end"),
        (["--num-grid", "50"], "num_grid"),
    ],
)
def test_bad_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "speciation", arguments, field)


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--grid", "omega=0.9,0.99"], "omega"),  # every scan keeps the balanced reference
        (["--grid", "centroid_norm=0,1"], "centroid_norm"),
        (["--grid", "window=-1"], "window"),
        (["--grid", "seed=1,2"], "seed"),
    ],
)
def test_bad_scan_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "speciation", arguments, field, command="scan")
