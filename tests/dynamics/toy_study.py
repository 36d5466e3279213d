"""A small study for the engine tests: gradient descent on a random least-squares problem, and an
adaptive ODE solve whose stiffness a grid can push past its step budget.

Fast to compile and run; ``learning_rate`` above ``2 / lambda_max`` of the problem diverges (a
``nonfinite`` failure), ``stiffness`` far above ``1 / max_steps`` exhausts the solver's step
budget (a ``max_steps`` failure); ``dim`` changes shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics.config import StudyConfig, setting
from diffdyn.dynamics.status import Solved, from_diffrax
from diffdyn.dynamics.study import STATUS, Outputs, Row, Summary

NAME = "toy"
REFERENCE = "none (engine tests)"
CONVENTIONS = "steps of plain gradient descent"
PRECISION = "float64"


@dataclass(frozen=True)
class Config(StudyConfig):
    dim: int = setting(4, "dimension of the least-squares problem", low=1)
    num_steps: int = setting(64, "gradient-descent steps", low=1)
    learning_rate: tuple[float, ...] = setting((0.1,), "gradient-descent step", traced=True, grid=True, low=0.0, low_open=True)
    scale: float = setting(1.0, "init scale", traced=True, low=0.0)
    stiffness: float = setting(1.0, "decay rate k of the ODE dy/dt = -k y, solved from t = 0 to 1", traced=True, low=0.0)
    max_steps: int = setting(4096, "step budget of the ODE solve", low=1)
    label: str = setting("x", "a text field", choices=("x", "y"))


PRESETS = {"quick": Config()}


def validate(config: Config) -> None:
    """Nothing relates several fields here."""


def decay(stiffness, max_steps: int) -> Solved:
    """``y(1)`` of ``dy/dt = -stiffness y`` from ``y(0) = 1`` by explicit Tsit5: an explicit
    solver needs ~``stiffness`` steps, so a large stiffness exhausts ``max_steps``."""
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, k: -k * y),
        diffrax.Tsit5(),
        t0=0.0,
        t1=1.0,
        dt0=None,
        y0=jnp.float64(1.0),
        args=stiffness,
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
        max_steps=max_steps,
        throw=False,
    )
    return Solved(solution.ys[-1], from_diffrax(solution.result))


def point(key, config: Config):
    data_key, init_key = jax.random.split(key)
    features = jax.random.normal(data_key, (2 * config.dim, config.dim))
    target = features @ jnp.ones(config.dim)
    gram = features.T @ features / features.shape[0]

    def step(w, _):
        w = w - config.learning_rate * (gram @ w - features.T @ target / features.shape[0])
        return w, jnp.sum((features @ w - target) ** 2)

    w0 = config.scale * jax.random.normal(init_key, (config.dim,))
    w, losses = jax.lax.scan(step, w0, None, length=config.num_steps)
    solved = decay(config.stiffness, config.max_steps)
    return {"loss": losses, "weights": w, "steps": jnp.arange(config.num_steps), "decay": solved.value, STATUS: solved.status}


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={"loss": ("step",), "weights": ("component",), "steps": ("step",)},
        coords={"step": np.arange(config.num_steps)},
        long_names={"loss": "squared error"},
    )


def summarize(dataset, config: Config) -> Summary:
    final = dataset.loss.isel(step=-1)
    return Summary(
        rows=[Row("final loss", float(final.median()), note="median over runs")],
        values={"final_loss_median": float(final.median())},
        notes=("a toy",),
    )
