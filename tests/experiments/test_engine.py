"""The engine on the real studies: the registry's contract, 8 devices == 1 for every study,
kill -9 + --resume bit-identical, two jax.distributed processes == one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from diffdyn.dynamics import config as configs
from diffdyn.dynamics.study import check_study
from diffdyn.experiments import EXPERIMENTS, get

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_registered_study_keeps_the_contract(name):
    study = get(name)
    check_study(study)
    assert study.NAME == name
    assert {"quick", "tiny"} <= set(study.PRESETS)
    for preset in study.PRESETS.values():
        configs.check_fields(preset)
    assert configs.grid_paths(study.Config), "a study sweeps at least one grid field"


def device_env(devices: int) -> dict:
    """This environment with ``devices`` forced CPU devices; the child sizes its own CPU pool
    (``PJRT_NPROC``, see ``experiments.cpu_pool_threads``)."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "PYTHONUNBUFFERED": "1"}
    for name in ("JAX_PLATFORMS", "PJRT_NPROC"):
        env.pop(name, None)
    return env


def python(code: str, *args: str, devices: int = 1, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=device_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finished(process: subprocess.Popen, timeout: float = 900) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


SHARDED = """
import sys
import jax, numpy as np
from diffdyn.experiments import get, runner
from diffdyn.dynamics import sweep
from diffdyn.dynamics.sweep import execute
COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
devices = jax.local_devices()
assert len(devices) == 8, devices
for name in sys.argv[1:]:
    study = get(name)
    config = study.PRESETS["tiny"]
    # one run per device and call on both sides: the same per-device program, so equal bit for bit
    one = runner.execute(study, config, devices=devices[:1], chunk_size=1, progress=False).dataset
    eight = runner.execute(study, config, devices=devices, chunk_size=8, progress=False)
    assert eight.summary["sweep"]["devices"] == 8
    # the same per-device batch on both sides; XLA may still round the last bit differently
    rtol, atol = (1e-12, 1e-14) if study.PRECISION == "float64" else (1e-5, 1e-6)
    for variable in one.data_vars:
        np.testing.assert_allclose(eight.dataset[variable].values, one[variable].values, rtol=rtol, atol=atol, err_msg=f"{name}: {variable}")
    with jax.enable_x64(study.PRECISION == "float64"):
        planned = sweep.plan(study, config)
        for group in planned.groups:
            text = execute.group_program(study, group, tuple(devices), 8).as_text()
            found = [c for c in COLLECTIVES if c in text]
            assert not found, f"{name}: collectives {found} in a chunk program"
    print("same on 8 devices:", name, "runs", eight.summary["sweep"]["runs"], flush=True)
"""


# spectral-bias (adaptive diffrax loops in two_layer / deep_linear) and nonlinear-spectral-bias run
# by default; the other studies take 3 more minutes on 2 cores and run with -m slow.
ON_8_DEVICES_BY_DEFAULT = ("spectral-bias", "nonlinear-spectral-bias")


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(ON_8_DEVICES_BY_DEFAULT, id="default"),
        pytest.param(tuple(name for name in EXPERIMENTS if name not in ON_8_DEVICES_BY_DEFAULT), id="others", marks=pytest.mark.slow),
    ],
)
def test_every_study_on_8_devices_equals_1_device_with_no_collective(names):
    """Each study's tiny preset, sharded over 8 simulated CPU devices (shard_map over runs),
    equals the same sweep on one device (to the last bits of its precision); no chunk program contains
    a collective."""
    output = finished(python(SHARDED, *names, devices=8))
    for name in names:
        assert f"same on 8 devices: {name}" in output


SCAN = ["-m", "diffdyn.experiments.cli", "scan", "spectral-bias", "--preset", "tiny", "--family", "one_layer", "--num-samples", "64", "--seeds", "4"]
GRID = ["--grid", "eta=0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2"]


def cli(*args: str, devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=device_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def load(path: Path) -> xr.Dataset:
    with xr.open_dataset(path / "results.nc", engine="h5netcdf") as dataset:
        return dataset.load()


def test_kill_9_then_resume_is_bit_identical(tmp_path):
    """``diffdyn scan spectral-bias`` killed with SIGKILL after a few of its 32 chunks, then
    ``--resume``d: the result equals an uninterrupted scan bit for bit."""
    finished(cli(*SCAN, *GRID, "--chunk-size", "1", "--out", str(tmp_path / "whole")))
    process = cli(*SCAN, *GRID, "--chunk-size", "1", "--out", str(tmp_path / "killed"))
    chunks = tmp_path / "killed" / "chunks"
    deadline = time.time() + 600
    while time.time() < deadline and len(list(chunks.glob("*.npz")) if chunks.exists() else []) < 3:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(chunks.glob("*.npz")))
    assert 3 <= done < 32, f"the kill landed after {done} of 32 chunks"
    assert not (tmp_path / "killed" / "results.nc").exists()
    finished(cli(*SCAN, *GRID, "--chunk-size", "1", "--out", str(tmp_path / "killed"), "--resume"))
    xr.testing.assert_identical(load(tmp_path / "killed"), load(tmp_path / "whole"))
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["sweep"]["runs"] == 32


def test_two_jax_distributed_processes_equal_one(tmp_path):
    """The same scan by two ``jax.distributed`` processes (each takes every other chunk)."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    finished(cli(*SCAN, *GRID, "--chunk-size", "4", "--out", str(tmp_path / "single")))
    ranks = [
        cli(
            *SCAN,
            *GRID,
            "--chunk-size",
            "4",
            "--out",
            str(tmp_path / "multi"),
            "--coordinator",
            f"localhost:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(rank),
        )
        for rank in (0, 1)
    ]
    outputs = [finished(rank) for rank in ranks]
    assert "results in" in outputs[0]
    summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert summary["sweep"]["processes"] == 2
    xr.testing.assert_identical(load(tmp_path / "multi"), load(tmp_path / "single"))
