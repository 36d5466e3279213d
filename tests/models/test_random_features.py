"""Random-features score model ([BUBM], docs/theory.md section 7): statistics, closed-form flow vs GD, trainers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.schedules import vp_noise_variance
from diffdyn.dynamics.training import quadratic_gradient_flow
from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.denoisers import random_features as rf

D, P, N, T = 6, 10, 8, 0.3


@pytest.fixture(scope="module")
def problem():
    key = jax.random.key(0)
    W = rf.sample_features(jax.random.fold_in(key, 1), D, P)
    x0 = jax.random.normal(jax.random.fold_in(key, 2), (N, D))
    U, V = rf.feature_statistics(W, x0, T, jax.random.fold_in(key, 3), 64)
    return W, x0, U, V


def test_score_with_identity_activation_is_linear():
    W = rf.sample_features(jax.random.key(0), D, P)
    A = jax.random.normal(jax.random.key(1), (D, P))
    x = jax.random.normal(jax.random.key(2), (D,))
    np.testing.assert_allclose(rf.score(A, W, x, "identity"), A @ W @ x / np.sqrt(P * D), rtol=1e-12)
    np.testing.assert_allclose(rf.score(A, W, x), A @ np.tanh(W @ x / np.sqrt(D)) / np.sqrt(P), rtol=1e-12)
    with pytest.raises(ConfigError, match="activation"):
        rf.score(A, W, x, "softplus2")


def test_monte_carlo_loss_is_the_quadratic_form_of_its_own_statistics(problem):
    """Same noise draws: the gradients agree exactly, the losses differ by mean ||xi||^2/d - 1."""
    W, x0, _, _ = problem
    key, m = jax.random.key(7), 5
    U, V = rf.feature_statistics(W, x0, T, key, m)
    A = jax.random.normal(jax.random.key(8), (D, P))
    mc = lambda a: rf.monte_carlo_loss(a, W, x0, T, key, m)
    np.testing.assert_allclose(jax.grad(mc)(A), jax.grad(rf.quadratic_loss)(A, U, V, T), rtol=1e-11, atol=1e-13)
    xi = rf._noise_draws(key, m, x0)
    offset = jnp.mean(jnp.sum(xi**2, axis=-1)) / D - 1.0
    np.testing.assert_allclose(mc(A), rf.quadratic_loss(A, U, V, T) + offset, rtol=1e-12)


def test_closed_form_flow_matches_autodiff_hessian_flow(problem):
    """tau = k eta / d^2: the flow d A / d(k eta) = -grad L at time k eta = tau d^2."""
    _, _, U, V = problem
    taus = jnp.array([0.5, 3.0, 40.0])
    closed = rf.gradient_flow_weights(U, V, T, taus)
    exact = quadratic_gradient_flow(lambda a: rf.quadratic_loss(a, U, V, T), jnp.zeros((D, P)))
    np.testing.assert_allclose(closed, jax.vmap(exact)(taus * D**2), rtol=1e-9, atol=1e-11)


def test_closed_form_flow_is_the_small_step_limit_of_gradient_descent(problem):
    """Simulated full-batch GD on the quadratic loss -> closed form, error linear in the step."""
    _, _, U, V = problem
    tau = 2.0
    errors = []
    for eta in (0.4, 0.2, 0.1):
        steps = round(tau * D**2 / eta)
        train = rf.make_quadratic_train(num_steps=steps, record_steps=[steps])
        trajectory = train(jax.random.key(0), {"U": U, "V": V, "t": T, "learning_rate": eta})
        closed = rf.gradient_flow_weights(U, V, T, jnp.array([tau]))[0]
        errors.append(float(jnp.max(jnp.abs(trajectory.params["A"][-1] - closed)) / jnp.max(jnp.abs(closed))))
    assert errors[-1] < 2e-3
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.05)
    loss_gd = rf.quadratic_loss(trajectory.params["A"][-1], U, V, T)
    np.testing.assert_allclose(loss_gd, rf.quadratic_loss(closed, U, V, T), rtol=1e-4)


def test_flow_converges_to_the_least_squares_minimum(problem):
    _, _, U, V = problem
    delta = vp_noise_variance(T)
    final = rf.gradient_flow_weights(U, V, T, jnp.array([1e9]))[0]
    optimum = -np.sqrt(P / delta) * np.linalg.solve(U, V).T
    np.testing.assert_allclose(final, optimum, rtol=1e-7)
    assert np.all(np.linalg.eigvalsh(jax.hessian(rf.quadratic_loss)(final, U, V, T).reshape(D * P, D * P)) > 0)


def test_expected_statistics_identity_exact_and_tanh_pairs_by_2d_quadrature():
    """Mehler expansion: exact for g = identity; for tanh, U_ij vs a direct 2-d Gauss-Hermite
    average over the correlated pair (w_i.xi, w_j.xi) and V by Stein's lemma."""
    W = rf.sample_features(jax.random.key(0), D, P)
    x0 = jax.random.normal(jax.random.key(1), (N, D))
    delta = vp_noise_variance(T)
    U, V = rf.expected_feature_statistics(W, x0, T, "identity", block_size=3)
    second = np.exp(-2 * T) * x0.T @ x0 / N + delta * np.eye(D)
    np.testing.assert_allclose(U, W @ second @ W.T / D, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(V, np.sqrt(delta) * W / np.sqrt(D), rtol=1e-11)

    U, V = rf.expected_feature_statistics(W, x0, T, order=10)
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    z1, z2 = np.meshgrid(nodes, nodes, indexing="ij")
    both = np.outer(weights, weights)
    W_np, x_np = np.asarray(W), np.asarray(x0)
    centre = np.exp(-T) * x_np @ W_np.T / np.sqrt(D)
    for i, j in [(0, 1), (2, 7), (4, 4)]:
        cov = delta * W_np[[i, j]] @ W_np[[i, j]].T / D
        cholesky = np.linalg.cholesky(cov + 1e-300 * np.eye(2)) if i != j else np.array([[np.sqrt(cov[0, 0]), 0], [np.sqrt(cov[0, 0]), 0]])
        hi = cholesky[0, 0] * z1
        hj = cholesky[1, 0] * z1 + cholesky[1, 1] * z2
        direct = np.mean([np.sum(both * np.tanh(a[i] + hi) * np.tanh(a[j] + hj)) for a in centre])
        np.testing.assert_allclose(U[i, j], direct, rtol=1e-6)
    slope = np.mean(
        [np.sum(weights * (1 - np.tanh(a[:, None] + np.sqrt(delta * np.sum(W_np**2, 1) / D)[:, None] * nodes) ** 2), axis=1) for a in centre], axis=0
    )
    np.testing.assert_allclose(V, slope[:, None] * np.sqrt(delta) * W_np / np.sqrt(D), rtol=1e-6)


def test_monte_carlo_statistics_converge_to_the_expected_ones():
    W = rf.sample_features(jax.random.key(0), D, P)
    x0 = jax.random.normal(jax.random.key(1), (N, D))
    exact_u, exact_v = rf.expected_feature_statistics(W, x0, T)
    errors = []
    for m in (400, 6400):
        U, V = rf.feature_statistics(W, x0, T, jax.random.key(2), m)
        errors.append([np.linalg.norm(U - exact_u) / np.linalg.norm(exact_u), np.linalg.norm(V - exact_v) / np.linalg.norm(exact_v)])
    ratios = np.array(errors[0]) / np.array(errors[1])
    assert np.all((ratios > 2.0) & (ratios < 8.0)), ratios  # 16x the draws -> ~4x smaller
    assert errors[1][0] < 0.01


def test_population_statistics_identity_exact():
    W = rf.sample_features(jax.random.key(0), D, P)
    t, std = 0.5, 1.4
    delta = vp_noise_variance(t)
    gamma2 = np.exp(-2 * t) * std**2 + delta
    exact = rf.gaussian_population_statistics(W, t, std, "identity")
    np.testing.assert_allclose(exact.U, gamma2 * W @ W.T / D, rtol=1e-11)
    np.testing.assert_allclose(exact.V, np.sqrt(delta) * W / np.sqrt(D), rtol=1e-11)
    np.testing.assert_allclose(exact.phi_x, gamma2 * W / np.sqrt(D), rtol=1e-11)


@pytest.mark.slow
def test_population_statistics_match_monte_carlo():
    W = rf.sample_features(jax.random.key(0), D, P)
    t, std = 0.5, 1.4
    gamma2 = np.exp(-2 * t) * std**2 + vp_noise_variance(t)
    population = rf.gaussian_population_statistics(W, t, std)
    num = 200_000
    x0 = std * jax.random.normal(jax.random.key(1), (num, D))
    U, V = rf.feature_statistics(W, x0, t, jax.random.key(2), 1)
    phi_phi, phi_x = rf.gaussian_score_statistics(W, t, jax.random.key(3), num, std)
    for estimate, target in [(U, population.U), (phi_phi, population.U), (V, population.V), (phi_x, population.phi_x)]:
        assert np.max(np.abs(estimate - target)) < 5 * np.sqrt(gamma2 / num) * 2, np.max(np.abs(estimate - target))


def test_score_error_quadratic_form_equals_direct_average():
    W = rf.sample_features(jax.random.key(0), D, P)
    A = jax.random.normal(jax.random.key(1), (D, P))
    key, num, std = jax.random.key(2), 500, 1.5
    gamma2 = np.exp(-2 * T) * std**2 + vp_noise_variance(T)
    x = np.sqrt(gamma2) * jax.random.normal(key, (num, D))
    direct = np.mean(np.sum((jax.vmap(lambda y: rf.score(A, W, y))(x) + x / gamma2) ** 2, axis=1)) / D
    direct += 1 / gamma2 - np.mean(np.sum(x**2, axis=1)) / (D * gamma2**2)  # E|x|^2 exactly
    np.testing.assert_allclose(rf.score_error(A, W, T, key, num, std), direct, rtol=1e-11)
    np.testing.assert_allclose(rf.score_error(0 * A, W, T, key, num, std), 1 / gamma2, rtol=1e-12)


def test_training_curves_in_the_eigenbasis_equal_those_of_the_flow_weights():
    """rf.flow_curves (the closed form in U's eigenbasis, no weights formed) equals rf.weight_curves
    of rf.gradient_flow_weights, curve by curve (train loss, test loss, score error), with the
    exact statistics of rf.training_statistics; at A = 0 the curves are 1, 1 and 1/Gamma_t^2."""
    W = rf.sample_features(jax.random.key(0), D, P)
    std = 1.4
    stats = rf.training_statistics(W, jax.random.normal(jax.random.key(1), (N, D)), T, std)
    np.testing.assert_allclose(stats.U, rf.expected_feature_statistics(W, std * jax.random.normal(jax.random.key(1), (N, D)), T)[0], rtol=1e-12)
    taus = jnp.concatenate([jnp.zeros(1), jnp.geomspace(0.1, 1e4, 6)])
    weights = rf.gradient_flow_weights(stats.U, stats.V, T, taus)
    curves = rf.flow_curves(stats, T, taus, std)
    np.testing.assert_allclose(curves, rf.weight_curves(weights, stats, T, std), rtol=1e-10)
    np.testing.assert_allclose(curves[:, 0], [1.0, 1.0, 1.0 / (np.exp(-2 * T) * std**2 + vp_noise_variance(T))], rtol=1e-12)


def test_monte_carlo_trainer_vmaps_over_seeds_times_and_learning_rates(problem):
    W, x0, _, _ = problem
    train = rf.make_monte_carlo_train(num_steps=30, record_steps=[0, 10, 30], num_noise=4)
    ts, lrs = jnp.array([0.1, 0.3, 1.0]), jnp.array([5.0, 10.0, 20.0])
    keys = jax.random.split(jax.random.key(4), 3)
    batched = jax.jit(jax.vmap(lambda k, t, lr: train(k, {"W": W, "x0": x0, "t": t, "learning_rate": lr})))(keys, ts, lrs)
    single = train(keys[1], {"W": W, "x0": x0, "t": ts[1], "learning_rate": lrs[1]})
    np.testing.assert_allclose(batched.params["A"][1], single.params["A"], rtol=1e-10, atol=1e-12)
    assert batched.params["A"].shape == (3, 3, D, P)
    assert np.all(batched.loss[:, 0] > batched.loss[:, -1])  # loss decreases from L(0) ~ 1


def test_monte_carlo_gd_follows_the_closed_form_of_the_expected_loss(problem):
    """Fresh noise each step (SGD on the DSM loss) tracks the flow of the expected loss."""
    W, x0, _, _ = problem
    U, V = rf.expected_feature_statistics(W, x0, T)
    eta, steps = 1.0, 72
    train = rf.make_monte_carlo_train(num_steps=steps, record_steps=[steps], num_noise=64)
    trajectory = train(jax.random.key(5), {"W": W, "x0": x0, "t": T, "learning_rate": eta})
    closed = rf.gradient_flow_weights(U, V, T, jnp.array([steps * eta / D**2]))[0]
    error = np.linalg.norm(trajectory.params["A"][-1] - closed) / np.linalg.norm(closed)
    assert error < 0.05, error
