"""A small study for the sweep tests: gradient descent on a random least-squares problem.

Fast to compile and run; ``learning_rate`` above ``2 / lambda_max`` of the problem diverges,
which exercises the divergence masks; ``dim`` changes shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.sweep import Workload
from dynamics.validation import require_positive_int, require_range

NAME = "toy"
SCAN_TRACED = ("learning_rate", "scale")


@dataclass(frozen=True)
class Config:
    dim: int = 4
    num_steps: int = 64
    learning_rate: float = 0.1
    scale: float = 1.0
    label: str = "x"


def validate(config: Config) -> Config:
    require_positive_int("dim", config.dim)
    require_positive_int("num_steps", config.num_steps)
    require_range("learning_rate", config.learning_rate, low=0.0, low_open=True)
    require_range("scale", config.scale, low=0.0)
    return config


def scan_workload(config: Config) -> Workload:
    def run(key, values):
        lr = values.get("learning_rate", config.learning_rate)
        scale = values.get("scale", config.scale)
        data_key, init_key = jax.random.split(key)
        features = jax.random.normal(data_key, (2 * config.dim, config.dim))
        target = features @ jnp.ones(config.dim)
        gram = features.T @ features / features.shape[0]

        def step(w, _):
            w = w - lr * (gram @ w - features.T @ target / features.shape[0])
            return w, jnp.sum((features @ w - target) ** 2)

        w0 = scale * jax.random.normal(init_key, (config.dim,))
        w, losses = jax.lax.scan(step, w0, None, length=config.num_steps)
        return {"loss": losses, "weights": w, "steps": jnp.arange(config.num_steps)}

    return Workload(run=run, dims={"loss": ("step",), "weights": ("component",), "steps": ("step",)},
                    coords={"step": np.arange(config.num_steps)})
