"""Memory and speed of ``dynamics.sweep`` vs its chunk size.

One sweep of the spectral-bias study (one-layer family, exact flow and exact PF-ODE covariance,
16 (quick) or 64 grid points of learning rate x init scale) is run at several chunk sizes, each
in a fresh subprocess so that its peak resident memory is its own. Per chunk size:

* XLA's compiled memory (``memory_analysis``: arguments + outputs + temporaries per device),
  which is what ``--max-memory`` budgets;
* the process's peak resident memory while the compiled sweep runs, above its resident memory
  just before (the peak is reset after compiling via ``/proc/self/clear_refs``, Linux);
* compile time (ahead of time, ``lower`` + ``compile``) separately from run time, and runs/s.

    python benchmarks/sweep_memory.py [--quick] [--write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from report import machine_description, write_section

CHILD = """
import dataclasses, json, sys, time
import jax, numpy as np
from diffdyn.dynamics import sweep
from diffdyn.dynamics.sweep import execute
from diffdyn.experiments import runner, spectral_bias
chunk, runs, modes = (int(v) for v in sys.argv[1:4])
config = dataclasses.replace(
    spectral_bias.PRESETS["quick"], family=("one_layer",), num_modes=modes, num_samples=0, q=(0.1, 0.5), seeds=1
)
extra = {"eta": list(np.geomspace(0.5, 2.0, runs // 2))}
with jax.enable_x64(True):
    group = sweep.plan(spectral_bias, config, extra).groups[0]
    start = time.perf_counter()
    compiled = execute.group_program(spectral_bias, group, tuple(jax.local_devices()), chunk)
    compile_s = time.perf_counter() - start

def status_kib(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1])

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status_kib("VmRSS")
result = runner.execute(spectral_bias, config, extra, chunk_size=chunk, progress=False)
after = status_kib("VmHWM")
print(json.dumps({
    "chunk": chunk, "runs": runs, "compiled_mib": execute.compiled_bytes(compiled) / 2**20,
    "peak_rss_mib": (after - before) / 1024, "compile_s": compile_s,
    "run_s": result.summary["sweep"]["seconds"], "compiles_in_sweep": result.summary["sweep"]["compiles"],
}))
"""


def measure(chunk: int, runs: int, modes: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(chunk), str(runs), str(modes)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict], modes: int) -> str:
    lines = [
        f"Spectral-bias sweep, one-layer family, d = {modes}, exact flow + exact PF-ODE covariance, "
        f"{rows[0]['runs']} runs (learning rate x init scale), float64, one CPU device.",
        "",
        "| chunk size | XLA compiled memory (MiB) | peak RSS increase while running (MiB) | compile (s) | run (s) | runs/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['chunk']} | {row['compiled_mib']:.1f} | {row['peak_rss_mib']:.0f} | {row['compile_s']:.1f} | "
            f"{row['run_s']:.2f} | {row['runs'] / row['run_s']:.1f} |"
        )
    lines += [
        "",
        "Run time is the sweep call with the program already compiled (`compiles_in_sweep` = "
        + ", ".join(str(row["compiles_in_sweep"]) for row in rows)
        + "): chunking trades memory for calls, and the compiled memory is what `--max-memory` budgets.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    runs, modes = (16, 6) if args.quick else (64, 12)
    chunks = (1, 4, 16) if args.quick else (1, 4, 16, 64)
    rows = [measure(chunk, runs, modes) for chunk in chunks]
    markdown = "## Sweep memory vs chunk size\n\n" + machine_description("float64") + "\n\n" + table(rows, modes)
    print(markdown)
    if args.write:
        write_section("sweep_memory", markdown)


if __name__ == "__main__":
    main()
