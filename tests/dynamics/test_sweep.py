"""The sweep engine: grids, keys, chunking, divergence masks, resume, sharding, multi-process."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

from dynamics import sweep
from dynamics.validation import ConfigError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import toy_study  # noqa: E402

CONFIG = toy_study.Config()
GRID = {"learning_rate": [0.05, 0.2], "scale": [0.0, 1.0, 2.0]}


@functools.lru_cache
def jitted_run(config):
    return jax.jit(toy_study.scan_workload(config).run)


def single_run(config, seed: int, values: dict, root_seed: int = 0):
    """One run alone, jitted, with the key that the sweep documents for seed ``seed``."""
    key = jax.random.fold_in(jax.random.key(root_seed), seed)
    return jitted_run(config)(key, {k: np.float64(v) for k, v in values.items()})


def run_sweep(grid=GRID, **options):
    options.setdefault("progress", False)
    return sweep.sweep(toy_study, CONFIG, grid, **options)


@pytest.mark.parametrize(
    "grid, field",
    [
        ({}, "grid"),
        ({"nope": [1]}, "nope"),
        ({"label": [1]}, "label"),
        ({"seed": [1]}, "seed"),
        ({"learning_rate": []}, "learning_rate"),
        ({"learning_rate": ["fast"]}, "learning_rate"),
        ({"learning_rate": [0.1, 0.1]}, "learning_rate"),
        ({"learning_rate": [-1.0]}, "learning_rate"),
        ({"dim": [2.5]}, "dim"),
        ({"dim": [0]}, "dim"),
    ],
)
def test_bad_grids_fail_before_any_compile(grid, field):
    before = sweep.TRACES[toy_study.__name__]
    with pytest.raises(ConfigError, match=field):
        run_sweep(grid)
    assert sweep.TRACES[toy_study.__name__] == before


def test_parse_grid_option_and_bytes():
    assert sweep.parse_grid_option("learning-rate=0.1, 1") == ("learning_rate", ["0.1", "1"])
    assert sweep.parse_bytes("2GiB") == 2 * 2**30
    assert sweep.parse_bytes("512MB") == 512 * 2**20
    assert sweep.parse_bytes(1e6) == 10**6
    for bad in ("lots", "-1GB"):
        with pytest.raises(ConfigError, match="max_memory"):
            sweep.parse_bytes(bad)


def test_every_run_equals_the_same_run_alone(capsys):
    result = sweep.sweep(toy_study, CONFIG, GRID, seeds=3)  # progress bar: only on a terminal
    assert capsys.readouterr().err == ""
    dataset = result.dataset
    assert dataset.loss.dims == ("learning_rate", "scale", "seed", "step")
    assert dataset.loss.shape == (2, 3, 3, CONFIG.num_steps)
    assert result.summary["runs"] == 18 and result.summary["diverged"] == 0
    for lr in GRID["learning_rate"]:
        for scale in GRID["scale"]:
            for seed in range(3):
                alone = single_run(CONFIG, seed, {"learning_rate": lr, "scale": scale})
                swept = dataset.sel(learning_rate=lr, scale=scale, seed=seed)
                np.testing.assert_allclose(swept.loss.values, alone["loss"], rtol=1e-12, atol=1e-12)
                np.testing.assert_array_equal(swept.steps.values, alone["steps"])


def test_results_do_not_depend_on_chunk_size_or_grid_shape():
    whole = run_sweep(seeds=2).dataset
    for chunk_size in (5,):  # 18 runs: three full chunks and a padded one
        chunked = run_sweep(seeds=2, chunk_size=chunk_size).dataset
        xr.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    # a sub-grid (another shape) gives the same numbers for its runs: keys depend on the seed only
    sub = run_sweep({"scale": [2.0], "learning_rate": [0.2]}, seeds=2).dataset
    xr.testing.assert_allclose(
        sub.loss.sel(scale=2.0, learning_rate=0.2), whole.loss.sel(scale=2.0, learning_rate=0.2), rtol=1e-12, atol=1e-12
    )


def test_second_grid_of_the_same_shapes_does_not_recompile():
    first = run_sweep({"learning_rate": [0.01, 0.02], "scale": [0.5, 0.7, 0.9]}, seeds=2)
    second = run_sweep({"learning_rate": [0.03, 0.04], "scale": [1.5, 1.7, 1.9]}, seeds=2)
    assert first.summary["compiles"] <= 1
    assert second.summary["compiles"] == 0
    assert not np.allclose(first.dataset.loss, second.dataset.loss)


def test_diverging_runs_are_masked_and_counted_without_touching_the_others():
    # the Gram matrix of 8 Gaussian samples in 4-d has eigenvalues ~0.1..4: lr = 1000 overflows
    result = run_sweep({"learning_rate": [0.05, 1000.0]}, seeds=3)
    dataset = result.dataset
    assert dataset.diverged.sel(learning_rate=1000.0).all()
    assert not dataset.diverged.sel(learning_rate=0.05).any()
    assert result.summary["diverged"] == 3
    assert np.isnan(dataset.loss.sel(learning_rate=1000.0)).all()
    assert np.isnan(dataset.weights.sel(learning_rate=1000.0)).all()
    assert (dataset.steps.sel(learning_rate=1000.0) == np.arange(CONFIG.num_steps)).all()  # ints kept
    for seed in range(3):
        alone = single_run(CONFIG, seed, {"learning_rate": 0.05})
        np.testing.assert_allclose(dataset.loss.sel(learning_rate=0.05, seed=seed), alone["loss"], rtol=1e-12)


def test_shape_changing_fields_compile_one_program_per_shape():
    result = run_sweep({"dim": [3, 5], "learning_rate": [0.05, 0.1]}, seeds=2)
    dataset = result.dataset
    assert result.summary["programs"] == 2
    assert dataset.weights.dims == ("dim", "learning_rate", "seed", "component")
    assert dataset.sizes["component"] == 5
    assert np.isnan(dataset.weights.sel(dim=3, component=[3, 4])).all()
    assert np.isfinite(dataset.weights.sel(dim=3, component=[0, 1, 2])).all()
    small = toy_study.Config(dim=3)
    alone = single_run(small, 1, {"learning_rate": 0.1})
    np.testing.assert_allclose(dataset.weights.sel(dim=3, learning_rate=0.1, seed=1, component=[0, 1, 2]), alone["weights"], rtol=1e-12)


def test_memory_budget_splits_into_chunks_with_the_same_results():
    grid = {"learning_rate": [0.05, 0.1, 0.15, 0.2], "scale": [0.5, 1.0]}
    whole = run_sweep(grid, seeds=4)
    per_run = sweep.compiled_bytes(
        sweep._compiled(toy_study, sweep.plan_groups(toy_study, CONFIG, sweep.resolve_grid(toy_study, CONFIG, grid), 4)[0],
                        tuple(jax.local_devices()), 1)
    )
    budgeted = run_sweep(grid, seeds=4, max_memory=5 * per_run)
    assert whole.summary["chunk_sizes"] == [32]
    assert budgeted.summary["chunk_sizes"][0] < 32
    xr.testing.assert_allclose(budgeted.dataset, whole.dataset, rtol=1e-12, atol=1e-12)


def test_output_directory_refuses_a_second_sweep_without_resume(tmp_path):
    run_sweep(seeds=1, out=tmp_path / "scan")
    assert (tmp_path / "scan" / "results.nc").is_file()
    with pytest.raises(ConfigError, match="resume"):
        run_sweep(seeds=1, out=tmp_path / "scan")
    with pytest.raises(ConfigError, match="different sweep"):
        run_sweep(seeds=2, out=tmp_path / "scan", resume=True)


# ----------------------------------------------------------------------------- processes

SCRIPT = """
import sys, jax
sys.path.insert(0, {here!r})
args = dict(arg.split("=", 1) for arg in sys.argv[1:])
if "process_id" in args:
    jax.distributed.initialize(args["coordinator"], 2, int(args["process_id"]))
