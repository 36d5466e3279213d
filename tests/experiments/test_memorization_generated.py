"""The memorization study's optional generated samples ([BUBM] sec. 2, THEORY.md 7-8): the
fraction of generated samples that copy a training point against the generator's training time,
and the generated-sample memorization time tau_mem_generated per training-set size."""

import json

import numpy as np
import pytest
import xarray as xr

from dynamics import measures
from experiments import cli

# d = 8, p = 128, n = 8 and 16: the generator copies nothing at tau = 10 and most samples of the
# small training set at tau = 1e8 (measured 0.85); the larger set reaches f_mem = 0.1 about 11x later.
TINY = ["--dim", "8", "--psi-p", "16", "--psi-n", "1,2", "--num-tau", "30", "--tau-max", "1e5",
        "--simulate-tau-max", "0", "--num-bins", "8", "--generate-samples", "100",
        "--generate-taus", "1e1,1e2,1e3,1e4,1e5,1e6,1e8", "--generate-num-times", "4", "--generate-steps", "16"]


def test_generated_memorization_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "memorization", "--out", str(out), *TINY]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as dataset:
        fractions = dataset.memorization_fraction_generated.load()
        times = dataset.tau_mem_generated.load()
    assert fractions.dims == ("psi_n", "tau_sample") and fractions.shape == (2, 7)
    assert np.all(fractions.sel(tau_sample=1e1) < 0.03)  # the generator has not learned the points yet
    assert float(fractions.sel(psi_n=1.0, tau_sample=1e8)) > 0.5  # it ends copying the small set
    assert np.all(fractions.sel(tau_sample=1e8) > fractions.sel(tau_sample=1e1) + 0.2)
    assert np.all(np.isfinite(times)) and float(times.sel(psi_n=2.0)) > 3 * float(times.sel(psi_n=1.0))
    # the time is where the linearly (in log tau) interpolated f_mem reaches 0.1
    for psi_n in (1.0, 2.0):
        level = np.interp(np.log(float(times.sel(psi_n=psi_n))), np.log(fractions.tau_sample), fractions.sel(psi_n=psi_n))
        assert level == pytest.approx(0.1, abs=1e-6)
    generated = json.loads((out / "summary.json").read_text())["generated_samples"]
    assert generated["tau_mem_generated_slope"] == pytest.approx(np.log(times[1] / times[0]) / np.log(2.0), rel=1e-9)
    assert set(generated["tau_mem_generated_slope_by_level"]) == {"0.05", "0.1", "0.25"}
    assert "Memorization fraction of generated samples" in (out / "summary.md").read_text()
    assert (out / "generated_memorization.png").is_file()


def test_first_reach_time_interpolates_in_log_tau_and_is_nan_when_never_reached():
    taus = np.array([1.0, 10.0, 100.0, 1000.0])
    curve = np.array([0.0, 0.05, 0.15, 0.2])
    assert float(measures.first_reach_time(taus, curve, 0.1)) == pytest.approx(10 ** 1.5, rel=1e-12)
    assert float(measures.first_reach_time(taus, curve, 0.0)) == 1.0
    assert np.isnan(measures.first_reach_time(taus, curve, 0.25))


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (["--generate-samples", "-1"], "generate_samples"),
        (["--generate-taus", "0,1e3"], "generate_taus"),
        (["--generate-time-min", "2", "--generate-time-max", "1"], "generate_time_min"),
        (["--generate-bias", "-0.5"], "generate_bias"),
        (["--generate-fraction-level", "0"], "generate_fraction_level"),
        (["--generate-fraction-level", "1.5"], "generate_fraction_level"),
    ],
)
def test_bad_generator_input_fails_early(tmp_path, capsys, arguments, field):
    out = tmp_path / "never"
    assert cli.main(["run", "memorization", "--out", str(out), *arguments]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"diffdyn: error: {field}: ")
    assert not out.exists()
