"""The sweep engine on a toy study: grids, keys, chunking, failure masks, storage, programs.

The same guarantees on the real studies (8 devices == 1, kill -9 + resume, two processes) are in
``tests/experiments/test_engine.py``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
import toy_study
import xarray as xr

from diffdyn.dynamics import config as configs
from diffdyn.dynamics import status, sweep
from diffdyn.dynamics.sweep import execute
from diffdyn.dynamics.validation import ConfigError

CONFIG = dataclasses.replace(toy_study.Config(), learning_rate=(0.05, 0.2))
EXTRA = {"scale": [0.0, 1.0, 2.0]}


JITTED_POINT = jax.jit(toy_study.point, static_argnums=1)


def single_run(config, seed: int, values: dict):
    """One run alone, jitted, with the key that the engine documents for seed ``seed``."""
    key = jax.random.fold_in(jax.random.key(config.seed), seed)
    return JITTED_POINT(key, configs.at_point(config, values))


def run_sweep(config=CONFIG, extra=EXTRA, **options):
    options.setdefault("progress", False)
    with jax.enable_x64(True):
        return sweep.sweep(toy_study, config, extra, **options)


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"nope": [1]}, "nope"),
        ({"seed": [1]}, "seed"),
        ({"seeds": [1]}, "seeds"),
        ({"scale": []}, "scale"),
        ({"scale": ["fast"]}, "scale"),
        ({"scale": [0.1, 0.1]}, "scale"),
        ({"scale": [-1.0]}, "scale"),
        ({"learning_rate": [-1.0]}, "learning_rate"),
        ({"dim": [2.5]}, "dim"),
        ({"dim": [0]}, "dim"),
        ({"label": ["z"]}, "label"),
    ],
)
def test_bad_grids_fail_before_any_compile(extra, field):
    before = execute.TRACES[toy_study.__name__]
    with pytest.raises(ConfigError, match=field):
        run_sweep(extra=extra)
    assert execute.TRACES[toy_study.__name__] == before


def test_parse_grid_option_and_bytes():
    assert sweep.parse_grid_option("learning-rate=0.1, 1") == ("learning_rate", ["0.1", "1"])
    assert sweep.parse_bytes("2GiB") == 2 * 2**30
    assert sweep.parse_bytes("512MB") == 512 * 2**20
    assert sweep.parse_bytes(1e6) == 10**6
    for bad in ("lots", "-1GB"):
        with pytest.raises(ConfigError, match="max_memory"):
            sweep.parse_bytes(bad)


def test_every_run_equals_the_same_run_alone(capsys):
    result = run_sweep(dataclasses.replace(CONFIG, seeds=3), progress=None)  # progress bar: only on a terminal
    assert capsys.readouterr().err == ""
    dataset = result.dataset
    assert dataset.loss.dims == ("learning_rate", "scale", "seed", "step")
    assert dataset.loss.shape == (2, 3, 3, CONFIG.num_steps)
    assert dataset.loss.attrs["long_name"] == "squared error"
    assert result.summary["runs"] == 18 and result.summary["failed"] == {}
    for lr in CONFIG.learning_rate:
        for scale in EXTRA["scale"]:
            for seed in range(3):
                alone = single_run(CONFIG, seed, {"learning_rate": lr, "scale": scale})
                swept = dataset.sel(learning_rate=lr, scale=scale, seed=seed)
                np.testing.assert_allclose(swept.loss.values, alone["loss"], rtol=1e-12, atol=1e-12)
                np.testing.assert_array_equal(swept.steps.values, alone["steps"])


def test_results_do_not_depend_on_chunk_size_or_grid_shape():
    config = dataclasses.replace(CONFIG, seeds=2)
    whole = run_sweep(config).dataset
    chunked = run_sweep(config, chunk_size=5).dataset  # 12 runs: two full chunks and a padded one
    xr.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    # a sub-grid (another shape) gives the same numbers for its runs: keys depend on the seed only
    sub = run_sweep(dataclasses.replace(config, learning_rate=(0.2,)), {"scale": [2.0]}).dataset
    xr.testing.assert_allclose(sub.loss.sel(scale=2.0, learning_rate=0.2), whole.loss.sel(scale=2.0, learning_rate=0.2), rtol=1e-12, atol=1e-12)


def test_second_grid_of_the_same_shapes_does_not_recompile():
    first = run_sweep(dataclasses.replace(CONFIG, learning_rate=(0.01, 0.02), seeds=2), {"scale": [0.5, 0.7, 0.9]})
    second = run_sweep(dataclasses.replace(CONFIG, learning_rate=(0.03, 0.04), seeds=2, stiffness=3.0), {"scale": [1.5, 1.7, 1.9]})
    assert first.summary["compiles"] <= 1
    assert second.summary["compiles"] == 0  # other traced values, swept or not
    assert not np.allclose(first.dataset.loss, second.dataset.loss)


def test_diverging_runs_are_masked_and_counted_without_touching_the_others():
    # the Gram matrix of 8 Gaussian samples in 4-d has eigenvalues ~0.1..4: lr = 1000 overflows
    result = run_sweep(dataclasses.replace(CONFIG, learning_rate=(0.05, 1000.0), seeds=3), {})
    dataset = result.dataset
    assert dataset.diverged.sel(learning_rate=1000.0).all()
    assert (dataset.failure.sel(learning_rate=1000.0) == status.NONFINITE).all()
    assert not dataset.diverged.sel(learning_rate=0.05).any()
    assert result.summary["failed"] == {"nonfinite": 3}
    assert dataset.failure.attrs["flag_meanings"] == "ok nonfinite max_steps solver"
    assert np.isnan(dataset.loss.sel(learning_rate=1000.0)).all()
    assert np.isnan(dataset.weights.sel(learning_rate=1000.0)).all()
    assert (dataset.steps.sel(learning_rate=1000.0) == np.arange(CONFIG.num_steps)).all()  # ints kept
    for seed in range(3):
        alone = single_run(CONFIG, seed, {"learning_rate": 0.05})
        np.testing.assert_allclose(dataset.loss.sel(learning_rate=0.05, seed=seed), alone["loss"], rtol=1e-12)


def test_a_solve_past_its_step_budget_is_a_result_not_an_exception():
    """stiffness 1e7 needs ~1e6 explicit steps; the budget of 4096 stops it, the run is flagged
    max_steps, and the other runs equal the same grid without it."""
    config = dataclasses.replace(CONFIG, seeds=2)
    mixed = run_sweep(config, {"stiffness": [1.0, 1e7]})
    tame = run_sweep(config, {"stiffness": [1.0]})
    failure = mixed.dataset.failure
    assert (failure.sel(stiffness=1e7) == status.MAX_STEPS).all() and (failure.sel(stiffness=1.0) == status.OK).all()
    assert mixed.summary["failed"] == {"max_steps": 4}
    assert np.isnan(mixed.dataset.decay.sel(stiffness=1e7)).all()
    xr.testing.assert_allclose(mixed.dataset.sel(stiffness=[1.0]), tame.dataset, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tame.dataset.decay, np.exp(-1.0), rtol=1e-6)


def test_shape_changing_fields_compile_one_program_per_shape():
    result = run_sweep(dataclasses.replace(CONFIG, learning_rate=(0.05, 0.1), seeds=2), {"dim": [3, 5]})
    dataset = result.dataset
    assert result.summary["programs"] == 2
    assert dataset.weights.dims == ("learning_rate", "dim", "seed", "component")
    assert dataset.sizes["component"] == 5
    assert np.isnan(dataset.weights.sel(dim=3, component=[3, 4])).all()
    assert np.isfinite(dataset.weights.sel(dim=3, component=[0, 1, 2])).all()
    small = toy_study.Config(dim=3)
    alone = single_run(small, 1, {"learning_rate": 0.1})
    np.testing.assert_allclose(dataset.weights.sel(dim=3, learning_rate=0.1, seed=1, component=[0, 1, 2]), alone["weights"], rtol=1e-12)


def test_string_fields_are_static_axes():
    result = run_sweep(CONFIG, {"label": ["x", "y"]})
    assert result.summary["programs"] == 2
    assert list(result.dataset.label.values) == ["x", "y"]
    np.testing.assert_allclose(result.dataset.loss.sel(label="x"), result.dataset.loss.sel(label="y"), rtol=1e-12)


def test_memory_budget_splits_into_chunks_with_the_same_results():
    config = dataclasses.replace(CONFIG, learning_rate=(0.05, 0.1, 0.15, 0.2), seeds=4)
    extra = {"scale": [0.5, 1.0]}
    whole = run_sweep(config, extra)
    with jax.enable_x64(True):
        group = sweep.plan(toy_study, config, extra).groups[0]
        per_run = execute.compiled_bytes(execute.group_program(toy_study, group, tuple(jax.local_devices()), 1))
    budgeted = run_sweep(config, extra, max_memory=5 * per_run)
    assert whole.summary["chunk_sizes"] == [32]
    assert budgeted.summary["chunk_sizes"][0] < 32
    xr.testing.assert_allclose(budgeted.dataset, whole.dataset, rtol=1e-12, atol=1e-12)


def test_output_directory_refuses_a_second_sweep_without_resume_or_overwrite(tmp_path):
    out = tmp_path / "scan"
    run_sweep(out=out)
    assert (out / "results.nc").is_file() and (out / "scan.json").is_file()
    with pytest.raises(ConfigError, match="resume"):
        run_sweep(out=out)
    with pytest.raises(ConfigError, match="different sweep"):
        run_sweep(dataclasses.replace(CONFIG, seeds=2), out=out, resume=True)
    resumed = run_sweep(out=out, resume=True)  # finished: nothing left to compute
    assert resumed.summary["compiles"] == 0
    replaced = run_sweep(dataclasses.replace(CONFIG, seeds=2), out=out, overwrite=True)
    assert replaced.dataset.sizes["seed"] == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no sweep"):
        run_sweep(out=tmp_path / "other", overwrite=True)
