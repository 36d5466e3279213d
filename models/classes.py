"""Two classes under one random-features score model: data, per-class statistics, curves and times.

The class model of docs/theory.md section 8 (a **reconstruction** of [N], Nicoletti et al., arXiv
2605.06367, on the [BUBM] random-features score of section 7):

* data (:func:`orthogonal_classes`): class 0 ``N(mu_0, I)``, class 1 ``N(mu_1, r I)`` with
  ``r = sigma_1^2 / sigma_0^2``, ``mu_0 = mu~_0 sqrt(d) e_1`` and ``mu_1 = mu~_1 sqrt(d) e_2``
  (orthogonal centroids, so the two norms vary independently), equal population weights; the
  imbalance is in the training counts ``n_0 = base_count``, ``n_1 = round(ratio n_0)``
  (:func:`class_counts`);
* model: ``s_A(x) = (A / sqrt(p)) g(W x / sqrt(d))`` at one OU time ``t``
  (:mod:`diffdyn.models.denoisers.random_features`), trained from ``A = 0`` by the exact gradient flow of
  the DSM loss on the whole training set, whose statistics are the count-weighted class ones
  ``U = sum_c (n_c / n) U_c`` (same for ``V``); with class loss weights ``w_c`` the shares are
  ``w_c n_c / sum_c w_c n_c`` (:func:`weighted_statistics`);
* per class: train loss with ``(U_c, V_c)`` of its training points, test loss with those of
  ``num_test`` fresh class points (:func:`class_curves`); generalization time (half of the
  test-loss drop) and memorization time (half-rise of the train/test gap) (:func:`class_times`);
* optionally the copy fractions of a time-indexed generator trained on the same set
  (:func:`generated_memorization`, [BUBM] sec. 2).

Conventions: OU time ``t``; loss per dimension, ``L(A = 0) = 1``; training time
``tau = k eta / d^2`` of gradient descent with step ``eta`` (docs/theory.md section 7).

Random numbers, all from one run key ``key``: features ``W`` from ``fold_in(key, 0)``; training
point ``i`` of class ``c`` from ``fold_in(fold_in(key, 1 + c), i)`` (nested: a class's first
``n`` points are the same for every count ``>= n``, so runs that differ in the imbalance share
them) and its noise draws from ``fold_in(key, 10 + c)``; test points and their noise from
``fold_in(test_key, 20 + c)`` and ``fold_in(test_key, 30 + c)``; the generator's bias and start
from ``fold_in(key, 40)`` and ``fold_in(key, 50)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from diffdyn.dynamics import measures
from diffdyn.dynamics.config import LogGrid, setting
from diffdyn.dynamics.theory.random_features import ACTIVATIONS
from diffdyn.models.denoisers import random_features as rf
from diffdyn.models.distributions import mixtures

CLASSES = ("class_0", "class_1")


@dataclass(frozen=True)
class ClassProblem:
    """Sizes of the two-class random-features problem (shared by the studies that use it; every
    field static: they set array shapes)."""

    dim: int = setting(16, "data dimension d", low=2)
    num_features: int = setting(128, "random features p (psi_p = p / d)", low=1)
    activation: str = setting("tanh", "activation g of the features", choices=tuple(ACTIVATIONS))
    base_count: int = setting(32, "training points n_0 of class 0 (class 1 has round(n_1/n_0 x n_0))", low=1)
    num_noise: int = setting(16, "noise draws per training point in the statistics U_c, V_c", low=1)
    num_test: int = setting(256, "fresh points per class for the test statistics", low=1)
    test_noise: int = setting(4, "noise draws per test point", low=1)
    tau: LogGrid = setting(LogGrid(1e-3, 1e6, 61), "recording times tau = k eta / d^2")


class ClassStatistics(NamedTuple):
    """Feature statistics per class (leading class axis): ``U[c]`` ``(p, p)``, ``V[c]`` ``(p, d)``."""

    U: Float[Array, "k p p"]
    V: Float[Array, "k p d"]


def class_counts(base_count: int, imbalance_ratio: float) -> tuple[int, int]:
    """Training counts ``(n_0, n_1) = (base_count, round(imbalance_ratio * base_count))`` (host)."""
    return base_count, round(imbalance_ratio * base_count)


def orthogonal_classes(dim: int, variance_ratio: ArrayLike, centroid_norm_0: ArrayLike, centroid_norm_1: ArrayLike) -> mixtures.GaussianMixture:
    """Class 0 ``N(mu~_0 sqrt(d) e_1, I)`` and class 1 ``N(mu~_1 sqrt(d) e_2, r I)``, equal weights
    (see the module docstring). Every argument but ``dim`` may be traced."""
    scale = jnp.sqrt(dim)
    means = jnp.zeros((2, dim)).at[0, 0].set(centroid_norm_0 * scale).at[1, 1].set(centroid_norm_1 * scale)
    ratio = jnp.asarray(variance_ratio, means.dtype)
    return mixtures.GaussianMixture(jnp.array([0.5, 0.5]), means, jnp.stack([jnp.ones_like(ratio), ratio]))


def features(problem: ClassProblem, key: PRNGKeyArray) -> Float[Array, "p d"]:
    """The frozen features ``W`` of a run (``fold_in(key, 0)``)."""
    return rf.sample_features(jax.random.fold_in(key, 0), problem.dim, problem.num_features)


def training_points(key: PRNGKeyArray, mixture: mixtures.GaussianMixture, counts: tuple[int, ...]) -> tuple[Float[Array, "n d"], ...]:
    """``counts[c]`` training points of each class ``c``; point ``i`` from
    ``fold_in(fold_in(key, 1 + c), i)``, so the first ``n`` points do not depend on the count."""

    def class_points(c: int, count: int):
        class_key = jax.random.fold_in(key, 1 + c)
        draw = lambda index: mixtures.sample_classes(jax.random.fold_in(class_key, index), mixture, jnp.full((1,), c))[0]
        return jax.vmap(draw)(jnp.arange(count))

    return tuple(class_points(c, count) for c, count in enumerate(counts))


def _stacked(pairs) -> ClassStatistics:
    return ClassStatistics(*jax.tree.map(lambda *per_class: jnp.stack(per_class), *pairs))


def training_statistics(
    problem: ClassProblem, W: Float[Array, "p d"], key: PRNGKeyArray, points: tuple[Float[Array, "n d"], ...], time: ArrayLike
) -> ClassStatistics:
    """Monte Carlo statistics (:func:`diffdyn.models.denoisers.random_features.feature_statistics`,
    ``num_noise`` draws from ``fold_in(key, 10 + c)``) of each class's training points."""
    return _stacked([rf.feature_statistics(W, x, time, jax.random.fold_in(key, 10 + c), problem.num_noise, problem.activation) for c, x in enumerate(points)])


