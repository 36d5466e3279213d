"""The collapse-refine study: the linear family against its closed form and the collapse law,
scans, the two-stage comparison, bad input; the quick preset end to end (slow)."""

import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics.config import LogGrid
from diffdyn.dynamics.theory import manifolds as theory
from diffdyn.experiments import collapse_refine as study

SUBSPACE = dataclasses.replace(
    study.PRESETS["tiny"],
    manifold=("subspace",),
    intrinsic_dim=(2,),
    ambient_dim=5,
    concentration=0.0,
    n_train=64,
    families=study.FAMILIES,
    sigma=LogGrid(0.2, 0.8, 3),
    num_steps=160,
    num_records=12,
    batch_size=256,
    num_points=4,
    reference_sigma=0.2,
    seeds=2,
)


@pytest.fixture(scope="module")
def subspace_run():
    """Every family on a plane in R^5 with Gaussian latents, where the linear toy is exact."""
    return study.run(SUBSPACE)


def test_dataset_schema(subspace_run):
    ds = subspace_run
    assert ds.effective_rank.dims == ("manifold", "intrinsic_dim", "seed", "family", "parameterisation", "sigma", "step")
    assert ds.effective_rank.shape == (1, 1, 2, 3, 3, 3, len(study.record_steps(160, 12)))
    assert list(ds.parameterisation.values) == list(theory.PARAMETERISATIONS)
    assert ds.denoiser_error.dims[-1] == "part" and ds.jacobian_spectrum.sizes["rank"] == 5
    assert not ds.diverged.any() and "sample_error" not in ds
    np.testing.assert_allclose(ds.tau.isel(step=-1) / ds.tau.isel(step=0), 160.0, rtol=1e-12)


def test_linear_family_follows_its_closed_form_and_collapses_at_the_normal_rate(subspace_run):
    """SGD (fresh noise and minibatches of 256) against the exact gradient-descent closed form on
    the training set's moments (the SGD fluctuations raise the leakage, a norm, by a few 0.01 at
    the largest step, sigma = 0.8); the collapse times against the normal-block law of that
    descent, ``eta ln(threshold) / ln(1 - eta r sigma^2)`` (the flow's ``ln(1/threshold) / (r sigma^2)``
    as eta -> 0): within 10% (checkpoint interpolation) for the closed form, 15% for SGD."""
    ds = subspace_run
    np.testing.assert_allclose(ds.normal_leakage.sel(family="linear"), ds.theory_normal_leakage, atol=0.04)
    np.testing.assert_allclose(ds.effective_rank.sel(family="linear"), ds.theory_effective_rank, atol=0.2)  # tr W of D = 5: unbiased, noisy
    steps = np.asarray(study.record_steps(SUBSPACE.num_steps, SUBSPACE.num_records))
    for name in ds.parameterisation.values:
        learning_rate = ds.tau.sel(parameterisation=name).isel(step=-1).values / steps[-1]  # [manifold, k, seed, sigma]
        sigma = ds.sigma.values[None, None, None, :]
        law = theory.collapse_time(theory.flow_rate(str(name), sigma), sigma, SUBSPACE.collapse_threshold, learning_rate)
        np.testing.assert_allclose(ds.theory_collapse_time.sel(parameterisation=name), law, rtol=0.1)
        np.testing.assert_allclose(ds.collapse_time.sel(family="linear", parameterisation=name), law, rtol=0.15)


def test_every_family_collapses_at_the_normal_rate_to_rank_k(subspace_run):
    """On the plane every family's collapse-time slope is the linear toy's (its linear part does
    the collapse; at eta r sigma^2 up to 0.39 per step descent collapses faster at large sigma than
    the flow, -2.17 / +1.83 instead of -2 / +2); at sigma = 0.2 the effective rank is the exact
    denoiser's 2 s^2 / (s^2 + sigma^2), the normal-bundle SVD gives k = 2, FLIPD 2 within 0.1."""
    summary = study.summarize(subspace_run, SUBSPACE).values
    for slopes in summary["collapse_time_slope"]["subspace"].values():
        assert {name: fit["predicted"] for name, fit in slopes.items()} == pytest.approx({"denoiser": -2.0, "score_weighted": 2.0, "eps": -2.0}, abs=1e-12)
        for fit in slopes.values():
            assert abs(fit["measured"] - fit["linear_toy_on_data"]) < 0.05 and abs(fit["measured"] - fit["predicted"]) < 0.25 and fit["collapsed_runs"] == 6
        assert slopes["score_weighted"]["measured"] - slopes["denoiser"]["measured"] == pytest.approx(4.0, abs=1e-9)
    ranks = summary["final_effective_rank"]["subspace"]["2"]
    assert ranks["exact_denoiser"] == pytest.approx(2 / 1.04, rel=1e-12)
    assert {family: ranks[family] for family in study.FAMILIES} == pytest.approx(dict.fromkeys(study.FAMILIES, 2 / 1.04), abs=0.05)
    estimates = summary["intrinsic_dimension_estimate"]["subspace"]["2"]
    assert estimates["normal_bundle_svd"] == dict.fromkeys((*study.FAMILIES, "exact_score"), 2.0)
    assert estimates["flipd"] == pytest.approx(dict.fromkeys((*study.FAMILIES, "exact_score"), 2.0), abs=0.1)


