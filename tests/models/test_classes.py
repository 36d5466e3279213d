"""The two-class random-features machinery (docs/theory.md section 8): nested training points,
weighted statistics, per-class curves against exact population losses."""

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics.config import LogGrid
from diffdyn.models import classes
from diffdyn.models.denoisers import random_features as rf

PROBLEM = classes.ClassProblem(dim=8, num_features=32, base_count=8, num_noise=8, num_test=64, test_noise=2, tau=LogGrid(1e-3, 1e8, 45))


def test_orthogonal_classes():
    mixture = classes.orthogonal_classes(9, 4.0, 0.5, 2.0)
    means = np.asarray(mixture.means)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), [0.5 * 3, 2.0 * 3], rtol=1e-12)
    assert means[0] @ means[1] == 0.0
    np.testing.assert_allclose(mixture.covariances, [1.0, 4.0])
    np.testing.assert_allclose(mixture.weights, [0.5, 0.5])


def test_training_points_are_nested_and_drawn_from_their_class():
    """A class's first n points do not depend on its count; 3000 points of class 1 have its
    mean and variance within 5 standard errors."""
    mixture = classes.orthogonal_classes(6, 4.0, 1.0, 2.0)
    key = jax.random.key(3)
    draw = jax.jit(classes.training_points, static_argnums=2)
    few, many = draw(key, mixture, (3, 5)), draw(key, mixture, (3, 3000))
    np.testing.assert_array_equal(few[0], many[0])
    np.testing.assert_array_equal(few[1], many[1][:5])
    points = np.asarray(many[1])
    assert np.all(np.abs(points.mean(0) - np.asarray(mixture.means[1])) < 5 * np.sqrt(4.0 / 3000))
    assert np.all(np.abs(points.var(0, ddof=1) - 4.0) < 5 * 4.0 * np.sqrt(2 / 3000))


def test_weighted_statistics_are_those_of_the_pooled_set():
    """With exact noise averages the count-weighted class statistics are the statistics of the
    whole training set, and a class weight w_1 = 3 equals repeating class 1's points 3 times."""
    mixture = classes.orthogonal_classes(PROBLEM.dim, 4.0, 1.0, 1.0)
    key = jax.random.key(0)
    points = classes.training_points(key, mixture, (5, 3))
    W = classes.features(PROBLEM, key)
    exact = lambda x: rf.expected_feature_statistics(W, x, 0.5)

    @jax.jit
    def weighted_and_pooled(weight):
        per_class = classes.ClassStatistics(*jax.tree.map(lambda *s: jnp.stack(s), *[exact(x) for x in points]))
        return classes.weighted_statistics(per_class, (5, 3), jnp.array([1.0, weight]))

    for weight, repeats in ((1.0, 1), (3.0, 3)):
        pooled = exact(jnp.concatenate([points[0], *[points[1]] * repeats]))
        for mine, theirs in zip(weighted_and_pooled(weight), pooled):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-15)


def test_class_train_losses_add_up_to_the_descended_loss():
    """Along the flow of the weighted loss: the shares-weighted class train losses are that loss
    (exactly), it starts at L(0) = 1, never rises, and ends at its least-squares minimum
    1 - Tr(V^T U^-1 V) / d."""
    t, counts, weights = 0.5, (8, 4), jnp.array([1.0, 2.0])

    @jax.jit
    def curves_and_descended_loss(key):
        mixture = classes.orthogonal_classes(PROBLEM.dim, 4.0, 1.0, 2.0)
        W = classes.features(PROBLEM, key)
        train = classes.training_statistics(PROBLEM, W, key, classes.training_points(key, mixture, counts), t)
        test = classes.fresh_statistics(PROBLEM, W, key, mixture, t)
        U, V = classes.weighted_statistics(train, counts, weights)
        A = rf.gradient_flow_weights(U, V, t, jnp.asarray(PROBLEM.tau.values()))
        return classes.class_curves(PROBLEM, train, test, counts, weights, t), jax.vmap(lambda a: rf.quadratic_loss(a, U, V, t))(A), (U, V)

    (train_loss, test_loss), direct, (U, V) = curves_and_descended_loss(jax.random.key(1))
    assert train_loss.shape == test_loss.shape == (2, PROBLEM.tau.num)
    shares = np.array([1.0 * 8, 2.0 * 4]) / 16
    total = shares @ np.asarray(train_loss)
    np.testing.assert_allclose(total, direct, rtol=1e-12)
    assert abs(total[0] - 1.0) < 1e-2 and np.all(np.diff(total) < 1e-12)
    minimum = 1.0 - float(jnp.trace(V.T @ jnp.linalg.solve(U, V))) / PROBLEM.dim
    np.testing.assert_allclose(total[-1], minimum, rtol=1e-6)


def test_fresh_test_losses_match_the_exact_population_losses_within_their_error():
    """Centred classes N(0, sigma_c^2 I) have exact population statistics (Mehler,
    :func:`gaussian_population_statistics`): the per-class test loss of fresh points (8 draws of
    the test set) agrees with the exact loss along the flow within 5 standard errors."""
    t, counts, ratio = 0.5, (8, 8), 4.0
    mixture = classes.orthogonal_classes(PROBLEM.dim, ratio, 0.0, 0.0)
    key = jax.random.key(2)
    W = classes.features(PROBLEM, key)
    train = classes.training_statistics(PROBLEM, W, key, classes.training_points(key, mixture, counts), t)
    U, V = classes.weighted_statistics(train, counts, jnp.ones(2))
    A = rf.gradient_flow_weights(U, V, t, jnp.asarray(PROBLEM.tau.values()))

    @jax.jit
    def test_curves(test_key):
        return classes.class_curves(PROBLEM, train, classes.fresh_statistics(PROBLEM, W, test_key, mixture, t), counts, jnp.ones(2), t)[1]

    curves = np.stack([test_curves(jax.random.key(100 + k)) for k in range(8)])
    for c, std in enumerate((1.0, np.sqrt(ratio))):
        U_c, V_c, _ = rf.gaussian_population_statistics(W, t, std)
        exact = jax.vmap(rf.quadratic_loss, in_axes=(0, None, None, None))(A, U_c, V_c, t)
        mean, error = curves[:, c].mean(0), curves[:, c].std(0, ddof=1) / np.sqrt(len(curves))
        assert np.all(np.abs(mean - exact) <= 5 * error + 1e-9), np.max(np.abs(mean - exact) / (error + 1e-12))
        assert float(np.max(np.abs(mean - exact))) > 0  # the Monte Carlo test set is not the population


def test_class_times_read_the_curves():
    """Generalization time: half of the test-loss drop (a later rise ignored); memorization time:
    half-rise of the gap; one per class."""
    taus = jnp.geomspace(1e-3, 1e5, 3000)
    rates = jnp.array([2.0, 0.5])
    test = 0.5 + 0.5 * jnp.exp(-rates[:, None] * taus[None, :])
    train = test - 0.2 * (1 - jnp.exp(-taus[None, :] / jnp.array([[300.0], [30.0]])))
    generalization, memorization = classes.class_times(taus, train, test)
    np.testing.assert_allclose(generalization, np.log(2) / rates, rtol=3e-3)
    np.testing.assert_allclose(memorization, np.log(2) * np.array([300.0, 30.0]), rtol=3e-3)
