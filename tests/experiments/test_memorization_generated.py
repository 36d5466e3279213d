"""The memorization study's optional generated samples ([BUBM] sec. 2, docs/theory.md sections 7-8):
the fraction of generated samples that copy a training point against the generator's training
time, and the generated-sample memorization time tau_mem_generated per training-set size."""

import json

import numpy as np
import pytest
import xarray as xr
from helpers import assert_fails_early

from diffdyn.dynamics import measures
from diffdyn.experiments import cli

# d = 8, p = 128, n = 8 and 16: the generator copies nothing at tau = 10 and most samples of the
# small training set at tau = 1e8; the larger set reaches f_mem = 0.1 several times later.
SMALL = [
    "--dim",
    "8",
    "--psi-p",
    "16",
    "--psi-n",
    "1,2",
    "--tau.num",
    "30",
    "--tau.high",
    "1e5",
    "--simulate-tau-max",
    "0",
    "--num-bins",
    "8",
    "--generator.samples",
    "100",
    "--generator.taus",
    "1e1,1e2,1e3,1e4,1e5,1e6,1e8",
    "--generator.time.num",
    "4",
    "--generator.steps",
    "16",
]


@pytest.mark.slow  # keeps the default suite within CI time; run with -m slow
def test_generated_memorization_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "memorization", "--out", str(out), *SMALL]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as dataset:
        fractions = dataset.memorization_fraction.load().squeeze("seed", drop=True)
        times = dataset.tau_mem_generated.load().squeeze("seed", drop=True)
    assert fractions.dims == ("psi_n", "tau_sample") and fractions.shape == (2, 7)
    assert times.dims == ("psi_n", "copy_level") and list(times.copy_level.values) == [0.1, 0.05, 0.25]
    assert np.all(fractions.sel(tau_sample=1e1) < 0.03)  # the generator has not learned the points yet
    assert float(fractions.sel(psi_n=1.0, tau_sample=1e8)) > 0.5  # it ends copying the small set
    assert np.all(fractions.sel(tau_sample=1e8) > fractions.sel(tau_sample=1e1) + 0.2)
    headline = times.sel(copy_level=0.1)
    assert np.all(np.isfinite(headline)) and float(headline.sel(psi_n=2.0)) > 3 * float(headline.sel(psi_n=1.0))
    # each time is where the linearly (in log tau) interpolated f_mem first reaches its level
    log_taus = np.log(fractions.tau_sample.values)
    for psi_n in (1.0, 2.0):
        curve = fractions.sel(psi_n=psi_n).values
        for level, time in zip(times.copy_level.values, times.sel(psi_n=psi_n).values):
            if np.isfinite(time):
                assert np.interp(np.log(time), log_taus, curve) == pytest.approx(level, abs=1e-6)
            else:
                assert curve.max() < level
    generated = json.loads((out / "summary.json").read_text())["generated_samples"]
    expected = np.log(float(headline.sel(psi_n=2.0)) / float(headline.sel(psi_n=1.0))) / np.log(2.0)
    assert generated["tau_mem_generated_slope_by_level"]["0.1"] == pytest.approx(expected, rel=1e-9)
    assert set(generated["tau_mem_generated_slope_by_level"]) == {"0.1", "0.05", "0.25"}
    assert "| tau_mem_generated (f_mem = 0.1) | psi_n=1 |" in (out / "summary.md").read_text()
    assert (out / "generated_memorization.png").is_file()


def test_first_reach_time_interpolates_in_log_tau_and_is_nan_when_never_reached():
    taus = np.array([1.0, 10.0, 100.0, 1000.0])
    curve = np.array([0.0, 0.05, 0.15, 0.2])
    assert float(measures.first_reach_time(taus, curve, 0.1)) == pytest.approx(10**1.5, rel=1e-12)
    assert float(measures.first_reach_time(taus, curve, 0.0)) == 1.0
    assert np.isnan(measures.first_reach_time(taus, curve, 0.25))


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--generator.samples", "-1"], "generator.samples"),
        (["--generator.taus", "0,1e3"], "generator.taus"),
        (["--generator.taus", ""], "generator.taus"),
        (["--generator.time.low", "2", "--generator.time.high", "1"], "generator.time.low"),
        (["--generator.bias", "-0.5"], "generator.bias"),
        (["--generator.steps", "1"], "generator.steps"),
        (["--copy-levels", "0"], "copy_levels"),
        (["--copy-levels", "1.5"], "copy_levels"),
        (["--copy-levels", "0.1,0.1"], "copy_levels"),
    ],
)
def test_bad_generator_input_fails_early(tmp_path, capsys, arguments, field):
    assert_fails_early(capsys, tmp_path, "memorization", arguments, field)
