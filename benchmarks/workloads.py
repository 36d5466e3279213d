"""Benchmark workloads, each defined once in JAX and once in PyTorch, side by side.

One *run* is one training of one denoiser at one noise level ``sigma`` with one learning rate and
one seed; a grid of ``runs`` runs has log-spaced ``sigma`` in ``[0.05, 2]``. Conventions are
the library's (docs/theory.md section 1, ``dynamics.objectives``): the loss at noise level ``sigma`` is
``E ||D(x0 + sigma z) - x0||^2`` summed over dimensions and not halved; one run makes
``steps`` optimizer updates and evaluates the loss and its gradient at ``steps + 1`` points
(``make_train`` scans over step indices ``0..steps`` and records *before* each update; the
PyTorch twins do the same ``steps + 1`` forward/backward passes, recording before updating).

* :func:`linear_study`: the linear-denoiser study ([WP] sec. 3, ``experiments/spectral_bias.py``):
  ``D(x) = W x + b`` with aligned init ``W = 0.1 I``, trained by plain gradient descent on the exact
  population loss ``Tr[(W-I) C (W-I)^T] + sigma^2 ||W||_F^2 + ||(W-I) mu + b||^2`` of Gaussian data
  with covariance ``C = O diag(lambda) O^T`` (``lambda`` log-spaced in ``[0.01, 10]``, ``O``
  Haar-random, ``mu = 0``); ``learning_rate = 0.02 / (1 + sigma^2)`` (stable: below
  ``1 / (lambda_max + sigma^2)``). Each step costs two ``d x d x d`` matmuls (``(W-I) C`` in the
  loss and ``(W-I) C^T`` in its gradient): ``4 d^3`` FLOPs plus ``O(d^2)``.
* :func:`mlp_study`: a small MLP denoiser ``D(x; sigma) = MLP([x, log(sigma)/4])`` with two SiLU
  hidden layers, trained by Adam on the Monte Carlo DSM loss (``dynamics.objectives.dsm_loss``)
  over a fixed training set of ``batch`` Gaussian samples with fresh noise at every step
  (full batch: every step sees all ``batch`` samples). The JAX model (:func:`mlp_init`,
  :func:`mlp_apply`, one sample, vmapped by ``dsm_loss``) and the PyTorch model
  (:class:`TorchMLP`, ``nn.Linear`` layers on a batch) compute the same function of the same
  parameters (:func:`torch_mlp_from_jax` copies them; checked by ``vmap_vs_loop.py``).

The PyTorch side is written as the published research scripts are: one run at a time, an eager
Python loop over steps, ``loss.backward()`` and ``torch.optim.SGD`` / ``torch.optim.Adam``, the
recorded parameters cloned into a list. Both sides use float32 (JAX's default without x64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from diffdyn.dynamics.objectives import dsm_loss, population_loss
from diffdyn.dynamics.training import OPTIMIZERS, Trajectory, log_spaced_steps, make_train
from diffdyn.models.denoisers import Linear
from diffdyn.models.distributions.gaussian import random_rotation

NUM_RECORDS = 20  # log-spaced parameter records per run, as in the study's quick preset


@dataclass(frozen=True)
class Workload:
    """A training workload in both frameworks.

    ``init``/``loss``/``optimizer`` are the arguments of ``make_train``; ``grid(runs)`` gives the
    per-run keys and stacked hyperparameters; ``torch_trainer()`` imports PyTorch and returns
    ``train(seed, sigma, learning_rate) -> recorded losses`` for one run; ``matmul_flops`` is the
    analytic FLOP count of the matrix products of one step (forward and backward).
    """

    name: str
    init: Callable
    loss: Callable
    optimizer: str
    steps: int
    grid: Callable[[int], tuple[PRNGKeyArray, dict[str, Array]]]
    torch_trainer: Callable[[], Callable[[int, float, float], list[float]]]
    matmul_flops: float

    @property
    def record_steps(self) -> tuple[int, ...]:
        return log_spaced_steps(self.steps, NUM_RECORDS)

    def train(self) -> Callable[[PRNGKeyArray, PyTree], Trajectory]:
        """The library's single-run training function (``make_train``)."""
        return make_train(self.init, self.loss, num_steps=self.steps, record_steps=self.record_steps, optimizer=self.optimizer)

    def step(self) -> Callable:
        """One optimizer step ``(params, opt_state, key, hparams) -> (params, opt_state, loss)``:
        the arithmetic of ``make_train``'s scan body without the recording, for FLOP counts."""

        def one_step(params, opt_state, key, hparams):
            value, grads = jax.value_and_grad(self.loss)(params, key, hparams)
            updates, opt_state = OPTIMIZERS[self.optimizer](learning_rate=hparams["learning_rate"]).update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        return one_step

    def step_arguments(self) -> tuple:
        """Arguments of :meth:`step` for the first run of the grid."""
        keys, hparams = self.grid(1)
        one = jax.tree.map(lambda v: v[0], hparams)
        params = self.init(keys[0], one)
        return params, OPTIMIZERS[self.optimizer](learning_rate=one["learning_rate"]).init(params), keys[0], one