def test_scan_of_the_radius_equals_runs():
    """``diffdyn scan --grid radius=...``: the latent scale traced inside one program."""
    config = dataclasses.replace(SUBSPACE, intrinsic_dim=(1,), families=("linear",), seeds=1)
    scanned = assert_scan_equals_runs(study, config, "radius", [1.0, 0.7], atol=1e-12)  # errors of O(1e-17): roundoff
    ranks = scanned.optimal_effective_rank.sel(radius=0.7).squeeze()
    np.testing.assert_allclose(ranks, 0.49 / (0.49 + scanned.sigma**2), rtol=1e-12)  # k s^2 / (s^2 + sigma^2)


@pytest.mark.slow  # keeps the default suite within CI time; run with -m slow
def test_two_stage_samples_stay_closer_to_the_manifold():
    """The comparison block alone (circle S^1 with a vMF density, D = 3 and 6, n = 8 and 16, short
    trainings): the learned encoder spans the circle's plane; the ambient model's samples lie
    further from M in the larger D, the decoded latent ones closer than them there; the MMD floor
    is that of two fresh sets of 64 points."""
    config = dataclasses.replace(
        study.PRESETS["tiny"],
        manifold="sphere",
        intrinsic_dim=1,
        concentration=1.0,
        sample_sizes=(8, 16),
        comparison_dims=(3, 6),
        num_steps=300,
        encoder_sigma=0.1,
        edm_steps=300,
        width=16,
        embedding=4,
        num_samples=64,
        heun_steps=8,
        batch_size=16,
    )
    with jax.enable_x64(True):
        result = jax.jit(lambda key: study.comparison(config, key))(jax.random.key(0))
    assert result["sample_error"].shape == (2, 2, 2) and result["encoder_angle"].shape == (2, 2)  # [n, D, model]
    assert float(result["encoder_angle"].max()) < 0.1
    latent, ambient = np.moveaxis(np.asarray(result["sample_distance"]), -1, 0)
    assert np.all(ambient[:, 1] > 1.5 * ambient[:, 0]) and np.all(latent[:, 1] < ambient[:, 1])
    assert 0.0 < float(result["mmd_floor"]) < 0.2


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--manifold", "torus", "--intrinsic-dim", "4", "--ambient-dim", "8"], "ambient_dim"),  # T^4 spans R^8
        (["--comparison-dims", "2,3"], "comparison_dims"),
        (["--sample-sizes", "16,40"], "sample_sizes"),
        (["--manifold", "subspace"], "concentration"),
        (["--manifold", "cube"], "manifold"),
        (["--families", "linear,rbf"], "families"),
        (["--parameterisations", "v"], "parameterisations"),
        (["--radius", "0"], "radius"),
        (["--collapse-threshold", "1.5"], "collapse_threshold"),
        (["--embedding", "5"], "embedding"),
        (["--intrinsic-dim", "0"], "intrinsic_dim"),
    ],
)
def test_bad_input_fails_early_with_one_line(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "collapse-refine", arguments, field)


def test_bad_scan_fails_early(tmp_path, capsys):
    assert_fails_early(
        capsys, tmp_path, "collapse-refine", ["--manifold", "subspace", "--concentration", "0", "--grid", "concentration=0,1"], "concentration", command="scan"
    )


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    """`diffdyn run collapse-refine` (the quick preset): files and headline numbers."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "diffdyn.experiments.cli", "run", "collapse-refine", "--out", str(out)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("results.nc", "summary.json", "summary.md", "effective_rank.png", "collapse_time.png", "sample_complexity.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep"]["failed"] == {}
    for family in ("linear", "conservative"):
        for name, fit in summary["collapse_time_slope"]["sphere"][family].items():
            assert abs(fit["measured"] - fit["predicted"]) < 0.35, (family, name, fit)
    for k in ("1", "2"):
        estimates = summary["intrinsic_dimension_estimate"]["sphere"][k]
        assert abs(estimates["flipd"]["exact_score"] - int(k)) < 0.05 and estimates["normal_bundle_svd"]["exact_score"] == int(k)
        assert abs(estimates["normal_bundle_svd"]["conservative"] - int(k)) < 0.3
    largest = summary["sample_complexity"]["sphere"]["by_ambient_dim"]["16"]
    assert largest["latent_distance"][-1] < largest["ambient_distance"][-1] / 5
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as results:
        assert results.collapse_time.dims == ("manifold", "intrinsic_dim", "seed", "family", "parameterisation", "sigma")
