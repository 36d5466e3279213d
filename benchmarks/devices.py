"""Runs/s of one sweep on 1, 2, ... simulated CPU devices (``shard_map`` over the runs).

The same spectral-bias sweep (one-layer family and the two-layer family, whose adaptive diffrax
training loops are where synchronised devices would wait for the slowest) runs in a fresh
subprocess per device count (``XLA_FLAGS=--xla_force_host_platform_device_count=N``); each
device runs its own block of runs with no collective, so on a machine with C cores the runs/s
should grow with N up to C. Compile time is reported apart; the results must equal the
one-device sweep's (checked to rtol 1e-9).

    python benchmarks/devices.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from report import machine_description, write_section

CHILD = """
import dataclasses, json, sys, time
import jax, numpy as np
from diffdyn.experiments import runner, spectral_bias
family, runs = sys.argv[1], int(sys.argv[2])
config = dataclasses.replace(spectral_bias.PRESETS["quick"], family=(family,), num_samples=0, q=(0.1,), seeds=1)
extra = {"eta": list(np.geomspace(0.5, 2.0, runs))}
start = time.perf_counter()
first = runner.execute(spectral_bias, config, extra, progress=False)  # compiles, then runs
total = time.perf_counter() - start
again = runner.execute(spectral_bias, config, extra, progress=False)  # compiled: run time only
np.save(sys.argv[3], first.dataset.variance.values)
print(json.dumps({"devices": jax.device_count(), "compile_and_run_s": total, "run_s": again.summary["sweep"]["seconds"],
                  "compiles": again.summary["sweep"]["compiles"]}))
"""


def measure(family: str, runs: int, devices: int, path: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.pop("PJRT_NPROC", None)  # the child sizes its CPU pool for its device count (experiments.cpu_pool_threads)
    done = subprocess.run([sys.executable, "-c", CHILD, family, str(runs), path], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    runs = 16 if args.quick else 64
    counts = (1, 2) if args.quick else (1, 2, 4, 8)
    lines = [
        f"Spectral-bias sweep over {runs} learning rates (quick preset otherwise, no PF-ODE samples), float64; "
        "one subprocess per device count; run time with the programs compiled.",
        "",
        "| family | devices | compile + run (s) | run (s) | runs/s | speed-up vs 1 device | equal to 1 device |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in ("one_layer", "two_layer"):
        rows = [measure(family, runs, count, f"/tmp/diffdyn-devices-{family}-{count}.npy") for count in counts]
        reference = np.load(f"/tmp/diffdyn-devices-{family}-1.npy")
        for row, count in zip(rows, counts):
            same = np.allclose(np.load(f"/tmp/diffdyn-devices-{family}-{count}.npy"), reference, rtol=1e-9, atol=0.0)
            lines.append(
                f"| {family} | {row['devices']} | {row['compile_and_run_s']:.1f} | {row['run_s']:.2f} | {runs / row['run_s']:.1f} | "
                f"{rows[0]['run_s'] / row['run_s']:.2f}x | {'yes' if same else 'NO'} |"
            )
    markdown = "## Devices: one sweep on N simulated CPU devices\n\n" + machine_description("float64") + "\n\n" + "\n".join(lines)
    print(markdown)
    if args.write:
        write_section("devices", markdown)


if __name__ == "__main__":
    main()
