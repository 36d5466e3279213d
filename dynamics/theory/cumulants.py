"""The mixed cumulant model (MCM) of [BMG] and the single-neuron theory beside it (docs/theory.md section 9).

[BMG] = Bardone, Merger & Goldt, "A theory of learning data statistics in diffusion models, from
easy to hard", arXiv 2603.12901 (ICML 2026). This is our implementation of their model, read from
the authors' released code; where the paper's exact model could not be read it is a
reconstruction (docs/theory.md section 9).

The model (dimension ``d``, an orthonormal frame of spike directions ``(m, u, v)``)::

    x0 = mu m + sqrt(beta_u) lambda u + alpha nu v + G,   G ~ N(0, I - gamma_u u u^T - alpha^2 v v^T)

with ``lambda ~ N(0, 1)`` the covariance latent and ``nu`` a unit-variance non-Gaussian latent:

* ``planted`` (the authors' code): ``alpha = gamma_u = 1``: the latents replace the Gaussian
  coordinates along ``u`` and ``v`` (``Var(x0.u) = beta_u``, ``Var(x0.v) = 1``);
* ``whitened`` (the classic MCM): ``x0 = sqrt(beta_u) lambda u + mu m + S (sqrt(beta_v) nu v + z)``
  with ``S = I - beta_v / (1 + beta_v + sqrt(1 + beta_v)) v v^T``; since ``S v = v / sqrt(1 + beta_v)``
  this is the form above with ``alpha^2 = beta_v / (1 + beta_v)``, ``gamma_u = 0``, and ``v`` is
  invisible to the covariance (``kappa_4(x0.v) = alpha^4 kappa_4(nu)``).

Couplings of ``nu`` to ``lambda`` (``nu = epsilon(lambda) |nu'|`` with ``nu'`` an independent draw, so
a symmetric latent law keeps its marginal): ``independent`` (``nu = nu'``), ``correlated``
(``epsilon = sign lambda``: ``v`` enters the covariance, ``E[lambda nu] = sqrt(2/pi) E|nu'|``),
``hermite2`` (``epsilon = +1`` iff ``|lambda| >= Phi^-1(3/4)``: first joint cumulant of order 3) and
``hermite3`` (``epsilon = sign(lambda) sign(|lambda| - sqrt(2 ln 2))``: order 4).

Noising (OU time ``t``, fixed): ``x_t = e^-t x0 + sqrt(Delta) z``, ``Delta = 1 - e^-2t``; target ``z``.
The tied denoiser ``z_hat(x) = s x + sigma W^T g(c W x)``, ``c = e^-t / sqrt(Delta)``, ``sigma = +1``
(readout ``noise``: the authors' code) or ``-1`` (readout ``data``: the hidden units write into the
clean-data estimate ``e^t (x - sqrt(Delta) z_hat)``); loss per dimension (the mean over the ``d``
coordinates of the squared error, as the authors' ``F.mse_loss``).

Single-neuron theory: for one hidden unit ``w`` the loss depends on ``w`` only through its norm and
the 1-D law of ``h = w.x_t`` (Stein's lemma removes ``z`` from the cross term), so it is a 1-D
integral (:func:`neuron_loss`), for the MCM and for its Gaussian clones. Expanded in the overlap
of ``w`` with a spike, the mean enters at order 1, the covariance at order 2, the cumulant at
order 4 (3 for a skewed latent), odd orders rising by one for an odd ``g``: :func:`spike_order`. Online SGD escapes from the
random-start overlap ``d^-1/2`` in ``n ~ d^(k-1)`` samples for order ``k >= 3`` and ``~ d`` for
``k <= 2`` at the best step size (:func:`sample_complexity_exponent`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import jet
from jaxtyping import Array, ArrayLike, Float
from scipy.special import ndtri

from diffdyn.dynamics.validation import ConfigError, require_choice

VARIANTS = ("planted", "whitened")
LATENTS = ("rademacher", "three_point", "skewed", "student_t")
COUPLINGS = ("independent", "correlated", "hermite2", "hermite3")
SPIKES = ("mean", "covariance", "cumulant")
LAWS = ("mcm", "mean_clone", "covariance_clone")  # the data and its Gaussian clones (mean only; mean and covariance)
READOUT_SIGNS = {"noise": 1.0, "data": -1.0}
HERMITE2_THRESHOLD = float(ndtri(0.75))  # P(|lambda| >= q) = 1/2
HERMITE3_THRESHOLD = math.sqrt(2 * math.log(2))  # E[|lambda| sign(|lambda| - q)] = 0
COUPLING_ORDER = {"independent": None, "correlated": 2, "hermite2": 3, "hermite3": 4}  # 1 + Hermite order of epsilon
_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(48)
_LAMBDA_RANGE = 9.0  # the covariance latent is integrated over [-9, 9] (mass outside: 2e-19)
_LEGENDRE_FINE = np.polynomial.legendre.leggauss(160)


@dataclass(frozen=True)
class MixedCumulantModel:
    """Parameters of the MCM (see the module docstring); numbers may be traced."""

    variant: str = "planted"
    mu: float = 1.0
    beta_u: float = 10.0
    beta_v: float = 10.0
    latent: str = "rademacher"
    latent_parameter: float = 0.05
    coupling: str = "independent"

    def check(self) -> None:
        """Names and the latent law's parameter (host values only)."""
        require_choice("variant", self.variant, VARIANTS)
        require_choice("latent", self.latent, LATENTS)
        require_choice("coupling", self.coupling, COUPLINGS)
        bounds = {"three_point": (0.0, 1 / 6), "skewed": (0.0, 0.5), "student_t": (4.0, math.inf)}
        if self.latent in bounds:
            low, high = bounds[self.latent]
            if not low < self.latent_parameter < high:
                raise ConfigError(f"latent_parameter: {self.latent} needs a value in ({low:g}, {high:g}); got {self.latent_parameter}")
        if self.coupling != "independent" and self.latent == "skewed":
            raise ConfigError(f"coupling: {self.coupling} sets the sign of nu, which needs a symmetric latent law; got latent=skewed")

    @property
    def cumulant_scale(self):
        """``alpha``: the latent's coefficient along ``v``."""
        return 1.0 if self.variant == "planted" else jnp.sqrt(self.beta_v / (1 + self.beta_v))

    @property
    def gaussian_removed_along_u(self) -> float:
        """``gamma_u``: the Gaussian variance the covariance latent replaces along ``u``."""
        return 1.0 if self.variant == "planted" else 0.0


