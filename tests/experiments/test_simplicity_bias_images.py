"""The image simplicity-bias study: exact step-0 losses, the Wiener floor, the in-graph measures,
the order in which the clones separate, scan == run, the CLI, bad input."""

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early, assert_scan_equals_runs

from diffdyn.dynamics import config as configs
from diffdyn.dynamics import edm
from diffdyn.dynamics.training import log_spaced_steps
from diffdyn.experiments import cli
from diffdyn.experiments import simplicity_bias_images as study

# digits, MLP-UNet of width 64: the mean-only clone separates by step ~130, the Gaussian clone at sigma = 1 by ~700 (20 s)
OVERRIDES = [
    "--width",
    "64",
    "--depth",
    "2",
    "--embedding",
    "32",
    "--batch-size",
    "128",
    "--num-steps",
    "1500",
    "--num-records",
    "10",
    "--sigmas",
    "0.03,0.3,1",
]
SMALL = cli.build_config(study, "quick", OVERRIDES)
# the null control: Gaussian data are their own Gaussian clone (300 steps, width 32)
NULL = dataclasses.replace(
    study.PRESETS["tiny"], dataset=("gaussian",), num_images=2000, width=32, embedding=16, batch_size=128, num_steps=300, num_records=5, sigmas=(0.1, 1.0)
)


