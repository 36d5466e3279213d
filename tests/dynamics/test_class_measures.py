"""Per-class measures: generalization and memorization times, memorization fractions."""

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import measures


def test_generalization_time_ignores_the_later_rise():
    taus = jnp.geomspace(1e-3, 1e4, 4000)
    rate = 2.0
    drop = 0.6 * jnp.exp(-rate * taus) + 0.4
    with_rise = drop + 0.3 * (1 - jnp.exp(-taus / 500.0))  # memorization rise, 1000x slower
    np.testing.assert_allclose(measures.generalization_time(taus, with_rise), np.log(2) / rate, rtol=5e-3)  # the rise adds ~1e-3


def test_memorization_time_of_a_saturating_gap():
    taus = jnp.geomspace(1e-3, 1e5, 4000)
    train = 0.4 * jnp.exp(-taus) + 0.6 - 0.2 * (1 - jnp.exp(-taus / 300.0))
    test = 0.4 * jnp.exp(-taus) + 0.6
    np.testing.assert_allclose(measures.memorization_time(taus, train, test), 300.0 * np.log(2), rtol=2e-3)


def test_per_class_curves_shape_and_values():
    trajectory = jnp.arange(3.0)[:, None] * jnp.ones((3, 2))
    statistics = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    curves = measures.per_class_curves(lambda p, s: p @ s, trajectory, statistics)
    np.testing.assert_allclose(curves, [[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]])


def test_memorization_fractions():
    key = jax.random.key(0)
    train = jax.random.normal(key, (50, 8))
    labels = jnp.arange(50) % 2
    copies = train[:20] + 1e-3 * jax.random.normal(jax.random.key(1), (20, 8))
    fresh = jax.random.normal(jax.random.key(2), (30, 8))
    assert float(measures.memorization_fraction(copies, train)) == 1.0
    assert float(measures.memorization_fraction(fresh, train)) < 0.1
    samples = jnp.concatenate([copies[labels[:20] == 0], fresh])
    per_class = measures.per_class_memorization_fraction(samples, train, labels, 2)
    nearest_class = np.asarray(labels)[np.argmin(np.sum((np.asarray(fresh)[:, None] - np.asarray(train)[None]) ** 2, -1), 1)]
    expected_0 = (10 + 0) / (10 + np.sum(nearest_class == 0))  # ten copies of class-0 points
    np.testing.assert_allclose(per_class[0], expected_0, atol=0.11)
    assert float(per_class[1]) < 0.2