def sigma_grid(runs: int) -> Float[Array, " runs"]:
    """Noise levels of a grid of ``runs`` runs: log-spaced in ``[0.05, 2]``."""
    return jnp.geomspace(0.05, 2.0, runs)


def gaussian_covariance(dim: int) -> Float[Array, "d d"]:
    """``O diag(lambda) O^T`` with ``lambda`` log-spaced in ``[0.01, 10]`` and a fixed Haar ``O``."""
    basis = random_rotation(jax.random.key(0), dim)
    return (basis * jnp.geomspace(1e-2, 10.0, dim)[None, :]) @ basis.T


def linear_study(dim: int, steps: int = 1000) -> Workload:
    """The linear-denoiser study at dimension ``dim`` (module docstring)."""
    model = Linear(dim)
    cov = gaussian_covariance(dim)
    mean = jnp.zeros(dim)

    def init(key, hparams):
        return model.init(key, 0.1)

    def loss(params, key, hparams):
        return population_loss(model.affine, params, mean, cov, hparams["sigma"])

    def grid(runs):
        sigma = sigma_grid(runs)
        return jax.random.split(jax.random.key(1), runs), {"sigma": sigma, "learning_rate": 0.02 / (1.0 + sigma**2)}

    torch_trainer = partial(_torch_linear_trainer, np.asarray(cov), steps, log_spaced_steps(steps, NUM_RECORDS))
    return Workload(f"linear d={dim}", init, loss, "sgd", steps, grid, torch_trainer, 4.0 * dim**3)


def _torch_linear_trainer(cov: np.ndarray, steps: int, record_steps: tuple[int, ...]):
    """PyTorch twin of :func:`linear_study`'s run: eager SGD on the same population loss."""
    import torch

    dim = cov.shape[0]
    cov_t, eye, mean = torch.tensor(cov), torch.eye(dim), torch.zeros(dim)
    records = set(record_steps)

    def train(seed: int, sigma: float, learning_rate: float) -> list[float]:
        torch.manual_seed(seed)
        weight = (0.1 * torch.eye(dim)).requires_grad_()
        offset = torch.zeros(dim, requires_grad=True)
        optimizer = torch.optim.SGD([weight, offset], lr=learning_rate)
        saved, losses = [], []
        for step in range(steps + 1):
            optimizer.zero_grad()
            residual = weight - eye
            bias = residual @ mean + offset
            loss = ((residual @ cov_t) * residual).sum() + sigma**2 * (weight**2).sum() + (bias**2).sum()
            loss.backward()
            if step in records:
                saved.append(weight.detach().clone())
                losses.append(loss.item())
            optimizer.step()
        return losses

    return train


def mlp_init(key: PRNGKeyArray, dim: int, width: int) -> list[tuple[Array, Array]]:
    """Layers ``(W, b)`` of ``dim + 1 -> width -> width -> dim``; ``W ~ N(0, 1/fan_in)``, ``b = 0``."""
    sizes = (dim + 1, width, width, dim)
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (fan_out, fan_in)) / math.sqrt(fan_in), jnp.zeros(fan_out)) for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:])]