# ----------------------------------------------------------------------------- the latents


def latent_atoms(latent: str, parameter) -> tuple[Array, Array]:
    """Values and probabilities of a discrete unit-variance latent law: ``rademacher`` (+-1);
    ``three_point`` (+-sqrt(1/(2a)) w.p. ``a`` each, else 0; excess kurtosis ``1/(2a) - 3``);
    ``skewed`` (``sqrt(q/p)`` w.p. ``p``, ``-sqrt(p/q)`` w.p. ``q = 1 - p``)."""
    if latent == "rademacher":
        return jnp.array([-1.0, 1.0]), jnp.array([0.5, 0.5])
    if latent == "three_point":
        peak = jnp.sqrt(1 / (2 * parameter))
        return jnp.stack([-peak, 0.0 * peak, peak]), jnp.stack([parameter, 1 - 2 * parameter, parameter])
    if latent == "skewed":
        other = 1 - parameter
        return jnp.stack([jnp.sqrt(other / parameter), -jnp.sqrt(parameter / other)]), jnp.stack([parameter, other])
    raise ConfigError(f"latent: the 1-D theory needs a discrete latent law (rademacher, three_point, skewed); got {latent}")


def latent_cumulants(latent: str, parameter) -> tuple[Array, Array]:
    """Skewness ``kappa_3`` and excess kurtosis ``kappa_4`` of the unit-variance latent (``student_t``:
    ``t_df`` scaled by ``sqrt((df - 2)/df)``, ``kappa_4 = 6 / (df - 4)``)."""
    if latent == "student_t":
        return jnp.zeros(()), 6 / (jnp.asarray(parameter) - 4)
    values, probabilities = latent_atoms(latent, parameter)
    return jnp.sum(probabilities * values**3), jnp.sum(probabilities * values**4) - 3


