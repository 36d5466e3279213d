"""Sampling: the probability-flow ODE, the EDM Heun sampler, exact moments for affine denoisers.

Conventions (docs/theory.md section 1):

* EDM / variance-exploding sigma time: ``x = x0 + sigma z``; a denoiser ``D(x, sigma)``
  estimates ``E[x0 | x]`` for ONE sample ``x`` (any shape) and a scalar ``sigma``. Batches are
  added outside with ``jax.vmap``.
* Probability-flow ODE (Karras et al. 2022, "EDM", eq. 1 with sigma(t) = t):
  ``dx/dsigma = -(D(x, sigma) - x) / sigma``, run from ``sigma_max = 80`` down to
  ``sigma_min = 0.002`` with ``x(sigma_max) ~ N(0, sigma_max^2 I)``.
* The diffrax solvers integrate it in ``u = ln sigma``, where it reads ``dx/du = x - D(x, e^u)``
  (``u`` decreasing, ``t1 < t0``); this takes ~3x fewer adaptive steps than sigma time.

OU / VP time (docs/theory.md 1; [BUBM], [BBdBM]): a score ``s(x_t, t)`` of the OU process
``x_t = e^-t x0 + sqrt(Delta_t) xi`` becomes a sigma-time denoiser by
:func:`vp_score_denoiser` (``x = e^t x_t``, ``sigma^2 = e^2t - 1``), and :func:`vp_heun_sample`
integrates the OU probability-flow ODE with it, from an OU state at ``t_max`` down to ``t_min``.

For a denoiser affine in ``x``, ``D(x, sigma) = A(sigma) x + c(sigma)`` (the per-sigma linear
model of [WP] = Wang & Pehlevan, arXiv 2503.03206, sec. 3-4), the flow is linear and the mean and
covariance of the generated distribution follow exactly from :func:`affine_moment_flow`.

Compilation: the diffrax solves are ``filter_jit``-ed with the denoiser passed as data, so a call
with the same denoiser function reuses the compiled solver. A pytree denoiser (the module
:func:`grid_denoiser` returns, or a ``jax.tree_util.Partial`` over a module-level function)
carries its parameters as traced arrays, so new parameter values do not recompile either; a
fresh ``lambda`` per call does.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from diffdyn.dynamics.schedules import (
    SIGMA_MAX,
    SIGMA_MIN,
    karras_sigmas,
    sigma_from_vp_time,
    sigma_time_from_vp,
    vp_noise_variance,
    vp_signal_scale,
    vp_time_from_sigma,
)
from diffdyn.dynamics.status import Solved, from_diffrax

SampleDenoiser = Callable[[Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]
AffineDenoiser = Callable[[Float[Array, ""]], tuple[Float[Array, "d d"], Float[Array, " d"]]]
ParamDenoiser = Callable[[PyTree, Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]
VPScore = Callable[[Float[Array, " d"], Float[Array, ""]], Float[Array, " d"]]


def _solve_log_sigma(
    vector_field: Callable[[Float[Array, ""], PyTree, PyTree], PyTree],
    args: PyTree,
    y0: PyTree,
    log_sigma_start: Float[Array, ""],
    log_sigma_end: Float[Array, ""],
    saveat: diffrax.SaveAt,
    *,
    rtol: float,
    atol: float,
    solver: diffrax.AbstractSolver | None,
    max_steps: int,
    adjoint: diffrax.AbstractAdjoint | None,
) -> Solved:
    """Adaptive diffrax solve of ``dy/du = vector_field(u, y, args)`` in ``u = ln sigma``.

    Steps are chosen by ``PIDController(rtol, atol)`` with no minimum step, the first step by
    diffrax's own estimate (``dt0=None``). ``solver`` defaults to ``Tsit5()`` and ``adjoint`` to
    ``RecursiveCheckpointAdjoint()``: gradients are exact backpropagation through the solver's
    steps (so they match the computed forward solution, not a re-solved adjoint ODE); memory is
    ~ ``log(max_steps)`` checkpoints of the state and the backward pass recomputes forward steps
    (``O(n log n)`` for ``n`` steps). The denoiser travels in ``args``: diffrax's ``filter_jit``
    traces its arrays (e.g. the parameters of the module :func:`grid_denoiser` returns) and keys
    the compiled program on the rest, so a repeated call with the same function reuses it.
    """
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Tsit5() if solver is None else solver,
        t0=log_sigma_start,
        t1=log_sigma_end,
        dt0=None,
        y0=y0,
        args=args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
        throw=False,
    )
    return Solved(solution.ys, from_diffrax(solution.result))


def _pf_ode_vector_field(u: Float[Array, ""], x: Float[Array, "*shape"], denoise: SampleDenoiser) -> Float[Array, "*shape"]:
    """Probability-flow vector field in ``u = ln sigma``: ``dx/du = x - D(x, e^u)``."""
    return x - denoise(x, jnp.exp(u))


def _affine_moment_vector_field(
    u: Float[Array, ""],
    state: tuple[Float[Array, " d"], Float[Array, "d d"]],
    affine: AffineDenoiser,
) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    """``(dm/du, dC/du) = (B m - c, B C + C B^T)`` with ``B = I - A(e^u)`` (``C`` symmetric)."""
    mean, cov = state
    matrix, offset = affine(jnp.exp(u))
    drift = jnp.eye(matrix.shape[0], dtype=matrix.dtype) - matrix
    drift_cov = drift @ cov
    return drift @ mean - offset, drift_cov + drift_cov.T


def pf_ode_sample(
    denoise: SampleDenoiser,
    x_T: Float[Array, "*shape"],
    *,
    sigma_max: float = SIGMA_MAX,
    sigma_min: float = SIGMA_MIN,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 16384,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Solved:
    """Solve the probability-flow ODE for ONE sample from ``sigma_max`` down to ``sigma_min``.

    ``x_T`` is the state at ``sigma_max`` (draw it from ``N(0, sigma_max^2 I)``); the result is
    ``Solved(x(sigma_min), status)`` (:mod:`diffdyn.dynamics.status`; ``max_steps`` bounds the cost of a
    stiff solve, whose status then says so). The ODE ``dx/du = x - D(x, e^u)``, ``u = ln sigma``, is solved with an
    adaptive ``PIDController(rtol, atol)`` (no ``dtmin``); ``solver`` defaults to
    ``diffrax.Tsit5()``. ``adjoint`` defaults to ``diffrax.RecursiveCheckpointAdjoint()``: the
    sample is differentiable (in ``x_T`` and in whatever ``denoise`` closes over) by
    backpropagation through the solver steps, with memory ~ ``log(max_steps)`` checkpoints of the
    state (not one per step), at the price of recomputing forward steps in the backward pass.
    Karras et al. 2022 (EDM) eq. 1; docs/theory.md section 1.
    """
    path, status = pf_ode_trajectory(
        denoise,
        x_T,
        jnp.reshape(jnp.asarray(sigma_min), (1,)),
        sigma_max=sigma_max,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        adjoint=adjoint,
    )
    return Solved(path[0], status)


def pf_ode_trajectory(
    denoise: SampleDenoiser,
    x_T: Float[Array, "*shape"],
    sigmas: Float[Array, " n"],
    *,
    sigma_max: float = SIGMA_MAX,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 16384,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Solved:
    """The probability-flow ODE solution of ONE sample, saved at the decreasing levels ``sigmas``
    (``Solved(path[n, ...], status)``).

    Starts from ``x_T`` at ``sigma_max`` and ends at ``sigmas[-1]``; every entry of ``sigmas``
    must lie in ``(0, sigma_max]`` and they must decrease (they are diffrax ``SaveAt(ts=ln sigmas)``
    times). Solver, tolerances and gradients as in :func:`pf_ode_sample`.
    """
    log_sigmas = jnp.log(sigmas)
    return _solve_log_sigma(
        _pf_ode_vector_field,
        denoise,
        x_T,
        jnp.log(sigma_max),
        log_sigmas[-1],
        diffrax.SaveAt(ts=log_sigmas),
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        adjoint=adjoint,
    )


def heun_sample(denoise: SampleDenoiser, x_T: Float[Array, "*shape"], sigmas: Float[Array, " n"]) -> Float[Array, "*shape"]:
    """Deterministic EDM Heun sampler (Karras et al. 2022, Alg. 1, ``S_churn = 0``), ONE sample.

    ``sigmas`` decreases from the starting level of ``x_T`` (e.g.
    :func:`diffdyn.dynamics.schedules.karras_sigmas`); each step ``sigma_i -> sigma_{i+1}`` takes an Euler
    step of ``dx/dsigma = (x - D(x, sigma)) / sigma`` and, when ``sigma_{i+1} > 0``, corrects it
    with the trapezoidal (Heun) average of the slopes. A final step to ``sigma = 0`` stays Euler
    and returns ``D(x, sigma_{n-2})``. Second order in the step size. ``2 (n - 1)`` denoiser calls
    for ``n = len(sigmas)``: the correction on a step to 0 is evaluated at a dummy ``sigma = 1``
    and discarded, which keeps the step one branch-free ``lax.scan`` body.
    """

    def step(x, sigma_pair):
        sigma, sigma_next = sigma_pair[0], sigma_pair[1]
        slope = (x - denoise(x, sigma)) / sigma
        x_euler = x + (sigma_next - sigma) * slope
        to_zero = sigma_next <= 0
        sigma_eval = jnp.where(to_zero, 1.0, sigma_next)
        slope_next = (x_euler - denoise(x_euler, sigma_eval)) / sigma_eval
        x_heun = x + (sigma_next - sigma) * 0.5 * (slope + slope_next)
        return jnp.where(to_zero, x_euler, x_heun).astype(x.dtype), None

    pairs = jnp.stack([sigmas[:-1], sigmas[1:]], axis=-1)
    x_0, _ = jax.lax.scan(step, x_T, pairs)
    return x_0


def interpolate_log_sigma(params_grid: PyTree, sigma_grid: Float[Array, " n"], sigma: Float[Array, ""]) -> PyTree:
    """The pytree ``params_grid`` at noise level ``sigma``, linear in ``ln sigma`` between nodes.

    Every leaf of ``params_grid`` has a leading axis of length ``len(sigma_grid)``; ``sigma_grid``
    increases and has at least 2 nodes. Outside ``[sigma_grid[0], sigma_grid[-1]]`` the end
    node's value is returned (clamped). This turns [WP]'s per-sigma parameters (independent at
    every training node) into a function of continuous ``sigma``.
    """
    num_nodes = jnp.shape(sigma_grid)[0]
    if num_nodes < 2:
        raise ValueError(f"sigma_grid: needs at least 2 nodes; got {num_nodes}")
    log_grid = jnp.log(sigma_grid)
    log_sigma = jnp.clip(jnp.log(sigma), log_grid[0], log_grid[-1])
    lower = jnp.clip(jnp.searchsorted(log_grid, log_sigma, side="right") - 1, 0, num_nodes - 2)
    weight = (log_sigma - log_grid[lower]) / (log_grid[lower + 1] - log_grid[lower])

    def blend(leaf):
        leaf = jnp.asarray(leaf)
        return (1.0 - weight) * leaf[lower] + weight * leaf[lower + 1]

    return jax.tree.map(blend, params_grid)


class _GridDenoiser(eqx.Module):
    """``denoise(x, sigma)`` from per-node parameters; see :func:`grid_denoiser`."""

    apply: ParamDenoiser = eqx.field(static=True)
    params_grid: PyTree
    sigma_grid: Float[Array, " n"]

    def __call__(self, x: Float[Array, "*shape"], sigma: Float[Array, ""]) -> Float[Array, "*shape"]:
        params = interpolate_log_sigma(self.params_grid, self.sigma_grid, sigma)
        return self.apply(params, x, sigma)


def grid_denoiser(
    apply: ParamDenoiser,
    params_grid: PyTree,
    sigma_grid: Float[Array, " n"],
) -> SampleDenoiser:
    """Continuous-sigma denoiser from parameters trained at the nodes ``sigma_grid``.

    Returns ``denoise(x, sigma) = apply(params(sigma), x, sigma)`` with
    ``params(sigma) = interpolate_log_sigma(params_grid, sigma_grid, sigma)``, ready for
    :func:`pf_ode_sample` and :func:`heun_sample` ([WP] sec. 3: a separate linear denoiser per
    noise level). It is a pytree (an ``equinox.Module``) whose leaves are ``params_grid`` and
    ``sigma_grid``, with ``apply`` static: it can be passed through ``jax.jit`` / ``jax.vmap``,
    and new parameters (another checkpoint of a training run) reuse the compiled solver as long
    as ``apply`` is the same function.
    """
    return _GridDenoiser(apply, params_grid, sigma_grid)


class _VPScoreDenoiser(eqx.Module):
    """``denoise(x, sigma)`` from an OU-time score; see :func:`vp_score_denoiser`."""

    score: VPScore

    def __call__(self, x: Float[Array, " d"], sigma: Float[Array, ""]) -> Float[Array, " d"]:
        signal = vp_signal_scale(vp_time_from_sigma(sigma))  # e^-t = (1 + sigma^2)^-1/2
        return x + jnp.square(sigma) * signal * self.score(signal * x, vp_time_from_sigma(sigma))


def vp_score_denoiser(score: VPScore) -> SampleDenoiser:
    """Sigma-time denoiser of an OU-time score ``score(x_t, t)`` (ONE sample; docs/theory.md 1).

    With ``x = e^t x_t`` and ``sigma^2 = e^2t - 1`` the sigma-time law is ``p_sigma(x) ∝
    P_t(e^-t x)``, so its score is ``e^-t s(e^-t x, t)`` and Tweedie's denoiser is
    ``D(x, sigma) = x + sigma^2 e^-t s(e^-t x, t)``. The result is an ``equinox.Module`` holding
    ``score``: pass a pytree score (an ``equinox.Module`` or a ``jax.tree_util.Partial``) so that
    new parameters reuse compiled samplers.
    """
    return _VPScoreDenoiser(score)


def vp_gaussian_start(key: PRNGKeyArray, mean: Float[Array, " d"], cov: Float[Array, "d d"], t: float, num: int) -> Float[Array, "num d"]:
    """``num`` OU states at time ``t`` from ``N(e^-t m, e^-2t C + Delta_t I)``: the exact law
    of ``x_t`` for Gaussian data ``N(m, C)``, and a start for :func:`vp_heun_sample` that matches
    the first two moments of any data (the higher cumulants of ``x_t`` decay like ``e^-3t``)."""
    scale = vp_signal_scale(t)
    noised = jnp.square(scale) * cov + vp_noise_variance(t) * jnp.eye(mean.shape[0], dtype=cov.dtype)
    return scale * mean[None, :] + jax.random.normal(key, (num, mean.shape[0]), cov.dtype) @ jnp.linalg.cholesky(noised).T


def vp_heun_sample(
    score: VPScore,
    x_start: Float[Array, " d"],
    *,
    t_max: float,
    t_min: float,
    num_steps: int,
    rho: float = 7.0,
) -> Float[Array, " d"]:
    """ONE sample of the OU probability-flow ODE ``dx_t/dt = -x_t - s(x_t, t)``, run backwards
    from the OU state ``x_start`` at ``t_max`` to ``t_min``, then denoised (docs/theory.md 1).

    Done in sigma time by :func:`heun_sample` with :func:`vp_score_denoiser`: ``num_steps``
    Karras levels (:func:`diffdyn.dynamics.schedules.karras_sigmas`, exponent ``rho``) from
    ``sigma(t_max)`` down to ``sigma(t_min)``, ``sigma(t) = sqrt(e^2t - 1)``, then a final step
    to ``sigma = 0``, so the result is Tweedie's estimate of ``x0`` from the state at ``t_min``,
    ``e^t_min (x + Delta s(x, t_min))``: a sample of the data law smoothed at ``t_min``, in the
    units of ``x0``. ``2 num_steps`` score calls; second order in the step.
    """
    sigmas = karras_sigmas(num_steps, sigma_from_vp_time(t_min), sigma_from_vp_time(t_max), rho)
    return heun_sample(vp_score_denoiser(score), sigma_time_from_vp(x_start, t_max), sigmas)


def affine_moment_flow(
    affine: AffineDenoiser,
    mean_T: Float[Array, " d"],
    cov_T: Float[Array, "d d"],
    *,
    sigma_max: float = SIGMA_MAX,
    sigma_min: float = SIGMA_MIN,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 16384,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Solved:
    """Exact mean and covariance pushed through the probability-flow ODE of an affine denoiser.

    For ``D(x, sigma) = A(sigma) x + c(sigma)`` with ``affine(sigma) -> (A, c)`` the flow
    ``dx/du = x - D(x, e^u)`` (``u = ln sigma``) is linear, so with ``B = I - A``:
    ``dm/du = B m - c`` and ``dC/du = B C + C B^T``, solved from ``u = ln sigma_max`` (state
    ``(mean_T, cov_T)``) down to ``ln sigma_min``. Returns ``Solved((m, C), status)`` at ``sigma_min``. For
    commuting ``A(sigma)`` this is [WP]'s ``C = M C_T M^T``,
    ``M = exp(integral_{sigma_min}^{sigma_max} (A_s - I)/s ds)`` (docs/theory.md section 2 sign).
    Solver, step control and gradients as in :func:`pf_ode_sample`. The error control weighs all
    entries of ``(m, C)``, which start at ``~sigma_max^2``: a mode ending with a small variance
    is resolved less well relative to itself (rtol 1e-7 gives ~1e-6 on a 0.01 mode of a
    ``sigma_max = 80`` flow; rtol 1e-9 gives ~2e-8).
    """
    (mean, cov), status = _solve_log_sigma(
        _affine_moment_vector_field,
        affine,
        (mean_T, cov_T),
        jnp.log(sigma_max),
        jnp.log(sigma_min),
        diffrax.SaveAt(t1=True),
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        adjoint=adjoint,
    )
    return Solved((mean[0], cov[0]), status)


def generated_covariance(
    affine: AffineDenoiser,
    dim: int,
    *,
    sigma_max: float = SIGMA_MAX,
    sigma_min: float = SIGMA_MIN,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    solver: diffrax.AbstractSolver | None = None,
    max_steps: int = 16384,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Solved:
    """Covariance at ``sigma_min`` of the PF-ODE samples of an affine denoiser (``Solved(C, status)``).

    :func:`affine_moment_flow` started from ``x(sigma_max) ~ N(0, sigma_max^2 I)`` in ``dim``
    dimensions (the offsets ``c`` move only the mean, so they do not enter).
    """
    (_, cov), status = affine_moment_flow(
        affine,
        jnp.zeros((dim,)),
        jnp.square(sigma_max) * jnp.eye(dim),
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        adjoint=adjoint,
    )
    return Solved(cov, status)


def generated_mode_variances(
    affine_of: Callable[[PyTree], tuple[Float[Array, "d d"], Float[Array, " d"]]],
    params_grid: PyTree,
    nodes: Float[Array, " s"],
    basis: Float[Array, "d k"],
    *,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rtol: float = 1e-7,
    max_steps: int = 16384,
) -> Solved:
    """Generated variance along every column of ``basis`` of a per-sigma affine denoiser whose
    parameters ``params_grid`` (leaves ``(node, ...)``) were trained at ``nodes`` and are
    interpolated in ``log sigma`` (:func:`interpolate_log_sigma`), by exact covariance
    propagation through the PF-ODE (:func:`generated_covariance`) started from
    ``N(0, sigma_max^2 I)``. Propagated in the basis, where the solver's per-component tolerance
    is relative to each mode's own variance (small modes stay accurate). Returns
    ``Solved(variance[k], status)``.
    """

    def affine(sigma):
        matrix, offset = affine_of(interpolate_log_sigma(params_grid, nodes, sigma))
        return basis.T @ matrix @ basis, basis.T @ offset

    cov, status = generated_covariance(affine, basis.shape[1], sigma_max=sigma_max, sigma_min=sigma_min, rtol=rtol, atol=1e-3 * rtol, max_steps=max_steps)
    return Solved(jnp.diagonal(cov), status)
