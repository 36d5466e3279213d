"""Training loops against the closed forms of docs/theory.md 2-3 (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import objectives
from diffdyn.dynamics.theory import deep_linear, linear
from diffdyn.dynamics.training import (
    gradient_flow,
    log_spaced_steps,
    make_train,
    quadratic_gradient_descent,
    quadratic_gradient_flow,
)
from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.denoisers import Linear, SymmetricTwoLayer
from diffdyn.models.distributions.gaussian import random_rotation

DIM = 5
LAM = jnp.array([0.05, 0.2, 1.0, 3.0, 8.0])
BASIS = random_rotation(jax.random.key(7), DIM)
COV = (BASIS * LAM[None, :]) @ BASIS.T
MEAN = jnp.zeros(DIM)


def mode_weights(matrix):
    return jnp.diagonal(BASIS.T @ matrix @ BASIS, axis1=-2, axis2=-1)


def population(model, sigma, cov=COV):
    return lambda params: objectives.population_loss(model.affine, params, MEAN, cov, sigma)


def test_log_spaced_steps():
    steps = log_spaced_steps(1000, 10)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 1000
    assert np.all(np.diff(steps) > 0)


def test_make_train_gd_matches_discrete_closed_form_over_a_vmapped_grid():
    """Plain GD (optax.sgd) in one lax.scan, vmapped over seeds x spectra x sigma x lr, equals
    the discrete-GD closed form w* + (Q - w*)(1 - 2 eta (sigma^2 + lambda))^k to 1e-10."""
    model, q, num_steps = Linear(DIM), 0.3, 400
    records = log_spaced_steps(num_steps, 12)
    traces = []

    def init(key, hparams):
        traces.append(1)  # counts tracing, not calls
        return model.init(key, q)

    def loss(params, key, hparams):
        cov = (BASIS * hparams["lam"][None, :]) @ BASIS.T
        return objectives.population_loss(model.affine, params, MEAN, cov, hparams["sigma"])

    train = jax.jit(jax.vmap(make_train(init, loss, num_steps=num_steps, record_steps=records)))
    seeds = jax.random.split(jax.random.key(0), 2)
    spectra = jnp.stack([LAM, 0.5 * LAM])
    sigmas = jnp.array([0.1, 1.0])
    rates = jnp.array([0.01, 0.03])
    grid = jnp.stack(jnp.meshgrid(jnp.arange(2), jnp.arange(2), jnp.arange(2), jnp.arange(2), indexing="ij"), -1).reshape(-1, 4)
    hparams = {"lam": spectra[grid[:, 1]], "sigma": sigmas[grid[:, 2]], "learning_rate": rates[grid[:, 3]]}
    trajectory = train(seeds[grid[:, 0]], hparams)
    assert trajectory.params["W"].shape == (16, len(records), DIM, DIM)
    steps = jnp.asarray(records)[None, :, None]
    expected = linear.gd_weights(hparams["lam"][:, None, :], q, steps, hparams["sigma"][:, None, None], eta=hparams["learning_rate"][:, None, None])
    np.testing.assert_allclose(mode_weights(trajectory.params["W"]), expected, rtol=0, atol=1e-10)
    # Recorded losses are the population losses of the recorded parameters.
    np.testing.assert_allclose(
        trajectory.loss[:, 0],
        jax.vmap(lambda lam, s: objectives.affine_population_loss(q * jnp.eye(DIM), jnp.zeros(DIM), MEAN, (BASIS * lam[None, :]) @ BASIS.T, s))(
            hparams["lam"], hparams["sigma"]
        ),
        rtol=1e-12,
    )
    # A second grid of the same shapes reuses the compiled program.
    traced = len(traces)
    train(seeds[grid[:, 0]], {**hparams, "learning_rate": 0.5 * hparams["learning_rate"]})
    assert len(traces) == traced


def test_gd_converges_to_flow_linearly_in_eta():
    """GD -> gradient flow as eta -> 0 at fixed tau = eta * steps, error O(eta)."""
    model, sigma, q, tau = Linear(DIM), 0.5, 0.2, 0.8
    flow = mode_weights(quadratic_gradient_flow(population(model, sigma), model.init(None, q))(tau)["W"])
    etas = np.array([0.02, 0.01, 0.005, 0.0025])
    errors = []
    for eta in etas:
        steps = int(round(tau / eta))
        train = jax.jit(make_train(lambda k, h: model.init(k, q), lambda p, k, h: population(model, sigma)(p), num_steps=steps, record_steps=(steps,)))
        weights = mode_weights(train(jax.random.key(0), {"learning_rate": eta}).params["W"][0])
        errors.append(float(jnp.max(jnp.abs(weights - flow))))
    order = np.polyfit(np.log(etas), np.log(errors), 1)[0]
    assert 0.95 < order < 1.05


def test_quadratic_flow_matches_closed_form_and_diffrax():
    model, sigma, q = Linear(DIM), 0.7, 0.1
    taus = jnp.geomspace(1e-3, 10.0, 9)
    loss = population(model, sigma)
    exact = jax.vmap(quadratic_gradient_flow(loss, model.init(None, q)))(taus)["W"]
    theory = linear.weights(LAM[None, :], q, taus[:, None], sigma)
    np.testing.assert_allclose(mode_weights(exact), theory, rtol=1e-11, atol=1e-13)
    numerical, status = gradient_flow(loss, model.init(None, q), taus, rtol=1e-10, atol=1e-12)
    numerical = numerical["W"]
    assert status == 0
    np.testing.assert_allclose(numerical, exact, atol=1e-8)


def test_quadratic_gradient_descent_matches_gd_closed_form():
    model, sigma, q, eta = Linear(DIM), 1.5, 0.4, 0.03
    descent = quadratic_gradient_descent(population(model, sigma), model.init(None, q), eta=eta)
    steps = jnp.arange(0, 60, 7)
    weights = mode_weights(jax.vmap(descent)(steps)["W"])
    np.testing.assert_allclose(weights, linear.gd_weights(LAM[None, :], q, steps[:, None], sigma, eta=eta), atol=1e-12)


def test_gradient_flow_of_two_layer_matches_logistic_closed_form():
    model, sigma, q = SymmetricTwoLayer(DIM), 0.3, 0.2
    taus = jnp.geomspace(1e-3, 5.0, 8)
    params = gradient_flow(population(model, sigma), model.init(None, q), taus, rtol=1e-10, atol=1e-12).value
    product = jnp.einsum("tij,tkj->tik", params["P"], params["P"])
    expected = deep_linear.weights(LAM[None, :], q, taus[:, None], sigma)
    np.testing.assert_allclose(mode_weights(product), expected, atol=1e-8)


def test_adam_and_monte_carlo_loss_learn_the_optimal_denoiser():
    """Adam on the Monte Carlo DSM loss (fresh noise every step) approaches W* = Sigma (Sigma+s^2)^-1."""
    model, sigma = Linear(DIM), 1.0
    data = jax.random.normal(jax.random.key(1), (4000, DIM)) * jnp.sqrt(LAM)[None, :] @ BASIS.T
    loss = lambda params, key, hparams: objectives.dsm_loss(model.apply, params, data[:512], sigma, key)
    train = jax.jit(make_train(lambda k, h: model.init(k, 0.0), loss, num_steps=1500, record_steps=(0, 1500), optimizer="adam"))
    trajectory = train(jax.random.key(2), {"learning_rate": 0.02})
    optimum = mode_weights(COV @ jnp.linalg.inv(COV + sigma**2 * jnp.eye(DIM)))
    learned = mode_weights(trajectory.params["W"][-1])
    assert float(jnp.max(jnp.abs(learned - optimum))) < 0.1
    assert trajectory.loss[-1] < trajectory.loss[0]


def test_monte_carlo_loss_estimates_population_loss():
    model, sigma = Linear(DIM), 0.8
    params = model.init(jax.random.key(3), 0.5)
    data = jax.random.normal(jax.random.key(4), (200_000, DIM)) * jnp.sqrt(LAM)[None, :] @ BASIS.T
    estimate = objectives.dsm_loss(model.apply, params, data, sigma, jax.random.key(5))
    exact = population(model, sigma)(params)
    assert abs(float(estimate / exact) - 1) < 0.01


def test_make_train_rejects_bad_settings_before_compiling():
    with pytest.raises(ConfigError, match="optimizer: unknown value 'rmsprop'; allowed: sgd, adam"):
        make_train(None, None, num_steps=10, record_steps=(0, 10), optimizer="rmsprop")
    with pytest.raises(ConfigError, match="record_steps"):
        make_train(None, None, num_steps=10, record_steps=(0, 11))
    with pytest.raises(ConfigError, match="record_steps"):
        make_train(None, None, num_steps=10, record_steps=(5, 5))
