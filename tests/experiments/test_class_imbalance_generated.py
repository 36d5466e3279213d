"""The class-imbalance study's optional generated samples: memorization fraction per class of a
time-indexed random-features generator against its training time (THEORY.md 7-8, [BUBM] sec. 2)."""

import json

import numpy as np
import pytest
import xarray as xr

from experiments import class_imbalance, cli

# d = 8, p = 256, 6 training points per class: the generator copies almost nothing at tau = 1e2
# and most samples of both classes at tau = 1e8.
GENERATED = class_imbalance.Config(
    dim=8,
    num_features=256,
    base_count=6,
    variance_ratios=(4.0,),
    centroid_norms=(1.0,),
    imbalance_ratios=(1.0,),
    seeds=1,
    num_tau=25,
    num_test=64,
    generate_samples=100,
    generate_taus=(1e2, 1e8),
    generate_num_times=4,
    generate_steps=16,
)


def test_generated_memorization_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(class_imbalance, "PRESETS", {"quick": GENERATED, "paper": class_imbalance.PRESETS["paper"]})
    out = tmp_path / "run"
    assert cli.main(["run", "class-imbalance", "--out", str(out)]) == 0
    with xr.open_dataset(out / "results.nc") as dataset:
        fractions = dataset.memorization_fraction_generated.load()
        total = dataset.memorization_fraction_generated_total.load()
    assert fractions.dims == ("seed", "variance_ratio", "centroid_norm", "imbalance_ratio", "class_", "tau_sample")
    early, late = (fractions.sel(tau_sample=tau).values.ravel() for tau in (1e2, 1e8))
    assert np.all(early < 0.1) and np.all(late > 0.7)  # measured (0.00, 0.03) and (0.79, 0.86)
    assert float(total.sel(tau_sample=1e2).max()) < 0.1 and float(total.sel(tau_sample=1e8).min()) > 0.7
    summary = json.loads((out / "summary.json").read_text())
    generated = summary["generated_samples"]
    assert generated["tau_sample"] == [1e2, 1e8]
    np.testing.assert_allclose(generated["rows"][0]["class_1"], fractions.sel(class_="class_1").values.ravel())
    assert "Memorization fraction of generated samples" in (out / "summary.md").read_text()
    assert (out / "generated_memorization.png").exists()


@pytest.mark.parametrize(
    "arguments, field",
    [
        (["--generate-samples", "-1"], "generate_samples"),
        (["--generate-taus", "0,1e3"], "generate_taus"),
        (["--generate-time-min", "2", "--generate-time-max", "1"], "generate_time_min"),
        (["--generate-num-times", "1"], "generate_num_times"),
        (["--generate-steps", "1"], "generate_steps"),
        (["--generate-bias", "-0.5"], "generate_bias"),
    ],
)
def test_bad_generator_input_fails_early(tmp_path, capsys, arguments, field):
    assert cli.main(["run", "class-imbalance", "--out", str(tmp_path / "x"), *arguments]) == 2
    assert capsys.readouterr().err.startswith(f"diffdyn: error: {field}:")
    assert not (tmp_path / "x").exists()
