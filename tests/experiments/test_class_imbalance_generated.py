"""The class-imbalance study's optional generated samples: the copied fraction per class of a
time-indexed random-features generator against its training time (docs/theory.md sections 7-8,
[BUBM] sec. 2)."""

import json

import numpy as np
import xarray as xr

from diffdyn.dynamics.config import LogGrid
from diffdyn.experiments import class_imbalance, cli
from diffdyn.models.classes import ClassProblem
from diffdyn.models.denoisers.random_features import Generator

# d = 8, p = 256, 6 training points per class: the generator copies almost nothing at tau = 1e2
# and most samples of both classes at tau = 1e8.
GENERATED = class_imbalance.Config(
    variance_ratio=(4.0,),
    centroid_norm=(1.0,),
    imbalance_ratio=(1.0,),
    seeds=1,
    problem=ClassProblem(dim=8, num_features=256, base_count=6, num_test=64, tau=LogGrid(1e-3, 1e6, 25)),
    generator=Generator(samples=100, taus=(1e2, 1e8), time=LogGrid(0.01, 3.0, 4), steps=16),
)


def test_generated_memorization_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setitem(class_imbalance.PRESETS, "quick", GENERATED)
    out = tmp_path / "run"
    assert cli.main(["run", "class-imbalance", "--out", str(out)]) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as dataset:
        fractions = dataset.memorization_fraction_generated.load()
        total = dataset.memorization_fraction_generated_total.load()
    assert fractions.dims == ("variance_ratio", "centroid_norm", "imbalance_ratio", "seed", "class_", "tau_sample")
    early, late = (fractions.sel(tau_sample=tau).values.ravel() for tau in (1e2, 1e8))
    assert np.all(early < 0.1) and np.all(late > 0.7), (early, late)  # measured (0.00, 0.03) and (0.90, 0.90)
    assert float(total.sel(tau_sample=1e2).max()) < 0.1 and float(total.sel(tau_sample=1e8).min()) > 0.7
    summary = json.loads((out / "summary.json").read_text())
    generated = summary["generated_samples"]
    assert generated["tau_sample"] == [1e2, 1e8]
    np.testing.assert_allclose(np.asarray(generated["per_class"]).ravel(), fractions.values.ravel())
    assert "higher-variance class copied more" in (out / "summary.md").read_text()
    assert (out / "generated_memorization.png").is_file()