def fresh_statistics(
    problem: ClassProblem, W: Float[Array, "p d"], test_key: PRNGKeyArray, mixture: mixtures.GaussianMixture, time: ArrayLike
) -> ClassStatistics:
    """Statistics of ``num_test`` fresh points per class (``fold_in(test_key, 20 + c)``), with
    ``test_noise`` draws each (``fold_in(test_key, 30 + c)``): the per-class test loss."""

    def one(c: int):
        points = mixtures.sample_classes(jax.random.fold_in(test_key, 20 + c), mixture, jnp.full((problem.num_test,), c))
        return rf.feature_statistics(W, points, time, jax.random.fold_in(test_key, 30 + c), problem.test_noise, problem.activation)

    return _stacked([one(c) for c in range(mixture.num_classes)])


def weighted_statistics(statistics: ClassStatistics, counts: tuple[int, ...], class_weights: Float[ArrayLike, " k"]) -> ClassStatistics:
    """``sum_c s_c statistics[c]`` with shares ``s_c = w_c n_c / sum_c w_c n_c``: the training
    set's statistics with class ``c``'s loss weighted by ``w_c`` (``w = 1``: the plain set)."""
    shares = jnp.asarray(class_weights) * jnp.asarray(counts, float)
    shares = shares / jnp.sum(shares)
    return jax.tree.map(lambda per_class: jnp.tensordot(shares, per_class, axes=1), statistics)