import toy_study
from dynamics import sweep
grid = {{"learning_rate": [0.01, 0.02, 0.03, 0.04], "scale": [0.5, 1.0]}}
config = toy_study.Config(num_steps=int(args.get("num_steps", 64)))
result = sweep.sweep(toy_study, config, grid, seeds=4, out=args["out"], chunk_size=int(args["chunk"]),
                     resume=args.get("resume") == "1", progress=False)
print("devices", jax.device_count(), "summary", result.summary)
"""


def python(*args, devices: int = 1, **popen):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_ENABLE_X64": "1"}
    env.pop("JAX_PLATFORMS", None)
    code = SCRIPT.format(here=str(HERE))
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finished(process) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def load(path: Path) -> xr.Dataset:
    with xr.open_dataset(path / "results.nc", engine="h5netcdf") as dataset:
        return dataset.load()


def test_sharded_over_8_devices_equals_one_device(tmp_path):
    finished(python(f"out={tmp_path / 'one'}", "chunk=8"))
    output = finished(python(f"out={tmp_path / 'eight'}", "chunk=8", devices=8))
    assert "devices 8" in output
    xr.testing.assert_allclose(load(tmp_path / "eight"), load(tmp_path / "one"), rtol=1e-12, atol=1e-12)


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    finished(python(f"out={tmp_path / 'whole'}", "chunk=1", "num_steps=200000"))
    process = python(f"out={tmp_path / 'killed'}", "chunk=1", "num_steps=200000")
    chunks = tmp_path / "killed" / "chunks"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(chunks.glob("*.npz")) if chunks.exists() else []) < 3:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(chunks.glob("*.npz")))
    assert 3 <= done < 32, f"the kill landed after {done} of 32 chunks"
    assert not (tmp_path / "killed" / "results.nc").exists()
    finished(python(f"out={tmp_path / 'killed'}", "chunk=1", "num_steps=200000", "resume=1"))
    resumed, whole = load(tmp_path / "killed"), load(tmp_path / "whole")
    xr.testing.assert_identical(resumed, whole)


def test_two_process_jax_distributed_equals_one_process(tmp_path):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    finished(python(f"out={tmp_path / 'single'}", "chunk=4"))
    ranks = [
        python(f"out={tmp_path / 'multi'}", "chunk=4", f"coordinator=localhost:{port}", f"process_id={rank}")
        for rank in (0, 1)
    ]
    outputs = [finished(rank) for rank in ranks]
    assert all("'processes': 2" in output for output in outputs)
    xr.testing.assert_identical(load(tmp_path / "multi"), load(tmp_path / "single"))