def latent_abs_mean(latent: str, parameter) -> Array:
    """``E|nu|`` of the latent law."""
    if latent == "student_t":
        df = jnp.asarray(parameter)
        gamma_ratio = jnp.exp(jax.scipy.special.gammaln((df + 1) / 2) - jax.scipy.special.gammaln(df / 2))
        return jnp.sqrt((df - 2) / df) * 2 * jnp.sqrt(df) * gamma_ratio / ((df - 1) * jnp.sqrt(jnp.pi))
    values, probabilities = latent_atoms(latent, parameter)
    return jnp.sum(probabilities * jnp.abs(values))


def coupled_latent(coupling: str, lam: ArrayLike, draw: ArrayLike) -> Array:
    """``nu`` from the covariance latent ``lam`` and an independent draw of the latent law."""
    lam, draw = jnp.asarray(lam), jnp.asarray(draw)
    if coupling == "independent":
        return draw
    sign = {
        "correlated": lambda: jnp.sign(lam),
        "hermite2": lambda: jnp.where(jnp.abs(lam) >= HERMITE2_THRESHOLD, 1.0, -1.0),
        "hermite3": lambda: jnp.sign(lam) * jnp.sign(jnp.abs(lam) - HERMITE3_THRESHOLD),
    }[coupling]()
    return sign * jnp.abs(draw)


def latent_correlation(model: MixedCumulantModel) -> Array:
    """``E[lambda nu]``: ``sqrt(2/pi) E|nu'|`` when correlated, 0 for every other coupling."""
    if model.coupling != "correlated":
        return jnp.zeros(())
    return jnp.sqrt(2 / jnp.pi) * latent_abs_mean(model.latent, model.latent_parameter)


# ----------------------------------------------------------------------------- moments


def spike_covariance(model: MixedCumulantModel) -> Float[Array, "3 3"]:
    """The clean data's covariance in the (mean, covariance, cumulant) frame; it is ``I`` on the
    complement. ``Var(x0.u) = beta_u + 1 - gamma_u``, ``Var(x0.v) = 1``, and with correlated latents
    ``Cov(x0.u, x0.v) = sqrt(beta_u) alpha E[lambda nu]``."""
    cross = jnp.sqrt(model.beta_u) * model.cumulant_scale * latent_correlation(model)
    u_variance = model.beta_u + 1 - model.gaussian_removed_along_u
    return jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) + jnp.array([[0.0, 0.0, 0.0], [0.0, u_variance - 1, cross], [0.0, cross, 0.0]])


def mean_clone_variance(model: MixedCumulantModel, dim: int) -> Array:
    """Variance of the isotropic (mean-only) Gaussian clone: ``tr Cov(x0) / d``."""
    return (dim - 3 + jnp.trace(spike_covariance(model))) / dim


def noised_excess_kurtosis(model: MixedCumulantModel, t) -> Array:
    """Excess kurtosis of ``x_t . v`` (unit variance): ``e^-4t alpha^4 kappa_4(nu)``; ``t = 0`` gives
    the clean data's (whitened, Rademacher: ``-2 beta_v^2 / (1 + beta_v)^2``)."""
    return jnp.exp(-4 * jnp.asarray(t)) * model.cumulant_scale**4 * latent_cumulants(model.latent, model.latent_parameter)[1]


