"""Training loops: optax gradient descent as one ``lax.scan``, and gradient flow as an ODE.

Conventions (docs/theory.md section 1): losses are the un-halved summed squared error of
:mod:`diffdyn.dynamics.objectives`; training time is ``tau = learning_rate * steps``; gradient flow is
``d theta / d tau = -eta grad L(theta)`` so that plain gradient descent with step ``eta`` is its
explicit Euler discretisation (``tau = eta * steps``).

The pattern is PureJaxRL's: :func:`make_train` closes over everything static (number of steps,
recording grid, optimizer family) and returns a pure ``train(key, hparams)`` that can be
``jax.jit(jax.vmap(...))``-ed over seeds and over every numeric hyperparameter in ``hparams``
(learning rate, init scale, spectrum, noise level, ...), so one compiled program runs a whole grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from diffdyn.dynamics.objectives import population_loss
from diffdyn.dynamics.status import Solved, from_diffrax, worst
from diffdyn.dynamics.validation import ConfigError, require_choice

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd,  # plain gradient descent: no momentum
    "adam": optax.adam,
}

InitFn = Callable[[PRNGKeyArray, PyTree], PyTree]
LossFn = Callable[[PyTree, PRNGKeyArray, PyTree], Float[Array, ""]]


class Trajectory(NamedTuple):
    """Parameters and loss recorded during training.

    ``params`` has the structure of the model's parameters with a leading ``record`` axis;
    ``loss[i]`` is the training loss at ``params[i]``, i.e. after ``steps[i]`` updates.
    """

    params: PyTree
    loss: Float[Array, " record"]
    steps: Int[Array, " record"]


def log_spaced_steps(num_steps: int, num_records: int, *, include_zero: bool = True) -> tuple[int, ...]:
    """About ``num_records`` distinct integers log-spaced in ``[1, num_steps]`` (plus ``0``).

    Rounding merges close values at small step counts, so fewer may be returned.
    """
    spaced = np.unique(np.round(np.geomspace(1, num_steps, num_records)).astype(int))
    return ((0,) if include_zero else ()) + tuple(int(s) for s in spaced)


def make_train(
    init: InitFn,
    loss: LossFn,
    *,
    num_steps: int,
    record_steps: Sequence[int],
    optimizer: str = "sgd",
    remat: bool = False,
) -> Callable[[PRNGKeyArray, PyTree], Trajectory]:
    """Build ``train(key, hparams) -> Trajectory`` running ``num_steps`` optimizer updates.

    Args:
        init: ``init(key, hparams) -> params``.
        loss: ``loss(params, key, hparams) -> scalar``; ``key`` is fresh at every step
            (``fold_in(key, step)``), for Monte Carlo losses with fresh noise each step.
        num_steps: number of updates (static).
        record_steps: increasing step counts in ``[0, num_steps]`` at which the parameters are
            recorded inside the compiled loop (no host round trip).
        optimizer: ``"sgd"`` (plain gradient descent) or ``"adam"``; the learning rate is
            ``hparams["learning_rate"]`` and may be a traced (vmapped) array.
        remat: wrap the scan body in ``jax.checkpoint`` with the policy
            ``jax.checkpoint_policies.nothing_saveable``. Reverse-mode differentiation of
            ``train`` (e.g. ``jax.grad`` of a final loss with respect to the learning rate, the
            spectrum or the init scale) then stores only each step's input carry (parameters,
            optimizer state, record buffer, slot) instead of every intermediate of the loss and
            its gradient, and recomputes the body during the backward pass: about one extra
            forward pass of compute, and the gradients of a ``10^4``-step run fit in memory
            (measured, ``d = 8`` linear denoiser, ``10^4`` steps: 5.9 MB of backward
            temporaries, 74 floats per step for 72 parameters, against 22 MB without). Values
            and gradients are unchanged (to ~1e-12, XLA may reassociate).
    """
    require_choice("optimizer", optimizer, OPTIMIZERS)
    records = np.asarray(record_steps, dtype=np.int64)
    if records.ndim != 1 or records.size == 0 or np.any(np.diff(records) <= 0):
        raise ConfigError("record_steps: must be a non-empty strictly increasing sequence")
    if records[0] < 0 or records[-1] > num_steps:
        raise ConfigError(f"record_steps: allowed range [0, num_steps={num_steps}]")
    num_records = records.size
    # A trailing sentinel that no step index equals, so the slot pointer may run past the end.
    targets = jnp.asarray(np.append(records, -1))

    def train(key: PRNGKeyArray, hparams: PyTree) -> Trajectory:
        init_key, loop_key = jax.random.split(key)
        params = init(init_key, hparams)
        transform = OPTIMIZERS[optimizer](learning_rate=hparams["learning_rate"])
        buffer = jax.tree.map(lambda p: jnp.zeros((num_records, *p.shape), p.dtype), params)
        carry = (params, transform.init(params), buffer, jnp.zeros(num_records), 0)

        def step(carry, index):
            params, opt_state, buffer, losses, slot = carry
            value, grads = jax.value_and_grad(loss)(params, jax.random.fold_in(loop_key, index), hparams)
            hit = index == targets[slot]
            row = jnp.minimum(slot, num_records - 1)
            buffer = jax.tree.map(lambda b, p: b.at[row].set(jnp.where(hit, p, b[row])), buffer, params)
            losses = losses.at[row].set(jnp.where(hit, value, losses[row]))
            updates, opt_state = transform.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, buffer, losses, slot + hit.astype(int)), None

        if remat:
            step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)

        # Index num_steps only records; the update it also computes is discarded.
        (_, _, buffer, losses, _), _ = jax.lax.scan(step, carry, jnp.arange(records[-1] + 1))
        return Trajectory(buffer, losses, jnp.asarray(records))

    return train


def gradient_flow(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    taus: Float[Array, " record"],
    *,
    eta: Float[Array, ""] | float = 1.0,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    max_steps: int = 1_000_000,
) -> Solved:
    """Solve ``d theta/d tau = -eta grad L(theta)`` numerically from ``theta(0) = params0``.

    For any differentiable loss (deep linear and nonlinear denoisers). The default solver is
    diffrax's adaptive explicit ``Tsit5``: its step count grows like ``rate_max * tau_max``
    where ``rate_max`` is the largest curvature rate near the path (``8 eta lambda_max`` for the
    symmetric two-layer denoiser). Quadratic losses (affine denoisers), whose rates reach
    ``2 eta (sigma_max^2 + lambda)``, are solved exactly by :func:`quadratic_gradient_flow`.
    Returns ``Solved(params, status)``: the parameters with a leading axis over ``taus``
    (increasing, >= 0) and the solver status (:mod:`diffdyn.dynamics.status`): a solve that needs more
    than ``max_steps`` steps stops there (unreached times are ``inf``) instead of raising.
    """
    solver = diffrax.Tsit5() if solver is None else solver
    velocity = jax.grad(loss)

    def vector_field(tau, params, rate):
        return jax.tree.map(lambda g: -rate * g, velocity(params))

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=0.0,
        t1=taus[-1],
        dt0=None,
        y0=params0,
        args=jnp.asarray(eta),
        saveat=diffrax.SaveAt(ts=taus),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
    )
    return Solved(solution.ys, from_diffrax(solution.result))


def _elementwise_derivative(fn, x, order):
    """``order``-th derivative of an elementwise function ``fn`` at every entry of ``x``."""
    for _ in range(order):
        fn = (lambda f: lambda y: jax.jvp(f, (y,), (jnp.ones_like(y),))[1])(fn)
    return fn(x)


def _divided_differences(decay, curvature, values):
    """First divided differences ``(f(h_i) - f(h_j)) / (h_i - h_j)`` of ``f = decay``, with
    ``f'(h_i)`` on the diagonal (the Daleckii-Krein matrix of the spectral function).

    Near-equal pairs (degenerate Hessian eigenvalues, e.g. the ``d`` copies of every curvature of
    a full ``d x d`` weight) use the midpoint series ``f'(m) + delta^2 f'''(m) / 24``, accurate to
    ``O(delta^4 f^(5))``, wherever its correction term is below ``1e-6 |f'(m)|``; elsewhere the
    direct quotient has a cancellation error below ``~1e-13`` relative (for exponential-like ``f``).
    """
    delta = curvature[:, None] - curvature[None, :]
    middle = 0.5 * (curvature[:, None] + curvature[None, :])
    slope = _elementwise_derivative(decay, middle, 1)
    third = _elementwise_derivative(decay, middle, 3)
    series = slope + jnp.square(delta) * third / 24.0
    use_series = jnp.square(delta) * jnp.abs(third) <= 24e-6 * jnp.abs(slope)
    use_series = use_series | (delta == 0)
    quotient = (values[:, None] - values[None, :]) / jnp.where(use_series, 1.0, delta)
    return jnp.where(use_series, series, quotient)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _spectral_action(decay_integral, hessian, time, eta, vector):
    """``V diag(decay_integral(h, time, eta)) V^T vector`` with ``hessian = V diag(h) V^T``.

    Differentiable in every argument even when ``hessian`` has repeated eigenvalues, where the
    derivative of ``eigh`` itself is undefined (NaN): the custom JVP differentiates the spectral
    matrix function ``F(H) = V diag(f(h)) V^T`` as a whole, ``dF = V [D o (V^T dH V)] V^T`` with
    ``D`` the divided differences of ``f`` (Daleckii-Krein; Higham, "Functions of Matrices",
    thm. 3.11), which is smooth through degeneracies. Reverse mode works through the (linear)
    JVP; derivatives of second order are not supported.
    """
    curvature, vectors = jnp.linalg.eigh(hessian)
    return vectors @ (decay_integral(curvature, time, eta) * (vectors.T @ vector))


@_spectral_action.defjvp
def _spectral_action_jvp(decay_integral, primals, tangents):
    hessian, time, eta, vector = primals
    d_hessian, d_time, d_eta, d_vector = tangents
    curvature, vectors = jnp.linalg.eigh(hessian)
    projected = vectors.T @ vector
    values, d_values = jax.jvp(lambda t, e: decay_integral(curvature, t, e), (time, eta), (d_time, d_eta))
    decay = lambda h: decay_integral(h, time, eta)
    rotated = vectors.T @ d_hessian @ vectors
    rotated = 0.5 * (rotated + rotated.T)  # eigh reads the symmetric part of its input
    d_spectral = (_divided_differences(decay, curvature, values) * rotated) @ projected
    d_rotated = d_spectral + d_values * projected + values * (vectors.T @ d_vector)
    return vectors @ (values * projected), vectors @ d_rotated


def _quadratic_solution(loss, params0, decay_integral, eta):
    """``theta = theta0 - V diag(decay_integral(h, time, eta)) V^T grad L(theta0)`` over the
    Hessian's eigenpairs ``(h, V)`` at ``theta0``: exact for quadratic ``L``.

    Differentiable (forward and reverse mode, first order) in anything ``loss`` and ``params0``
    close over, in ``eta`` and in the time, also when the Hessian has repeated eigenvalues (see
    :func:`_spectral_action`). Under ``jax.vmap`` over the time only, the eigendecomposition is
    not batched: it is computed once.
    """
    flat0, unravel = ravel_pytree(params0)
    flat_loss = lambda flat: loss(unravel(flat))
    gradient = jax.grad(flat_loss)(flat0)
    hessian = jax.hessian(flat_loss)(flat0)
    eta = jnp.asarray(eta, dtype=flat0.dtype)

    def at(time):
        return unravel(flat0 - _spectral_action(decay_integral, hessian, time, eta, gradient))

    return at


_PHI1_SERIES = np.array([(-1.0) ** n / math.factorial(n + 1) for n in range(14, -1, -1)])
"""``(1 - e^-x) / x = sum_n (-x)^n / (n+1)!`` to ``x^14``, highest power first (for polyval)."""


def _phi1(x):
    """``(1 - e^-x) / x`` (``1`` at ``x = 0``) with accurate derivatives of every order near 0:
    power series for ``|x| < 0.1`` (truncation ~1e-29), ``-expm1(-x) / x`` elsewhere."""
    small = jnp.abs(x) < 0.1
    series = jnp.polyval(jnp.asarray(_PHI1_SERIES, x.dtype), jnp.where(small, x, 0.0))
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, series, -jnp.expm1(-safe) / safe)


def _flow_decay_integral(curvature, tau, eta):
    """``eta int_0^tau exp(-eta h s) ds = eta tau phi1(eta h tau)``."""
    return eta * tau * _phi1(eta * curvature * tau)


def _descent_decay_integral(curvature, steps, eta):
    """``sum_{j<k} eta (1 - eta h)^j = (1 - (1 - eta h)^k) / h`` (``eta k`` where ``h = 0``)."""
    factor = 1.0 - eta * curvature
    small = jnp.abs(eta * curvature) < 1e-12
    safe = jnp.where(small, 1.0, curvature)
    return jnp.where(small, eta * steps, (1.0 - factor**steps) / safe)


def quadratic_gradient_flow(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    *,
    eta: Float[Array, ""] | float = 1.0,
) -> Callable[[Float[Array, ""]], PyTree]:
    """Exact gradient flow ``d theta/d tau = -eta grad L`` of a quadratic loss, as ``theta(tau)``.

    The Hessian ``H`` is computed once by autodiff in the flat parameter space and
    eigendecomposed (as neural-tangents' ``predict``): with ``g0 = grad L(theta0)``,
    ``theta(tau) = theta0 - V diag((1 - exp(-eta h tau)) / h) V^T g0`` (``eta tau`` where
    ``h = 0``). No knowledge of the denoiser's structure is used, so it independently checks the
    per-mode closed forms of :mod:`diffdyn.dynamics.theory`. Cost: one ``P x P`` eigendecomposition for
    ``P`` parameters. The returned function broadcasts over nothing: ``jax.vmap`` it over taus.

    ``theta(tau)`` is differentiable (``jax.grad`` / ``jax.jacfwd``, first order) in ``tau``,
    ``eta`` and whatever ``loss`` and ``params0`` close over (data spectrum, noise level, init),
    including at the repeated Hessian eigenvalues every full weight matrix has, where plain
    autodiff through ``eigh`` gives NaN: see :func:`_spectral_action`.
    """
    return _quadratic_solution(loss, params0, _flow_decay_integral, eta)


def quadratic_gradient_descent(
    loss: Callable[[PyTree], Float[Array, ""]],
    params0: PyTree,
    *,
    eta: Float[Array, ""] | float,
) -> Callable[[Int[Array, ""]], PyTree]:
    """Exact plain gradient descent with step ``eta`` on a quadratic loss, as ``theta(steps)``.

    ``theta_k = theta0 - V diag((1 - (1 - eta h)^k) / h) V^T g0``; used to check the
    discrete-GD closed form and the ``eta -> 0`` limit without running ``k`` steps.
    Differentiable like :func:`quadratic_gradient_flow` (``steps`` may be an integer).
    """
    return _quadratic_solution(loss, params0, _descent_decay_integral, eta)


def train_per_sigma(
    model,
    mean: Float[Array, " d"],
    cov: Float[Array, "d d"],
    scale: Float[Array, ""],
    key: PRNGKeyArray,
    nodes: Float[Array, " s"],
    etas: Float[Array, " s"],
    taus: Float[Array, " t"],
    *,
    quadratic: bool,
    rtol: float = 1e-6,
    max_steps: int = 1_000_000,
) -> Solved:
    """Independent denoisers at every noise level ``nodes[i]`` ([WP] sec. 3: one set of
    parameters per sigma), each trained by gradient flow with rate ``etas[i]`` (a per-sigma rate
    is a per-sigma loss weight) on the exact population loss of data with moments ``(mean, cov)``
    (:func:`diffdyn.dynamics.objectives.population_loss`: summed, un-halved; time ``tau`` = learning rate
    x steps). ``model`` has ``init(key, scale)`` and ``affine(params) -> (A, c)``.

    Every node starts from the same initialisation, so the parameters vary smoothly with sigma
    and can be interpolated in ``log sigma``. ``quadratic`` (affine-in-parameters denoisers):
    the exact flow of :func:`quadratic_gradient_flow`; otherwise diffrax (:func:`gradient_flow`,
    tolerance ``rtol``, at most ``max_steps`` steps per node). Returns ``Solved(params, status)``
    with leaves ``(tau, node, ...)``.
    """
    params0 = model.init(key, scale)

    def at_node(sigma, eta):
        loss = lambda params: population_loss(model.affine, params, mean, cov, sigma)
        if quadratic:
            return Solved(jax.vmap(quadratic_gradient_flow(loss, params0, eta=eta))(taus), jnp.int32(0))
        return gradient_flow(loss, params0, taus, eta=eta, rtol=rtol, atol=1e-3 * rtol, max_steps=max_steps)

    by_node, statuses = jax.vmap(at_node)(nodes, etas)
    return Solved(jax.tree.map(lambda leaf: jnp.swapaxes(leaf, 0, 1), by_node), worst(statuses))


def minimize(objective: Callable[[PyTree], Float[Array, ""]], start: PyTree, *, learning_rate: float, num_steps: int) -> tuple[PyTree, Float[Array, " k"]]:
    """Adam on ``objective`` from ``start`` with a cosine-decayed step (from ``learning_rate`` to
    1% of it over ``num_steps``), one ``lax.scan``: the final parameters and the objective's
    history (``num_steps + 1`` values). For inverse design through differentiable dynamics."""
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(num_steps, 1), alpha=0.01))

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(objective)(params)
        updates, state = optimizer.update(grad, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, _), history = jax.lax.scan(step, (start, optimizer.init(start)), length=num_steps)
    return params, jnp.append(history, objective(params))
