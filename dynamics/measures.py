"""Measurements on generated distributions: variance per eigenmode, emergence times, fits, KL.

Conventions (docs/theory.md sections 2 and 6, [WP] = Wang & Pehlevan, arXiv 2503.03206):

* A mode is a column ``u_k`` of an orthonormal (real) or unitary (complex, e.g. Fourier) basis;
  the generated variance along it is ``lambda~_k = u_k^H C u_k``, real.
* Time ``tau`` is training time (learning rate x steps, docs/theory.md section 1); emergence times
  are in whatever unit the recorded ``taus`` use.
* Emergence time ``tau*_k`` ([WP] sec. 3-4): the first recorded time at which ``lambda~_k(tau)``
  crosses the geometric mean ``sqrt(v0 lambda_k)`` (or the harmonic mean
  ``2 / (1/v0 + 1/lambda_k)``) of its initial value ``v0`` and its target ``lambda_k``,
  located by linear interpolation in log-log coordinates. The law ``tau* ~ lambda^-alpha`` is
  fitted by OLS of ``log tau*`` on ``log lambda``, separately for rising and decaying modes,
  excluding the "gray zone" where the target is within 0.5x-2x of the initial variance.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Complex, Float

from diffdyn.dynamics.validation import require_choice, require_range

_THRESHOLDS = {
    "geometric": lambda initial, target: jnp.sqrt(initial * target),
    "harmonic": lambda initial, target: 2.0 / (1.0 / initial + 1.0 / target),
}


@jax.jit
def mode_variances(cov: Float[Array, "d d"], basis: Float[Array, "d k"] | Complex[Array, "d k"]) -> Float[Array, " k"]:
    """Variance ``u_k^H C u_k`` of the covariance ``cov`` along each column ``u_k`` of ``basis``.

    ``basis`` may be real orthonormal (e.g. the data eigenvectors) or complex unitary (e.g. the
    normalised DFT for circulant models); the result is real.
    """
    return jnp.real(jnp.einsum("ik,ij,jk->k", jnp.conj(basis), cov, basis))


@jax.jit
def sample_mode_variances(samples: Float[Array, "n d"], basis: Float[Array, "d k"] | Complex[Array, "d k"]) -> Float[Array, " k"]:
    """Unbiased variance of ``samples`` along each column of ``basis``.

    Projections ``u_k^H (x_i - mean)`` of the sample-mean-centred samples, squared in modulus and
    summed with the ``1 / (n - 1)`` normalisation: ``mode_variances(sample covariance, basis)``
    without forming the covariance.
    """
    centred = samples - jnp.mean(samples, axis=0, keepdims=True)
    projections = centred @ jnp.conj(basis)
    return jnp.sum(jnp.square(jnp.abs(projections)), axis=0) / (samples.shape[0] - 1)


def _threshold_and_direction(taus, variance, target, criterion, initial):
    """Validate ONE mode's record and return ``(threshold, rising)`` as in :func:`emergence_time`:
    ``v0 = initial`` or ``variance[0]``, the criterion's mean of ``v0`` and ``target``, and
    ``rising = v0 < threshold``. Raises ``ConfigError`` for an unknown criterion."""
    threshold_of = _THRESHOLDS[require_choice("criterion", criterion, _THRESHOLDS)]
    taus, variance = jnp.asarray(taus), jnp.asarray(variance)
    if taus.ndim != 1 or variance.shape != taus.shape:
        raise ValueError(f"variance: must have the shape of taus {taus.shape} (one mode); got {variance.shape}")
    start = variance[0] if initial is None else initial
    threshold = threshold_of(start, target)
    return threshold, start < threshold


@partial(jax.jit, static_argnames="criterion")
def emergence_time(
    taus: Float[Array, " t"],
    variance: Float[Array, " t"],
    target: Float[Array, ""],
    *,
    criterion: str = "geometric",
    initial: Float[Array, ""] | None = None,
) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """Emergence time of ONE mode whose variance ``variance[i]`` was recorded at times ``taus[i]``.

    ``v0 = initial`` if given, else ``variance[0]``; the threshold is ``sqrt(v0 * target)``
    (``criterion="geometric"``) or ``2 / (1/v0 + 1/target)`` (``"harmonic"``), and the mode is
    ``rising`` if ``v0 < threshold``. ``tau*`` is the first record at which the variance is past
    the threshold (``>=`` rising, ``<=`` decaying), refined by linear interpolation of ``log tau``
    against ``log variance`` between that record and the one before; it is ``taus[0]`` if the
    very first record is already past it and NaN if the trajectory never crosses.
    ``taus`` (increasing) and ``variance`` must be positive. Pure ``jnp``: vmap over modes and
    jit freely ([WP] sec. 3-4, docs/theory.md section 2). Returns ``(tau_star, rising)``.
    """
    threshold, rising = _threshold_and_direction(taus, variance, target, criterion, initial)
    crossed = jnp.where(rising, variance >= threshold, variance <= threshold)
    upper = jnp.argmax(crossed)
    lower = jnp.maximum(upper - 1, 0)
    log_tau, log_var = jnp.log(taus), jnp.log(variance)
    bracketed = upper > lower
    span = jnp.where(bracketed, log_var[upper] - log_var[lower], 1.0)
    fraction = jnp.where(bracketed, (jnp.log(threshold) - log_var[lower]) / span, 0.0)
    tau_star = jnp.exp(log_tau[lower] + fraction * (log_tau[upper] - log_tau[lower]))
    return jnp.where(jnp.any(crossed), tau_star, jnp.nan), rising


def soft_emergence_time(
    taus: Float[Array, " t"],
    variance: Float[Array, " t"],
    target: Float[Array, ""],
    *,
    criterion: str = "geometric",
    temperature: Float[ArrayLike, ""] = 0.05,
    initial: Float[Array, ""] | None = None,
) -> tuple[Float[Array, ""], Bool[Array, ""]]:
    """Smooth emergence time of ONE mode: differentiable everywhere in ``variance``, ``target``
    and ``initial`` (and so in anything upstream: spectrum, learning rate, init scale, ...).

    Threshold, ``v0`` and direction exactly as in :func:`emergence_time`. With
    ``x(tau) = (ln threshold - ln variance(tau)) / temperature`` the soft "not yet emerged"
    indicator is ``s = sigmoid(x)`` for a rising mode and ``sigmoid(-x)`` for a decaying one
    (``~1`` before the crossing, ``~0`` after), and::

        ln tau* = ln taus[0] + integral_{ln taus[0]}^{ln taus[-1]} s d(ln tau)

    by the trapezoid rule on the recorded grid: the log-time spent before crossing. For a
    monotone curve it tends to the hard crossing of :func:`emergence_time` as ``temperature -> 0``
    and the grid refines: across a crossing that is straight in log-log coordinates the
    integral of the sigmoid equals the hard step exactly (``sigmoid - 1/2`` is odd), so the error
    comes from the curvature, ``O(temperature^2)``, and from the trapezoid rule, which needs the
    transition, ``temperature / |d ln variance / d ln tau|`` wide in ``ln tau``, to span a few
    records (measured on 2000 records per 5 decades: relative error ~5e-6 at temperature 0.01,
    ~1e-3 at 0.001 where it no longer does). Unlike the hard version it is never NaN: a mode that never
    crosses gets ``~taus[-1]``, one already past the threshold at the first record ``~taus[0]``;
    a non-monotone curve counts every stretch on the un-emerged side. ``rising`` is
    piecewise constant (zero derivative), as in :func:`emergence_time`. ``taus`` (increasing) and
    ``variance`` must be positive; ``temperature > 0`` (checked when it is a concrete number).
    Pure ``jnp``: ``jax.vmap`` over modes and ``jax.jit`` freely. Returns ``(tau_star, rising)``.
    """
    threshold, rising = _threshold_and_direction(taus, variance, target, criterion, initial)
    if not isinstance(temperature, jax.core.Tracer):
        require_range("temperature", temperature, low=0.0, low_open=True)
    log_tau = jnp.log(taus)
    gap = (jnp.log(threshold) - jnp.log(variance)) / temperature
    before = jax.nn.sigmoid(jnp.where(rising, gap, -gap))
    spent = jnp.sum(0.5 * (before[1:] + before[:-1]) * jnp.diff(log_tau))
    return jnp.exp(log_tau[0] + spent), rising


def emergence_times(
    taus: Float[Array, " t"], variance: Float[Array, "*b t k"], target: Float[Array, "*b k"], *, criterion: str = "geometric"
) -> tuple[Float[Array, "*b k"], Bool[Array, "*b k"]]:
    """:func:`emergence_time` of every mode of every curve: ``variance[..., tau, mode]`` with
    targets ``target[..., mode]`` (broadcast against the curves' leading dims). Returns
    ``(tau_star[..., mode], rising[..., mode])``."""
    curves = jnp.moveaxis(jnp.asarray(variance), -2, -1)  # (..., mode, tau)
    goals = jnp.broadcast_to(jnp.asarray(target, curves.dtype), curves.shape[:-1])
    one = lambda curve, goal: emergence_time(jnp.asarray(taus, curve.dtype), curve, goal, criterion=criterion)
    tau_star, rising = jax.vmap(one)(curves.reshape(-1, curves.shape[-1]), goals.reshape(-1))
    return tau_star.reshape(goals.shape), rising.reshape(goals.shape)


def soft_emergence_times(
    taus: Float[Array, " t"], variance: Float[Array, "t k"], target: Float[Array, " k"], *, criterion: str = "geometric", temperature: float = 0.05
) -> Float[Array, " k"]:
    """:func:`soft_emergence_time` of every mode of the curves ``variance[tau, mode]`` towards
    ``target[mode]`` (differentiable; see there)."""
    soft = lambda curve, goal: soft_emergence_time(taus, curve, goal, criterion=criterion, temperature=temperature)[0]
    return jax.vmap(soft, in_axes=(1, 0))(variance, target)


def _ols_log_log(lam: np.ndarray, tau_star: np.ndarray) -> dict[str, float]:
    """OLS of ``log tau*`` on ``log lam``: ``alpha = -slope``, intercept, ``r2`` (NaN, < 2 modes)."""
    n_modes = lam.size
    x, y = np.log(lam), np.log(tau_star)
    sxx = np.sum(np.square(x - x.mean())) if n_modes else 0.0
    if n_modes < 2 or sxx == 0.0:
        return {"alpha": np.nan, "intercept": np.nan, "r2": np.nan, "n_modes": n_modes}
    slope = np.sum((x - x.mean()) * (y - y.mean())) / sxx
    intercept = y.mean() - slope * x.mean()
    ss_res = np.sum(np.square(y - intercept - slope * x))
    ss_tot = np.sum(np.square(y - y.mean()))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan
    return {
        "alpha": float(-slope),
        "intercept": float(intercept),
        "r2": float(r2),
        "n_modes": n_modes,
    }


def fit_power_law(
    lam: ArrayLike,
    tau_star: ArrayLike,
    initial: ArrayLike,
    rising: ArrayLike,
    *,
    gray_zone: tuple[float, float] = (0.5, 2.0),
) -> dict[str, dict[str, float]]:
    """Fit ``tau* = exp(intercept) lam^-alpha`` by OLS in log-log, on the host (numpy).

    ``lam`` are the target variances, ``tau_star`` and ``rising`` come from
    :func:`emergence_time` and ``initial`` is each mode's initial variance (broadcast). A mode
    is excluded if its ``tau*`` is not finite (it never emerged) or if it is in the gray zone,
    ``gray_zone[0] * initial <= lam <= gray_zone[1] * initial``. Returns
    ``{"rising": ..., "decaying": ..., "all": ...}``, each a dict with ``alpha`` (= -slope),
    ``intercept``, ``r2``, ``n_modes`` (used in the fit; ``alpha`` NaN if fewer than 2),
    ``n_gray`` (excluded as gray) and ``n_nan`` (non-gray modes excluded for a non-finite ``tau*``).
    ``"all"`` pools both directions under the same exclusions ([WP] sec. 3-4).
    """
    low, high = require_range("gray_zone", gray_zone, low=0.0)
    if low > high:
        raise ValueError(f"gray_zone: needs gray_zone[0] <= gray_zone[1]; got {gray_zone}")
    lam = np.asarray(lam, dtype=float)
    tau_star = np.asarray(tau_star, dtype=float)
    rising = np.asarray(rising, dtype=bool)
    initial = np.broadcast_to(np.asarray(initial, dtype=float), lam.shape)
    gray = (lam >= low * initial) & (lam <= high * initial)
    finite = np.isfinite(tau_star)
    result = {}
    for name, group in (("rising", rising), ("decaying", ~rising), ("all", np.ones_like(rising))):
        used = group & ~gray & finite
        fit = _ols_log_log(lam[used], tau_star[used])
        fit["n_gray"] = int(np.sum(group & gray))
        fit["n_nan"] = int(np.sum(group & ~gray & ~finite))
        result[name] = fit
    return result


def fit_power_laws(lam, tau_star, initial, rising, *, over: str = "source") -> dict[str, dict[str, dict[str, float]]]:
    """:func:`fit_power_law` for every entry of the dim ``over`` (e.g. ``source``: theory vs
    simulation) of labelled arrays (``xarray.DataArray``): every other dim (modes, seeds, ...) is
    pooled into one fit. ``lam``, ``initial`` and ``rising`` broadcast against ``tau_star``."""
    fits = {}
    for label in tau_star[over].values:
        times = tau_star.sel({over: label})
        flat = [_flat_like(array, over, label, times) for array in (lam, initial, rising)]
        fits[str(label)] = fit_power_law(flat[0], times.values.ravel(), flat[1], flat[2])
    return fits


def _flat_like(array, over: str, label, like) -> np.ndarray:
    """``array`` at ``over = label`` (if it has that dim), broadcast to ``like`` and flattened."""
    import xarray as xr

    chosen = array.sel({over: label}) if over in array.dims else array
    return xr.broadcast(chosen, like)[0].transpose(*like.dims).values.ravel()


def censored_power_law(x: ArrayLike, y: ArrayLike, limit: float, *, draws: int = 200, seed: int = 0) -> dict:
    """Fit ``y = exp(intercept) x^slope`` to right-censored positive measurements ``y[group,
    replica]`` at ``x[group]`` (host, numpy/scipy): maximum likelihood of ``ln y = intercept +
    slope ln x + scale eps``, ``eps ~ N(0, 1)``, where a non-finite ``y`` (e.g. a run that never
    reached a threshold within its budget) only says ``y > limit`` (Tobit regression). Unlike a
    fit of per-group medians, a group where most replicas are censored still counts, as the lower
    bound it is. Values <= 0 (e.g. reached at the start) count as the smallest positive one.

    Returns ``slope``, ``intercept``, ``scale``, ``ci`` (2.5 and 97.5 percentiles over ``draws``
    bootstrap resamples of the replicas within each group, numpy seed ``seed``) and ``censored``
    per group; NaN slope with fewer than two groups holding an uncensored value."""
    from scipy import optimize, stats

    y = np.asarray(y, dtype=float)
    x = np.broadcast_to(np.log(np.asarray(x, dtype=float))[:, None], y.shape)
    censored = ~np.isfinite(y)
    floor = np.min(y[~censored & (y > 0)], initial=limit)
    log_y = np.log(np.where(censored, limit, np.maximum(y, floor)))

    def fit(log_y, censored):
        if len(np.unique(x[~censored])) < 2:
            return np.full(3, np.nan)

        def negative_log_likelihood(params):
            intercept, slope, log_scale = params
            mean, scale = intercept + slope * x, np.exp(log_scale)
            return -(stats.norm.logpdf(log_y[~censored], mean[~censored], scale).sum() + stats.norm.logsf(log_y[censored], mean[censored], scale).sum())

        slope, intercept = np.polyfit(x[~censored], log_y[~censored], 1)
        start = (intercept, slope, np.log(np.std(log_y[~censored]) + 1e-3))
        return optimize.minimize(negative_log_likelihood, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000}).x

    intercept, slope, log_scale = fit(log_y, censored)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(draws):
        pick = rng.integers(0, y.shape[1], y.shape)
        boot.append(fit(np.take_along_axis(log_y, pick, axis=1), np.take_along_axis(censored, pick, axis=1))[1])
    boot = np.asarray(boot)[np.isfinite(boot)]
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot.size else [np.nan, np.nan]
    return {"slope": float(slope), "intercept": float(intercept), "scale": float(np.exp(log_scale)), "ci": ci, "censored": censored.sum(axis=1).tolist()}


@jax.jit
def kl_per_mode(variance: ArrayLike, target: ArrayLike) -> Float[Array, "..."]:
    """``KL(N(0, variance) || N(0, target)) = (r - 1 - ln r) / 2`` per mode, ``r = variance/target``

    Summed over the eigenmodes this is the KL between the generated and data Gaussians when
    both are diagonal in the same basis (docs/theory.md section 2).
    """
    ratio = jnp.asarray(variance) / jnp.asarray(target)
    return 0.5 * (ratio - 1.0 - jnp.log(ratio))


@jax.jit
def gaussian_kl(cov_p: Float[Array, "d d"], cov_q: Float[Array, "d d"]) -> Float[Array, ""]:
    """``KL(N(0, cov_p) || N(0, cov_q)) = (Tr[Q^-1 P] - d + ln det Q - ln det P) / 2``.

    Both covariances must be symmetric positive definite (computed via Cholesky factors; a
    non-PD input gives NaN).
    """
    chol_p = jnp.linalg.cholesky(cov_p)
    chol_q = jnp.linalg.cholesky(cov_q)
    whitened = jsl.solve_triangular(chol_q, chol_p, lower=True)
    log_det_ratio = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_q)) - jnp.log(jnp.diagonal(chol_p)))
    return 0.5 * (jnp.sum(jnp.square(whitened)) - cov_p.shape[0] + log_det_ratio)


@jax.jit
def half_relaxation_time(taus: Float[Array, " t"], curve: Float[Array, " t"]) -> Float[Array, ""]:
    """Time at which ``curve`` (ONE mode, recorded at increasing ``taus``) has covered half of its
    change from ``curve[0]`` to ``curve[-1]``; linear interpolation in ``log tau``.

    For an exponential relaxation ``c(tau) = c_inf + (c_0 - c_inf) exp(-r tau)`` recorded until
    it has converged this is ``ln 2 / r``, so ratios of half-times measure ratios of rates.
    """
    fraction = (curve - curve[0]) / (curve[-1] - curve[0])
    return _log_interpolated_crossing(taus, fraction, 0.5)


def _log_interpolated_crossing(taus, curve, level):
    """First record with ``curve >= level``, refined by linear interpolation of ``curve`` in
    ``log tau`` against the record before; ``taus[0]`` if no record (or the first) reaches it."""
    upper = jnp.argmax(curve >= level)
    lower = jnp.maximum(upper - 1, 0)
    span = jnp.where(upper > lower, curve[upper] - curve[lower], 1.0)
    weight = jnp.where(upper > lower, (level - curve[lower]) / span, 0.0)
    log_taus = jnp.log(taus)
    return jnp.exp(log_taus[lower] + weight * (log_taus[upper] - log_taus[lower]))


@jax.jit
def first_reach_time(taus: Float[Array, " t"], curve: Float[Array, " t"], level: Float[Array, ""]) -> Float[Array, ""]:
    """First time at which ``curve`` (recorded at increasing ``taus``) reaches ``level``: linear
    interpolation of ``curve`` in ``log tau`` between the first record at or above ``level`` and
    the one before; ``taus[0]`` if the first record is already there, NaN if none is. E.g. the
    generated-sample memorization time of [BUBM] sec. 2 (``curve`` = fraction of copies)."""
    return jnp.where(jnp.any(curve >= level), _log_interpolated_crossing(taus, curve, level), jnp.nan)


# ----------------------------------------------------------------------------- classes and memorization
# Per-class measures of docs/theory.md 7-8 ([BUBM] generalization/memorization times, [N] per class).


def per_class_curves(loss, trajectory, statistics) -> Float[Array, "k t"]:
    """``loss(params, stats)`` for every recorded parameter set and every class: ``trajectory`` is a
    params pytree with a leading record axis, ``statistics`` a pytree with a leading class axis
    (e.g. each class's feature statistics ``(U_c, V_c)`` of its training points, or of fresh
    class points for the test loss). Returns ``curve[class, record]``."""
    over_records = lambda stats: jax.vmap(lambda params: loss(params, stats))(trajectory)
    return jax.vmap(over_records)(statistics)


@jax.jit
def generalization_time(taus: Float[Array, " t"], test_loss: Float[Array, " t"]) -> Float[Array, ""]:
    """Time at which ``test_loss`` (ONE class or model) has made half of its drop from
    ``test_loss[0]`` to its minimum: :func:`half_relaxation_time` of the running minimum, so a
    later rise (memorization) does not move it ([BUBM] ``tau_gen``, docs/theory.md 7-8)."""
    return half_relaxation_time(taus, jax.lax.cummin(test_loss))


@jax.jit
def memorization_time(taus: Float[Array, " t"], train_loss: Float[Array, " t"], test_loss: Float[Array, " t"]) -> Float[Array, ""]:
    """Onset of memorization: the time at which the generalization gap ``test - train`` has grown
    to half of its last recorded value (:func:`half_relaxation_time` of the gap; record until the
    gap has saturated). ``tau_mem`` of [BUBM] (docs/theory.md 7-8)."""
    return half_relaxation_time(taus, test_loss - train_loss)


@jax.jit
def nearest_neighbour_ratios(samples: Float[Array, "m d"], train: Float[Array, "n d"]) -> tuple[Float[Array, " m"], Float[Array, " m"]]:
    """Per sample: ``||x - a_1|| / ||x - a_2||`` (nearest over second-nearest training point)
    and the index of the nearest training point ``a_1``. Needs ``n >= 2``."""
    distances = jnp.sum(jnp.square(samples[:, None, :] - train[None, :, :]), axis=-1)
    nearest = jax.lax.top_k(-distances, 2)
    squared = jnp.clip(-nearest[0], 0.0)
    return jnp.sqrt(squared[:, 0] / squared[:, 1]), nearest[1][:, 0]


def memorization_fraction(samples: Float[Array, "m d"], train: Float[Array, "n d"], threshold: float = 1.0 / 3.0) -> Float[Array, ""]:
    """Fraction of ``samples`` that are copies of a training point: nearest-neighbour distance
    ratio (:func:`nearest_neighbour_ratios`) below ``threshold`` (1/3, [BUBM] sec. 2)."""
    ratios, _ = nearest_neighbour_ratios(samples, train)
    return jnp.mean((ratios < threshold).astype(samples.dtype))


@partial(jax.jit, static_argnames="num_classes")
def per_class_memorization_fraction(
    samples: Float[Array, "m d"], train: Float[Array, "n d"], train_labels: ArrayLike, num_classes: int, threshold: float = 1.0 / 3.0
) -> Float[Array, " k"]:
    """:func:`memorization_fraction` per class, a sample counted in the class of its nearest
    training point (docs/theory.md 8); NaN for a class that no sample is nearest to."""
    ratios, nearest = nearest_neighbour_ratios(samples, train)
    classes = jnp.asarray(train_labels)[nearest]
    one_hot = classes[:, None] == jnp.arange(num_classes)[None, :]
    copied = jnp.sum(one_hot & (ratios < threshold)[:, None], axis=0)
    return copied / jnp.sum(one_hot, axis=0)