class Small(NamedTuple):
    out: Path
    dataset: xr.Dataset
    summary: dict


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """`diffdyn run simplicity-bias-images` with SMALL's overrides, once: its folder, results and summary."""
    out = tmp_path_factory.mktemp("small")
    assert cli.main(["run", "simplicity-bias-images", "--out", str(out), *OVERRIDES]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as results:
        dataset = results.load()
    return Small(out, dataset, json.loads((out / "summary.json").read_text(), parse_constant=lambda name: pytest.fail(name)))


def host_data(config, dataset="digits", architecture="mlp"):
    return study.evaluation_for(configs.at_point(config, {"dataset": dataset, "architecture": architecture}))


def assert_untrained_losses(at_start: xr.Dataset, data: study.Evaluation, sigmas: tuple[float, ...]) -> None:
    """Step-0 losses ``(seed, source, sigma)`` of the untrained denoiser ``c_skip(sigma) x``, exact
    sample by sample at the fixed draws; in expectation ``(1 - c)^2 (||mu||^2 + Tr Sigma) / d +
    c^2 sigma^2``, the same on the data and both clones."""
    sigmas = np.asarray(sigmas)
    c = np.asarray(edm.preconditioning(sigmas).c_skip)[:, None, None, None]
    per_sample = np.mean(((c - 1) * data.sets[None] + c * sigmas[:, None, None, None] * data.noise[:, None]) ** 2, axis=-1)  # (sigma, source, sample)
    for seed in range(at_start.seed.size):
        np.testing.assert_allclose(at_start.loss.isel(seed=seed).T, per_sample.mean(-1), rtol=2e-5)
        np.testing.assert_allclose(at_start.loss_error.isel(seed=seed).T, per_sample.std(-1, ddof=1) / np.sqrt(per_sample.shape[-1]), rtol=1e-3)
    power = np.mean(np.sum(data.train**2, axis=1)) / data.train.shape[1]
    expected = (1 - c[:, 0, 0, 0]) ** 2 * power + c[:, 0, 0, 0] ** 2 * sigmas**2
    deviation = (at_start.loss.isel(seed=0) - expected) / at_start.loss_error.isel(seed=0)
    assert float(np.abs(deviation).max()) < 4, deviation.values


def test_dataset_schema(small):
    ds = small.dataset
    assert ds.loss.dims == ("dataset", "architecture", "seed", "source", "step", "sigma")
    assert ds.separation_step.dims == ("dataset", "architecture", "seed", "clone", "sigma")
    assert list(ds.source.values) == ["data", "gaussian_clone", "mean_clone"] and list(ds.clone.values) == ["gaussian_clone", "mean_clone"]
    assert list(ds.step.values) == list(log_spaced_steps(1500, 10)) and ds.step.values[0] == 0
    np.testing.assert_allclose(ds.sigma, SMALL.sigmas)
    assert ds.loss.dtype == np.float32 and ds.attrs["precision"] == "float32"
    assert not ds.diverged.any() and small.summary["sweep"]["failed"] == {} and small.summary["preset"] == "quick"


def test_step_zero_losses_are_those_of_the_untrained_denoiser(small):
    """The zero output layer makes the untrained MLP-UNet exactly ``c_skip(sigma) x``."""
    assert_untrained_losses(small.dataset.isel(step=0, dataset=0, architecture=0), host_data(SMALL), SMALL.sigmas)


def test_clone_losses_stay_above_the_wiener_optimum(small):
    data = host_data(SMALL)
    covariance = np.cov(data.train.T, bias=True)
    sigmas = np.asarray(SMALL.sigmas)[:, None, None]
    wiener = (sigmas[:, 0, 0] ** 2) * np.trace(covariance @ np.linalg.inv(covariance + sigmas**2 * np.eye(64)), axis1=1, axis2=2) / 64
    ds = small.dataset.isel(dataset=0, architecture=0)
    np.testing.assert_allclose(ds.optimal_loss.sel(clone="gaussian_clone").isel(seed=0), wiener, rtol=1e-5)
    np.testing.assert_allclose(
        ds.optimal_loss.sel(clone="mean_clone").isel(seed=0),
        sigmas[:, 0, 0] ** 2 * np.trace(covariance) / (np.trace(covariance) + 64 * sigmas[:, 0, 0] ** 2),
        rtol=1e-5,
    )
    for clone in study.CLONES:
        excess = (ds.loss.sel(source=clone) - ds.optimal_loss.sel(clone=clone)) / ds.loss_error.sel(source=clone)
        assert float(excess.min()) > -4, clone


def test_in_graph_measures_follow_from_the_losses(small):
    ds = small.dataset.isel(dataset=0, architecture=0)
    gap = (ds.loss.sel(source="data").values[:, None] - ds.loss.sel(source=list(study.CLONES)).values) / ds.loss.sel(source=list(study.CLONES)).values
    np.testing.assert_allclose(ds.gap, gap, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ds.final_gap, ds.gap.isel(step=-1))
    clones = ds.sel(source=list(study.CLONES))
    gap_error = np.hypot(ds.loss_error.sel(source="data").values[:, None], (1 + gap) * clones.loss_error.values) / clones.loss.values
    np.testing.assert_allclose(ds.gap_error, gap_error, rtol=1e-4)
    apart = (np.abs(ds.gap.values) > SMALL.threshold) & (np.abs(ds.gap.values) > SMALL.significance * ds.gap_error.values)  # (seed, clone, step, sigma)
    for index in np.ndindex(apart.shape[0], apart.shape[1], apart.shape[3]):
        run = apart[index[0], index[1], :, index[2]]
        lasting = [bool(run[i:].all()) for i in range(run.size)]
        expected = ds.step.values[lasting.index(True)] if run[-1] else np.nan
        np.testing.assert_equal(float(ds.separation_step.values[index]), expected)


def test_the_mean_only_clone_separates_before_the_gaussian_clone(small):
    """[BMG]: the mean (and total power) is learned before the covariance and the covariance
    before higher cumulants. At sigma = 0.3 and 1 every seed separates from the mean-only clone
    first; at sigma = 1 the held-out images end up denoised better than their Gaussian clone."""
    ds = small.dataset.isel(dataset=0, architecture=0)
    steps = ds.separation_step.sel(sigma=[0.3, 1.0])
    mean_clone, gaussian_clone = steps.sel(clone="mean_clone"), steps.sel(clone="gaussian_clone")
    assert np.isfinite(mean_clone).all()
    assert bool(((mean_clone < gaussian_clone) | np.isnan(gaussian_clone)).all())
    assert np.isfinite(gaussian_clone.sel(sigma=1.0)).all()
    assert float(ds.final_gap.sel(clone="gaussian_clone", sigma=1.0).max()) < -SMALL.threshold
    assert float(ds.final_gap.sel(clone="mean_clone").max()) < 0
    row = next(row for row in small.summary["rows"] if row["quantity"].startswith("fraction where the mean-only clone separates no later"))
    assert row["measured"] == 1.0


def test_cli_run_writes_files_and_the_table(small):
    for name in ("results.nc", "config.json", "summary.json", "summary.md", "losses.png", "gap.png"):
        assert (small.out / name).is_file(), name
    entry = small.summary["table"]["digits/mlp"]["gaussian_clone"]["1"]
    assert entry["final_gap"] == pytest.approx(float(small.dataset.final_gap.sel(clone="gaussian_clone", sigma=1.0).mean()), rel=1e-6)
    assert entry["separated_seeds"] == 2
    assert "| separation step vs mean_clone | digits/mlp, sigma=1 |" in (small.out / "summary.md").read_text()
    assert json.loads((small.out / "config.json").read_text())["num_steps"] == 1500


def test_scan_of_the_learning_rate_equals_the_runs_and_gaussian_data_never_leave_their_clone():
    """One program for both learning rates (float32: equal up to rounding). Null control: on
    Gaussian data the held-out loss stays with the Gaussian clone's (|gap| below the threshold at
    every checkpoint), while the covariance is learned (the mean-only clone separates at sigma = 1)."""
    scanned = assert_scan_equals_runs(study, NULL, "learning_rate", [1e-3, 3e-3], rtol=1e-5, atol=1e-6)
    assert scanned.loss.dims == ("dataset", "architecture", "learning_rate", "seed", "source", "step", "sigma")
    trained = scanned.loss.isel(step=-1)
    assert not np.allclose(trained.sel(learning_rate=1e-3), trained.sel(learning_rate=3e-3), rtol=1e-4)
    assert float(np.abs(scanned.gap.sel(clone="gaussian_clone")).max()) < NULL.threshold / 2
    assert np.isnan(scanned.separation_step.sel(clone="gaussian_clone")).all()
    assert np.isfinite(scanned.separation_step.sel(clone="mean_clone", sigma=1.0)).all()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--dataset", "digits,svhn"], "dataset"),
        (["--architecture", "transformer"], "architecture"),
        (["--held-out", "1.5"], "held_out"),
        (["--held-out", "0"], "held_out"),
        (["--sigmas", "0.1,-1"], "sigmas"),
        (["--sigmas", "1,0.1"], "sigmas"),
        (["--threshold", "0"], "threshold"),
        (["--embedding", "33"], "embedding"),
        (["--num-records", "50", "--num-steps", "20"], "num_records"),
        (["--dataset", "mnist"], "data_path"),
        (["--dataset", "mnist", "--data-path", "/no/such/dir"], "data_path"),
        (["--architecture", "unet", "--levels", "4"], "levels"),  # digits are 8x8
        (["--learning-rate", "-1"], "learning_rate"),
        (["--seeds", "0"], "seeds"),
    ],
)
def test_bad_input_fails_early_with_one_line(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "simplicity-bias-images", arguments, field)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    """`diffdyn run simplicity-bias-images` (digits, MLP-UNet, 3000 steps, 2 seeds; ~70 s on 2 cores)."""
    assert cli.main(["run", "simplicity-bias-images", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {(row["quantity"], row["where"]): row for row in summary["rows"]}
    assert rows[("fraction where the mean-only clone separates no later", "digits/mlp")]["measured"] == 1.0
    assert abs(rows[("max |L_data - L_clone| / MC error at step 0", "digits/mlp")]["measured"]) < 4
    assert rows[("min (L_clone - Wiener loss) / MC error", "digits/mlp")]["measured"] > -4
    table = summary["table"]["digits/mlp"]
    for sigma in ("0.03", "0.1", "0.3", "1"):
        assert table["gaussian_clone"][sigma]["separated_seeds"] == 2
        assert table["gaussian_clone"][sigma]["final_gap"] < -0.2
        assert table["mean_clone"][sigma]["separation_step"] < table["gaussian_clone"][sigma]["separation_step"]


@pytest.mark.slow
def test_unet_on_faces_starts_as_the_untrained_denoiser_and_learns():
    """The conv U-Net on 16x16 faces (image-shaped samples): exact step-0 losses (zero output
    convolution), and training lowers the held-out loss at sigma = 0.3."""
    config = dataclasses.replace(
        NULL, dataset=("faces",), architecture=("unet",), num_images=0, base_channels=4, batch_size=32, num_steps=100, sigmas=(0.03, 0.3)
    )
    ds = study.run(config).isel(dataset=0, architecture=0)
    assert not ds.diverged.any()
    assert_untrained_losses(ds.isel(step=0), host_data(config, "faces", "unet"), config.sigmas)
    held_out = ds.loss.sel(source="data", sigma=0.3).isel(seed=0)
    assert float(held_out.isel(step=-1)) < 0.9 * float(held_out.isel(step=0))