def mlp_apply(params: list[tuple[Array, Array]], x: Float[Array, " d"], sigma: Float[Array, ""]) -> Float[Array, " d"]:
    """``D(x; sigma)`` for ONE sample: SiLU MLP on ``[x, log(sigma) / 4]``, linear output layer."""
    hidden = jnp.concatenate([x, (jnp.log(sigma) / 4.0)[None]])
    *layers, (last_weight, last_bias) = params
    for weight, bias in layers:
        hidden = jax.nn.silu(weight @ hidden + bias)
    return last_weight @ hidden + last_bias


def _torch_mlp_class():
    import torch

    class TorchMLP(torch.nn.Module):
        """PyTorch twin of :func:`mlp_apply` on a batch ``x`` of shape ``(n, d)``."""

        def __init__(self, dim: int, width: int):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(dim + 1, width), torch.nn.SiLU(),
                torch.nn.Linear(width, width), torch.nn.SiLU(),
                torch.nn.Linear(width, dim),
            )  # fmt: skip
            with torch.no_grad():  # the JAX init's distribution: N(0, 1/fan_in) weights, zero biases
                for layer in self.net[::2]:
                    layer.weight.normal_(0.0, 1.0 / math.sqrt(layer.in_features))
                    layer.bias.zero_()

        def forward(self, x, sigma: float):
            level = torch.full((x.shape[0], 1), math.log(sigma) / 4.0)
            return self.net(torch.cat([x, level], dim=1))

    return TorchMLP


def torch_mlp_from_jax(params: list[tuple[Array, Array]]):
    """A :class:`TorchMLP` holding a copy of the JAX parameters (for the equivalence check)."""
    import torch

    dim, width = params[-1][0].shape
    model = _torch_mlp_class()(dim, width)
    with torch.no_grad():
        for layer, (weight, bias) in zip(model.net[::2], params):
            layer.weight.copy_(torch.tensor(np.asarray(weight)))
            layer.bias.copy_(torch.tensor(np.asarray(bias)))
    return model


def mlp_study(dim: int = 8, width: int = 32, batch: int = 64, steps: int = 1000) -> Workload:
    """The MLP denoiser study (module docstring): Adam, learning rate ``1e-3``, DSM loss."""
    data = random_rotation(jax.random.key(2), dim) * jnp.sqrt(jnp.geomspace(1e-2, 10.0, dim))[None, :]
    x0 = jax.random.normal(jax.random.key(3), (batch, dim)) @ data.T  # fixed training set

    def init(key, hparams):
        return mlp_init(key, dim, width)

    def loss(params, key, hparams):
        return dsm_loss(mlp_apply, params, x0, hparams["sigma"], key)

    def grid(runs):
        sigma = sigma_grid(runs)
        return jax.random.split(jax.random.key(1), runs), {"sigma": sigma, "learning_rate": jnp.full(runs, 1e-3)}

    per_sample = 2 * ((dim + 1) * width + width * width + width * dim)  # forward matmul FLOPs
    # backward: weight gradients (= forward) + input gradients of all but the first layer
    matmul_flops = batch * (2 * per_sample + 2 * (width * width + width * dim))
    torch_trainer = partial(_torch_mlp_trainer, np.asarray(x0), dim, width, steps, log_spaced_steps(steps, NUM_RECORDS))
    return Workload(f"MLP d={dim} width={width} batch={batch}", init, loss, "adam", steps, grid, torch_trainer, float(matmul_flops))


def _torch_mlp_trainer(x0: np.ndarray, dim: int, width: int, steps: int, record_steps: tuple[int, ...]):
    """PyTorch twin of :func:`mlp_study`'s run: eager Adam on the same DSM loss."""
    import torch

    data = torch.tensor(x0)
    records = set(record_steps)
    model_class = _torch_mlp_class()

    def train(seed: int, sigma: float, learning_rate: float) -> list[float]:
        torch.manual_seed(seed)
        model = model_class(dim, width)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        saved, losses = [], []
        for step in range(steps + 1):
            optimizer.zero_grad()
            noisy = data + sigma * torch.randn_like(data)
            loss = ((model(noisy, sigma) - data) ** 2).sum(dim=1).mean()
            loss.backward()
            if step in records:
                saved.append({name: p.detach().clone() for name, p in model.state_dict().items()})
                losses.append(loss.item())
            optimizer.step()
        return losses

    return train
