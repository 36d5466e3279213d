"""The MCM single-neuron theory: the 1-D population loss and the clone losses vs Monte Carlo, the
overlap orders of the spikes, the predicted exponents, and SGD at small d vs the 1-D loss's flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics.theory import cumulants as theory
from diffdyn.models.denoisers.tied import ACTIVATIONS, TiedDenoiser
from diffdyn.models.distributions.cumulants import noised, sample_law, spike_frame

T = 0.1
DIM = 6


def monte_carlo_loss(model, denoiser, params, law, seed, num=400_000):
    """Mean and standard error of the per-coordinate loss of ``denoiser`` on ``num`` noised samples."""
    frame = spike_frame(jax.random.key(9), DIM)
    clean_keys, noise_keys = jnp.split(jax.random.split(jax.random.key(seed), 2 * num), 2)
    clean = jax.vmap(sample_law, in_axes=(0, None, None, None))(clean_keys, model, frame, law)
    x, z = jax.vmap(noised, in_axes=(0, 0, None))(noise_keys, clean, T)
    losses = np.asarray(jax.vmap(denoiser.loss, in_axes=(None, 0, 0, None))(params, x, z, T))
    return losses.mean(), losses.std() / np.sqrt(num), np.asarray(frame)


CASES = [
    ("planted", "independent", "rademacher", "tanh", "data", "mcm"),
    pytest.param("planted", "correlated", "three_point", "scaled_tanh", "noise", "mcm", marks=pytest.mark.slow),
    ("whitened", "hermite2", "rademacher", "relu_squared", "noise", "mcm"),
    pytest.param("whitened", "hermite3", "three_point", "tanh", "data", "mcm", marks=pytest.mark.slow),
    pytest.param("planted", "independent", "skewed", "quadratic", "data", "mcm", marks=pytest.mark.slow),
    pytest.param("planted", "correlated", "rademacher", "tanh", "noise", "covariance_clone", marks=pytest.mark.slow),
    ("whitened", "independent", "rademacher", "scaled_tanh", "data", "mean_clone"),
]


@pytest.mark.parametrize(("variant", "coupling", "latent", "activation", "readout", "law"), CASES)
def test_neuron_loss_equals_monte_carlo(variant, coupling, latent, activation, readout, law):
    """The 1-D integral (law of h = w.x_t, Stein for the noise term) vs the d-dim loss of samples."""
    parameter = {"three_point": 0.05, "skewed": 0.25}.get(latent, 0.0)
    model = theory.MixedCumulantModel(variant=variant, mu=0.7, beta_u=3.0, beta_v=5.0, latent=latent, latent_parameter=parameter, coupling=coupling)
    denoiser = TiedDenoiser(DIM, 1, activation, readout)
    seed = CASES.index((variant, coupling, latent, activation, readout, law))
    weights = jax.random.normal(jax.random.key(100 + seed), (1, DIM)) * 0.4
    params = {"W": weights, "skip": jnp.asarray(0.55)}
    mean, error, frame = monte_carlo_loss(model, denoiser, params, law, seed)
    exact = theory.neuron_loss(model, ACTIVATIONS[activation], readout, 0.55, jnp.asarray(frame) @ weights[0], jnp.linalg.norm(weights), T, DIM, law)
    assert abs(float(exact) - mean) < 4.5 * error, (float(exact), mean, error)


@pytest.mark.parametrize("law", ["mean_clone", "covariance_clone"])
def test_clone_minimum_equals_monte_carlo_of_the_best_linear_denoiser(law):
    """On N(m, C) the best noise predictor is sqrt(Delta) (e^-2t C + Delta)^-1 (x - e^-t m); its
    Monte Carlo loss equals the closed-form minimum, and the MCM's covariance clone sits below
    the mean-only clone (it knows the spikes)."""
    model = theory.MixedCumulantModel(mu=1.0, beta_u=4.0, coupling="correlated")
    frame = spike_frame(jax.random.key(9), DIM)
    covariance = np.eye(DIM) + np.asarray(frame).T @ (np.asarray(theory.spike_covariance(model)) - np.eye(3)) @ np.asarray(frame)
    if law == "mean_clone":
        covariance = float(theory.mean_clone_variance(model, DIM)) * np.eye(DIM)
    decay, noise = np.exp(-T), 1 - np.exp(-2 * T)
    gain = np.sqrt(noise) * np.linalg.inv(decay**2 * covariance + noise * np.eye(DIM))
    num = 400_000
    clean_keys, noise_keys = jnp.split(jax.random.split(jax.random.key(7), 2 * num), 2)
    clean = jax.vmap(sample_law, in_axes=(0, None, None, None))(clean_keys, model, frame, law)
    x, z = (np.asarray(a) for a in jax.vmap(noised, in_axes=(0, 0, None))(noise_keys, clean, T))
    losses = np.mean(np.square((x - decay * model.mu * np.asarray(frame[0])) @ gain.T - z), axis=1)
    assert abs(float(theory.clone_mmse(model, T, DIM, law)) - losses.mean()) < 4.5 * losses.std() / np.sqrt(num)
    assert float(theory.clone_mmse(model, T, DIM, "covariance_clone")) < float(theory.clone_mmse(model, T, DIM, "mean_clone"))


@pytest.mark.parametrize(
    ("readout", "activation", "latent", "expected", "drawn"),
    [
        ("data", "tanh", "rademacher", (2, 2, 4), (True, True, True)),  # odd g: the mean enters at order 2
        pytest.param("noise", "tanh", "rademacher", (2, 2, 4), (False, False, False), marks=pytest.mark.slow),  # the authors' readout: all three repel
        pytest.param("noise", "relu_squared", "rademacher", (1, 2, 4), (True, False, True), marks=pytest.mark.slow),
        ("data", "relu_squared", "skewed", (1, 2, 3), (True, True, True)),  # a skewed latent enters at order 3
        pytest.param("data", "tanh", "skewed", (2, 2, 4), (True, True, False), marks=pytest.mark.slow),  # ... but at 4 for an odd g
    ],
)
def test_spike_orders_are_the_first_nonvanishing_taylor_coefficients(readout, activation, latent, expected, drawn):
    """Float64 Taylor coefficients of the single-neuron loss along each spike: zero below the
    predicted order, nonzero at it; the sign says whether the unit is drawn to the spike."""
    model = theory.MixedCumulantModel(latent=latent, latent_parameter=0.2, beta_u=2.0)
    norm = 0.3 if activation == "relu_squared" else 0.5
    for spike, order, pulls in zip(theory.SPIKES, expected, drawn):
        coefficients = theory.taylor_coefficients(model, ACTIVATIONS[activation], readout, spike, norm, T)
        found, coefficient = theory.spike_order(model, ACTIVATIONS[activation], readout, spike, norm, T)
        assert found == order and coefficient == pytest.approx(coefficients[order - 1], rel=1e-10), spike
        assert max((abs(c) for c in coefficients[: order - 1]), default=0.0) < 1e-9 * abs(coefficient) + 1e-14, (spike, coefficients)
        assert (order % 2 == 1 or coefficient < 0) == pulls, (spike, coefficient)


def test_a_coupling_lowers_the_cumulant_order_to_one_plus_its_hermite_order():
    orders = {coupling: theory.cumulant_order(theory.MixedCumulantModel(coupling=coupling), 4) for coupling in theory.COUPLINGS}
    assert orders == {"independent": 4, "correlated": 2, "hermite2": 3, "hermite3": 4}


def test_predicted_exponents():
    exponent = theory.sample_complexity_exponent
    assert [exponent(k, 0.0) for k in (1, 2)] == [1.0, 1.0]
    assert [exponent(k, 1.0) for k in (1, 2, 3, 4)] == [2.0, 2.0, 2.5, 3.0]
    assert exponent(3, 0.5) == 2.0 and np.isnan(exponent(4, 0.5)) and np.isnan(exponent(None, 1.0))
    assert [theory.optimal_exponent(k) for k in (1, 2, 3, 4)] == [1.0, 1.0, 2.0, 3.0]  # [BMG]: 1 / 1 / 2 (skewed) / 3


def test_sgd_at_small_d_follows_the_flow_of_the_one_dimensional_loss():
    """One unit, plain SGD with large batches at d = 6 vs gradient descent on the 1-D population
    loss in the coordinates (skip, w.m, w.u, w.v, |w_perp|): the loss depends on w only through
    them, so the population step maps onto them exactly; SGD adds noise of order sqrt(eta / batch)."""
    model = theory.MixedCumulantModel(mu=1.0, beta_u=2.0)
    denoiser = TiedDenoiser(DIM, 1, "tanh", "data")
    frame = spike_frame(jax.random.key(9), DIM)
    start = jnp.array([0.15, 0.1, 0.12, 0.3])  # (w.m, w.u, w.v, |w_perp|)
    perpendicular = jnp.linalg.qr(jnp.concatenate([frame.T, jax.random.normal(jax.random.key(1), (DIM, 1))], axis=1))[0][:, 3]
    weights = start[:3] @ frame + start[3] * perpendicular
    eta, steps, batch = 0.35, 600, 4000

    def population(state):
        return theory.neuron_loss(model, jnp.tanh, "data", state[0], state[1:4], jnp.linalg.norm(state[1:]), T, DIM)

    flow_step = jax.jit(lambda state: state - eta * jax.grad(population)(state))
    state = jnp.concatenate([jnp.ones(1), start])
    flow = [state]
    for _ in range(steps):
        state = flow_step(state)
        flow.append(state)
    flow = np.asarray(flow)

    def sgd(key):
        def step(params, index):
            clean = jax.vmap(sample_law, in_axes=(0, None, None, None))(jax.random.split(jax.random.fold_in(key, index), batch), model, frame, "mcm")
            x, z = jax.vmap(noised, in_axes=(0, 0, None))(jax.random.split(jax.random.fold_in(key, -index - 1), batch), clean, T)
            loss = lambda p: jnp.mean(jax.vmap(denoiser.loss, in_axes=(None, 0, 0, None))(p, x, z, T))
            params = jax.tree.map(lambda p, g: p - eta * g, params, jax.grad(loss)(params))
            return params, jnp.concatenate([params["skip"][None], frame @ params["W"][0]])

        return jax.lax.scan(step, {"W": weights[None, :], "skip": jnp.asarray(1.0)}, jnp.arange(steps))[1]

    runs = np.asarray(jax.jit(jax.vmap(sgd))(jax.random.split(jax.random.key(2), 4)))
    assert np.abs(flow[-1, 1:4] - flow[0, 1:4]).min() > 0.09  # every projection moved (the mean up, u and v down to 0)
    standard_error = runs.std(axis=0, ddof=1) / np.sqrt(runs.shape[0])
    np.testing.assert_array_less(np.abs(runs.mean(axis=0) - flow[1:, :4]), 5 * standard_error + 0.005)