def class_curves(
    problem: ClassProblem, train: ClassStatistics, test: ClassStatistics, counts: tuple[int, ...], class_weights: Float[Array, " k"], time: ArrayLike
) -> tuple[Float[Array, "k tau"], Float[Array, "k tau"]]:
    """Per-class train and test losses ``[class, tau]`` along the exact gradient flow
    (:func:`diffdyn.models.denoisers.random_features.gradient_flow_weights`) of the weighted training loss."""
    U, V = weighted_statistics(train, counts, class_weights)
    trajectory = rf.gradient_flow_weights(U, V, time, jnp.asarray(problem.tau.values()))
    loss = lambda A, stats: rf.quadratic_loss(A, stats.U, stats.V, time)
    return measures.per_class_curves(loss, trajectory, train), measures.per_class_curves(loss, trajectory, test)


def class_times(
    taus: Float[ArrayLike, " tau"], train_loss: Float[Array, "k tau"], test_loss: Float[Array, "k tau"]
) -> tuple[Float[Array, " k"], Float[Array, " k"]]:
    """Per class: generalization time (:func:`diffdyn.dynamics.measures.generalization_time`) and
    memorization time (:func:`diffdyn.dynamics.measures.memorization_time`)."""
    taus = jnp.asarray(taus)
    generalization = jax.vmap(lambda curve: measures.generalization_time(taus, curve))(test_loss)
    memorization = jax.vmap(lambda train, test: measures.memorization_time(taus, train, test))(train_loss, test_loss)
    return generalization, memorization


def generated_memorization(
    problem: ClassProblem, generator: rf.Generator, key: PRNGKeyArray, points: tuple[Float[Array, "n d"], ...], class_weights: Float[Array, " k"]
) -> tuple[Float[Array, "k m"], Float[Array, " m"]]:
    """Copy fractions of ``generator.samples`` samples of the time-indexed generator
    (:func:`diffdyn.models.denoisers.random_features.sample_trained_generator`) trained on the run's
    training set ``points`` at every ``generator.taus``: per class ``[class, tau]`` (a sample counts
    in the class of its nearest training point) and in total ``[tau]``.

    It shares the run's ``W`` (plus a frozen bias ``b ~ N(0, generator.bias^2)``); every OU node
    trains on the class-weighted loss with exactly noise-averaged statistics."""
    W = features(problem, key)
    bias = generator.bias * jax.random.normal(jax.random.fold_in(key, 40), (problem.num_features,))
    counts = tuple(x.shape[0] for x in points)

    def statistics(t):
        per_class = _stacked([rf.expected_feature_statistics(W, x, t, problem.activation, bias=bias) for x in points])
        return weighted_statistics(per_class, counts, class_weights)

    train = jnp.concatenate(points)
    labels = jnp.concatenate([jnp.full((count,), c) for c, count in enumerate(counts)])
    samples = rf.sample_trained_generator(
        jax.random.fold_in(key, 50),
        statistics,
        W,
        train,
        jnp.asarray(generator.time.values()),
        jnp.asarray(generator.taus, float),
        generator.samples,
        problem.activation,
        bias,
        num_steps=generator.steps,
    )
    per_class = jax.vmap(lambda x: measures.per_class_memorization_fraction(x, train, labels, len(counts)))(samples)
    return per_class.T, jax.vmap(lambda x: measures.memorization_fraction(x, train))(samples)
