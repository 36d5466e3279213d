"""Shared benchmark plumbing: the machine description, timing, and atomic RESULTS.md sections.

Each benchmark script owns one section of ``benchmarks/RESULTS.md``, delimited by
``<!-- begin NAME -->`` / ``<!-- end NAME -->``; ``write_section`` replaces that section (or
appends it) and writes the file atomically (temporary file in the same folder + ``os.replace``),
so an interrupted script never leaves a half-written RESULTS.md.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jax

from diffdyn.experiments.report import replace_section

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (falls back to ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average (how busy the shared machine was), or ``n/a``."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def machine_description(dtype: str = "float32") -> str:
    """One markdown paragraph: CPU model and cores, accelerator, library versions, dtype, date."""
    device = jax.devices()[0]
    parts = [
        f"CPU {cpu_model()} ({os.cpu_count()} cores visible, {platform.machine()})",
        f"jax {jax.__version__} on {device.platform} ({device.device_kind}, {jax.device_count()} device(s))",
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)")
    except ImportError:
        parts.append("torch not installed")
    parts.append(f"dtype {dtype}")
    parts.append(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    parts.append(f"1-min load average at start {load_average()}")
    return "Machine: " + "; ".join(parts) + "."


def best_time(function: Callable[..., object], *args, min_total: float = 1.0, max_repeats: int = 5) -> float:
    """Smallest wall time (s) of ``function(*args)`` (which must block until its result is ready).

    Repeats while the accumulated time is below ``min_total`` s (at most ``max_repeats`` times):
    short measurements are repeated against noise from other processes, long ones run once.
    """
    times: list[float] = []
    while not times or (sum(times) < min_total and len(times) < max_repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def run_blocking(function: Callable[..., object], *args) -> object:
    """``function(*args)``, waiting until JAX has computed the result (for :func:`best_time`)."""
    return jax.block_until_ready(function(*args))


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of ``path`` with ``markdown``, atomically."""
    replace_section(path, name, markdown, title="Benchmark results")