def excess_kurtosis(values: Float[Array, " n"]) -> Float[Array, ""]:
    """Sample excess kurtosis ``m_4 / m_2^2 - 3`` (central moments)."""
    centred = values - jnp.mean(values)
    return jnp.mean(centred**4) / jnp.mean(centred**2) ** 2 - 3


def clone_mmse(model: MixedCumulantModel, t, dim: int, law: str) -> Array:
    """Minimum per-dimension noise-prediction loss on a Gaussian clone ``N(mean, C)`` (the best
    denoiser is linear): ``(1/d) sum_k e^-2t c_k / (e^-2t c_k + Delta)`` over the eigenvalues
    ``c_k`` of ``C``. ``covariance_clone`` is also the best loss of any linear denoiser on the MCM."""
    decay = jnp.exp(-2 * jnp.asarray(t))
    if law == "mean_clone":
        spectrum = jnp.full((dim,), mean_clone_variance(model, dim))
    else:
        spectrum = jnp.concatenate([jnp.linalg.eigvalsh(spike_covariance(model)), jnp.ones(dim - 3)])
    return jnp.mean(decay * spectrum / (decay * spectrum + 1 - decay))


# ----------------------------------------------------------------------------- single-neuron population loss


def _lambda_nodes(coupling: str) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature of ``E_lambda``: Gauss-Legendre on [-9, 9] split where ``epsilon(lambda)`` jumps,
    weights times the standard normal density."""
    breaks = {
        "independent": (),
        "correlated": (0.0,),
        "hermite2": (-HERMITE2_THRESHOLD, HERMITE2_THRESHOLD),
        "hermite3": (-HERMITE3_THRESHOLD, 0.0, HERMITE3_THRESHOLD),
    }[coupling]
    edges = np.array([-_LAMBDA_RANGE, *breaks, _LAMBDA_RANGE])
    nodes = np.concatenate([(b - a) / 2 * _GAUSS_LEGENDRE[0] + (a + b) / 2 for a, b in zip(edges[:-1], edges[1:])])
    weights = np.concatenate([(b - a) / 2 * _GAUSS_LEGENDRE[1] for a, b in zip(edges[:-1], edges[1:])])
    return nodes, weights * np.exp(-(nodes**2) / 2) / np.sqrt(2 * np.pi)


def projection_law(model: MixedCumulantModel, projections: Float[Array, "3"], norm, t, dim: int, law: str = "mcm"):
    """The law of ``h = w.x_t`` as a Gaussian mixture ``(weights, means, stds)`` (flat arrays).

    ``projections = (w.m, w.u, w.v)``, ``norm = |w|``. On the MCM, ``h = e^-t (p_m mu + p_u
    sqrt(beta_u) lambda + p_v alpha nu) + N(0, e^-2t (|w|^2 - gamma_u p_u^2 - alpha^2 p_v^2) + Delta |w|^2)``:
    one component per atom of ``nu'`` (the Gaussian ``lambda`` merged in) for independent latents,
    one per (lambda node, atom) otherwise. On a clone (``law``), one Gaussian with the clone's
    mean and variance (``dim`` sets the mean-only clone's variance ``tr Cov / d``)."""
    require_choice("law", law, LAWS)
    decay, noise = jnp.exp(-jnp.asarray(t)), 1 - jnp.exp(-2 * jnp.asarray(t))
    norm2 = jnp.square(norm)
    centre = decay * projections[0] * model.mu
    if law != "mcm":
        clean = norm2 * mean_clone_variance(model, dim) if law == "mean_clone" else norm2 + projections @ (spike_covariance(model) - jnp.eye(3)) @ projections
        return jnp.ones(1), jnp.reshape(centre, (1,)), jnp.reshape(jnp.sqrt(jnp.square(decay) * clean + noise * norm2), (1,))
    p_cov, p_cum, alpha = projections[1], projections[2], model.cumulant_scale
    gaussian = jnp.square(decay) * (norm2 - model.gaussian_removed_along_u * jnp.square(p_cov) - jnp.square(alpha * p_cum)) + noise * norm2
    values, probabilities = latent_atoms(model.latent, model.latent_parameter)
    if model.coupling == "independent":
        means = centre + decay * p_cum * alpha * values
        std = jnp.sqrt(gaussian + jnp.square(decay * p_cov) * model.beta_u)
        return probabilities, means, jnp.broadcast_to(std, means.shape)
    lam, lam_weights = _lambda_nodes(model.coupling)
    nu = coupled_latent(model.coupling, lam[:, None], values[None, :])
    means = centre + decay * (p_cov * jnp.sqrt(model.beta_u) * lam[:, None] + p_cum * alpha * nu)
    weights = lam_weights[:, None] * probabilities[None, :]
    return weights.ravel(), means.ravel(), jnp.broadcast_to(jnp.sqrt(gaussian), (means.size,))


def mixture_expectation(function: Callable, weights, means, stds) -> Array:
    """``E[function(h)]`` for the Gaussian mixture ``sum_j weights_j N(means_j, stds_j^2)``:
    Gauss-Legendre on ``[-H, 0]`` and ``[0, H]`` (``H`` = 12 stds past the farthest mean), so the
    nodes cluster at ``h = 0`` where the activations bend (``0.1 tanh(10 c h)``, ``relu^2``)."""
    reach = jnp.max(jnp.abs(means) + 12 * stds)
    half = (_LEGENDRE_FINE[0] + 1) / 2
    h = jnp.concatenate([-reach * half[::-1], reach * half])
    dh = jnp.concatenate([_LEGENDRE_FINE[1][::-1], _LEGENDRE_FINE[1]]) * reach / 2
    density = jnp.sum(
        weights[:, None] * jnp.exp(-jnp.square((h[None, :] - means[:, None]) / stds[:, None]) / 2) / (stds[:, None] * jnp.sqrt(2 * jnp.pi)), axis=0
    )
    return jnp.sum(dh * density * function(h))


def neuron_loss(
    model: MixedCumulantModel, activation: Callable, readout: str, skip, projections: Float[Array, "3"], norm, t, dim: int, law: str = "mcm"
) -> Array:
    """Population loss per dimension of a width-1 tied denoiser ``z_hat = s x + sigma w g(c w.x)``
    on ``law`` (the MCM or a Gaussian clone): ``(1/d) E|z_hat(x_t) - z|^2`` =
    ``(1/d) [s^2 E|x_t|^2 - 2 s sqrt(Delta) d + d + |w|^2 E g^2 + 2 sigma (s E[h g] - c sqrt(Delta) |w|^2 E g')]``
    with ``g = g(c h)``, ``h = w.x_t`` and ``E|x_t|^2 = e^-2t (d - gamma_u + beta_u + mu^2) + Delta d``
    (the same for the clones, which keep the mean and the trace of the covariance). ``[BMG]`` sec. 3."""
    t = jnp.asarray(t)
    decay, noise = jnp.exp(-t), 1 - jnp.exp(-2 * t)
    scale = decay / jnp.sqrt(noise)
    law_of_h = projection_law(model, projections, norm, t, dim, law)
    expect = lambda function: mixture_expectation(function, *law_of_h)
    slope = jnp.vectorize(jax.grad(activation))
    hidden = jnp.square(norm) * expect(lambda h: jnp.square(activation(scale * h))) + 2 * READOUT_SIGNS[readout] * (
        skip * expect(lambda h: h * activation(scale * h)) - scale * jnp.sqrt(noise) * jnp.square(norm) * expect(lambda h: slope(scale * h))
    )
    signal = jnp.square(decay) * (dim - model.gaussian_removed_along_u + model.beta_u + jnp.square(model.mu)) + noise * dim
    return (jnp.square(skip) * signal - 2 * skip * jnp.sqrt(noise) * dim + dim + hidden) / dim


def taylor_coefficients(model: MixedCumulantModel, activation: Callable, readout: str, spike: str, norm, t, *, max_order: int = 4) -> list[float]:
    """``(1/k!) d^k N / d o^k`` at ``o = 0`` for ``k = 1..max_order``: ``N(o)`` is the hidden-unit
    part of :func:`neuron_loss` (times ``d``) for ``w = norm (o e_spike + sqrt(1 - o^2) e_bulk)``
    at the large-d skip ``s = sqrt(Delta)``. Host function; float64 resolves the vanishing ones."""
    index = SPIKES.index(spike)
    skip = jnp.sqrt(1 - jnp.exp(-2 * jnp.asarray(t)))
    dim = 3  # at fixed projections the hidden-unit part does not depend on d
    hidden = lambda o: dim * neuron_loss(model, activation, readout, skip, norm * o * jnp.eye(3)[index], norm, t, dim)
    direction = (jnp.ones(()),) + (jnp.zeros(()),) * (max_order - 1)
    _, derivatives = jax.jit(lambda o: jet.jet(hidden, (o,), (direction,)))(jnp.zeros(()))  # Taylor mode: every order in one pass
    return [float(value) / math.factorial(order) for order, value in enumerate(derivatives, start=1)]


def spike_order(model: MixedCumulantModel, activation: Callable, readout: str, spike: str, norm, t) -> tuple[int, float]:
    """The overlap order ``k`` at which ``spike`` enters the single-neuron loss and its Taylor
    coefficient (:func:`taylor_coefficients`): the law of ``h`` departs from the bulk's in its mean
    (order 1), variance (order 2), third cumulant (order 3, a skewed latent) or fourth (order 4);
    an odd ``g`` makes the loss even in ``w``, so odd orders vanish and the mean and a skewed
    cumulant enter at orders 2 and 4. A negative coefficient, or an odd order, draws the unit."""
    probe = jnp.linspace(0.1, 2.0, 7)
    odd = bool(jnp.allclose(activation(-probe), -activation(probe)))
    skewness = float(latent_cumulants(model.latent, model.latent_parameter)[0]) if model.latent != "student_t" else 0.0
    order = {"mean": 1, "covariance": 2, "cumulant": 3 if abs(skewness) > 1e-12 else 4}[spike]
    order += order % 2 if odd else 0
    return order, taylor_coefficients(model, activation, readout, spike, norm, t, max_order=order)[-1]


def cumulant_order(model: MixedCumulantModel, own_order: int | None) -> int | None:
    """The order at which the cumulant direction becomes visible: its own (4, or 3 for a skewed
    latent) or, through a coupling of Hermite order ``h`` to the covariance latent, the joint
    cumulant of order ``h + 1`` (correlated: 2, the covariance)."""
    orders = [order for order in (own_order, COUPLING_ORDER[model.coupling]) if order is not None]
    return min(orders) if orders else None


def sample_complexity_exponent(order: int | None, lr_exponent: float) -> float:
    """Predicted exponent ``a`` of ``samples-to-recovery ~ d^a`` for online SGD on the per-dimension
    loss with step ``eta ~ d^-q`` (``q = lr_exponent``), from an overlap ``d^-1/2`` at an order-``k``
    spike: the drift ``eta o^(k-1) / d`` against the noise ``eta^2 o / d`` gives ``a = 1 + q + max(k - 2, 0) / 2``,
    valid for ``q >= max(k - 2, 0) / 2`` (below it the noise wins as d grows: NaN). The best ``q``
    gives ``max(k - 1, 1)``: 1 (mean, covariance), 2 (skewed cumulant), 3 (cumulant)."""
    if order is None:
        return math.nan
    excess = max(order - 2, 0) / 2
    return 1 + lr_exponent + excess if lr_exponent >= excess - 1e-12 else math.nan


def optimal_exponent(order: int | None) -> float:
    """The exponent at the best step-size scaling, ``max(k - 1, 1)`` ([BMG], information exponent ``k``)."""
    return math.nan if order is None else float(max(order - 1, 1))
