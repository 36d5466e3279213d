"""Studies: one module per experiment, each a reproducible run with a CLI, figures and a
measured-vs-predicted table.

An experiment module provides ``NAME``, a frozen ``Config`` dataclass, ``PRESETS`` (``quick``
first, the default; ``paper``), ``validate(config)``, ``run(config) -> xarray.Dataset``,
``summary(dataset, config) -> dict``, ``summary_markdown(summary) -> str`` and
``plot(dataset, config) -> dict[str, Figure]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dynamics.validation import require_choice

EXPERIMENTS: dict[str, str] = {
    "spectral-bias": "experiments.spectral_bias",
    "inverse-design": "experiments.inverse_design",
    "speciation": "experiments.speciation",
    "class-imbalance": "experiments.class_imbalance",
    "nonlinear-spectral-bias": "experiments.nonlinear_spectral_bias",
    "memorization": "experiments.memorization",
}


def get(name: str) -> ModuleType:
    """The experiment module registered as ``name``."""
    return importlib.import_module(EXPERIMENTS[require_choice("experiment", name, EXPERIMENTS)])
