"""EDM recipe (docs/theory.md section 6): preconditioning identities, loss, training through make_train,
convergence of a learned nonlinear denoiser to the optimal linear one, Heun vs diffrax order, edm.generate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffdyn.dynamics import edm, status
from diffdyn.dynamics.sampling import heun_sample, pf_ode_sample
from diffdyn.dynamics.schedules import karras_sigmas
from diffdyn.dynamics.theory import linear
from diffdyn.dynamics.training import make_train
from diffdyn.models.denoisers.mlp import MLPUNet

SIGMAS = jnp.geomspace(1e-3, 1e2, 11)
SD2 = edm.SIGMA_DATA**2


def test_preconditioning_values_and_unit_variance_identities():
    c = edm.preconditioning(SIGMAS)
    total = SIGMAS**2 + SD2
    np.testing.assert_allclose(c.c_skip, SD2 / total, rtol=1e-14)
    np.testing.assert_allclose(c.c_out, SIGMAS * edm.SIGMA_DATA / np.sqrt(total), rtol=1e-14)
    np.testing.assert_allclose(c.c_in, 1 / np.sqrt(total), rtol=1e-14)
    np.testing.assert_allclose(c.c_noise, np.log(SIGMAS) / 4, rtol=1e-14)
    # EDM app. B.6: unit-variance network input and training target for data of variance sd^2.
    np.testing.assert_allclose(c.c_in**2 * total, 1.0, rtol=1e-14)
    target_variance = ((1 - c.c_skip) ** 2 * SD2 + c.c_skip**2 * SIGMAS**2) / c.c_out**2
    np.testing.assert_allclose(target_variance, 1.0, rtol=1e-12)
    np.testing.assert_allclose(edm.loss_weight(SIGMAS) * c.c_out**2, 1.0, rtol=1e-14)


def test_zero_network_is_the_optimal_denoiser_of_isotropic_sigma_data_variance():
    denoise = edm.precondition(lambda params, x, c_noise: jnp.zeros_like(x))
    x = jnp.array([0.3, -1.2, 2.0])
    for sigma in SIGMAS:
        np.testing.assert_allclose(denoise(None, x, sigma), linear.optimal_weight(SD2, sigma) * x, rtol=1e-14)


def test_network_receives_scaled_input_and_noise_embedding():
    seen = {}

    def network(params, x_in, c_noise):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return params * jnp.ones_like(x_in)

    x, sigma = jnp.array([1.0, -2.0]), 0.7
    out = edm.precondition(network)(3.0, x, sigma)
    c = edm.preconditioning(sigma)
    np.testing.assert_allclose(seen["x_in"], c.c_in * x, rtol=1e-14)
    np.testing.assert_allclose(seen["c_noise"], np.log(0.7) / 4, rtol=1e-14)
    np.testing.assert_allclose(out, c.c_skip * x + 3.0 * c.c_out, rtol=1e-14)


def test_training_sigmas_are_log_normal():
    keys = jax.random.split(jax.random.key(0), 40_000)
    log_sigma = np.log(jax.vmap(edm.training_sigma)(keys))
    assert abs(log_sigma.mean() - edm.P_MEAN) < 0.03  # 4.5 standard errors (1.2 / 200)
    assert abs(log_sigma.std() - edm.P_STD) < 0.03


def test_weighted_loss_of_the_zero_network_is_one_at_every_sigma():
    """For data of variance sd^2 per element, lambda(sigma) E(c_skip x - x0)^2 = 1 exactly, so the
    minibatch loss (sigmas log-normal, examples drawn with replacement) averages to 1."""
    data = edm.SIGMA_DATA * jax.random.normal(jax.random.key(1), (4096, 8))
    denoise = edm.precondition(lambda params, x, c_noise: jnp.zeros_like(x))
    loss = edm.make_loss(denoise, data, batch_size=20_000)
    value = loss(None, jax.random.key(2), {})
    assert abs(float(value) - 1.0) < 0.02  # per-example std sqrt(2/8), batch 2e4: 0.0035


def test_minibatches_are_drawn_with_replacement_from_the_data():
    data = jnp.arange(5.0)[:, None]
    denoise = lambda params, x, sigma: jnp.zeros_like(x)
    # With D = 0 the per-example loss is lambda(sigma) x0^2 > 0 unless x0 = 0: a batch of 64 from
    # the single example 0 (only possible with replacement) has loss exactly 0, and any draw of
    # the others is positive.
    assert float(edm.minibatch_loss(denoise, None, data[:1], jax.random.key(0), 64)) == 0.0
    assert float(edm.minibatch_loss(denoise, None, data[1:], jax.random.key(0), 64)) > 0.0


def _gaussian_problem(dim=4, n=4096):
    lam = jnp.array([0.1, 0.3, 1.0, 2.0])[:dim]
    rotation, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(5), (dim, dim)))
    data = (jax.random.normal(jax.random.key(6), (n, dim)) * jnp.sqrt(lam)[None, :]) @ rotation.T
    return data.astype(jnp.float32), rotation, lam


def _train_mlp(data, steps, records, seeds=1, width=64):
    # No input LayerNorm: in d = 4 it would erase the norm of x, which the linear optimum needs.
    model = MLPUNet(data.shape[1], width=width, depth=2, embedding=32, input_norm=False)
    denoise = edm.precondition(model.network)
    loss = edm.make_loss(denoise, data, batch_size=256)
    train = make_train(lambda key, hp: model.init(key, jnp.float32), loss, num_steps=steps, record_steps=records, optimizer="adam")
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(7), s))(jnp.arange(seeds))
    trajectory = jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, {"learning_rate": jnp.float32(3e-3)})
    return model, denoise, trajectory, train, keys


@pytest.mark.slow  # two compilations of the training loop (~20 s of CPU)
def test_vmapped_seeds_equal_separate_runs():
    data, _, _ = _gaussian_problem(n=256)
    _, _, trajectory, train, keys = _train_mlp(data, 20, (0, 5, 20), seeds=2, width=8)
    single = jax.jit(train)(keys[1], {"learning_rate": jnp.float32(3e-3)})
    for batched, alone in zip(jax.tree.leaves(trajectory.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(batched[1], alone, rtol=2e-4, atol=2e-6)
    assert not np.allclose(trajectory.loss[0], trajectory.loss[1])  # different seeds differ
    np.testing.assert_array_equal(trajectory.steps[0], [0, 5, 20])


@pytest.mark.slow  # keeps the default suite within CI time; run with -m slow
def test_learned_denoiser_converges_to_the_optimal_linear_denoiser_at_high_sigma():
    """On Gaussian data the Bayes denoiser is W* = C (C + sigma^2 I)^-1; the trained MLP-UNet's
    Jacobian at noisy points approaches it (relative Frobenius error), and the error shrinks with
    training ([WP] sec. 6; docs/theory.md section 6)."""
    data, rotation, lam = _gaussian_problem()
    records = (0, 30, 300, 6000)
    model, denoise, trajectory, _, _ = _train_mlp(data, 6000, records)
    points = jax.random.normal(jax.random.key(8), (4, data.shape[1])).astype(jnp.float32)

    def error(params, sigma):
        optimal = (rotation * linear.optimal_weight(lam, sigma)[None, :]) @ rotation.T
        at = lambda x: jax.jacfwd(lambda y: denoise(params, y, jnp.float32(sigma)))(x * jnp.sqrt(1.0 + sigma**2))
        jacobians = jax.vmap(at)(points)
        return jnp.max(jnp.linalg.norm(jacobians - optimal[None], axis=(1, 2)) / jnp.linalg.norm(optimal))

    for sigma, tolerance in ((1.0, 0.12), (2.0, 0.15)):  # measured 0.088 and 0.109
        errors = [float(error(jax.tree.map(lambda leaf, r=r: leaf[0, r], trajectory.params), sigma)) for r in range(len(records))]
        assert errors[-1] < tolerance, (sigma, errors)
        assert errors[-1] < 0.2 * errors[0], (sigma, errors)
        assert errors[-1] < 0.6 * errors[2] < 0.6 * errors[1], (sigma, errors)


def test_heun_converges_to_adaptive_diffrax_at_second_order():
    """EDM denoiser whose network is the exact residual of the optimal linear one (smooth, known):
    Heun on the Karras grid (ending at sigma_min) against the adaptive diffrax PF-ODE solution."""
    lam = jnp.array([0.05, 0.3, 1.0, 4.0])

    def network(params, x_in, c_noise):  # F such that D = lam / (lam + sigma^2) x exactly
        sigma = jnp.exp(4.0 * c_noise)
        c = edm.preconditioning(sigma)
        x = x_in / c.c_in
        return (linear.optimal_weight(lam, sigma) * x - c.c_skip * x) / c.c_out

    denoise = lambda x, sigma: edm.precondition(network)(None, x, sigma)
    x_T = 80.0 * jax.random.normal(jax.random.key(0), (4,))
    reference = pf_ode_sample(denoise, x_T, rtol=1e-11, atol=1e-11).value
    exact = x_T * jnp.sqrt((lam + 0.002**2) / (lam + 80.0**2))
    np.testing.assert_allclose(reference, exact, rtol=1e-8)
    steps = np.array([16, 32, 64, 128])
    errors = [float(jnp.max(jnp.abs(heun_sample(denoise, x_T, karras_sigmas(int(n), append_zero=False)) - reference) / jnp.abs(exact))) for n in steps]
    order = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 1.9 < order < 2.25, (order, errors)
    local = -np.diff(np.log(errors))[-1] / np.log(2)
    assert abs(local - 2.0) < 0.1, (local, errors)


def test_generate_with_heun_or_the_adaptive_solver_within_its_budget():
    """edm.generate on a denoiser whose network makes D = lam / (lam + sigma^2) x exactly: the
    adaptive PF-ODE lands on the exact map x_T sqrt((lam + smin^2) / (lam + smax^2)), Heun
    within its discretisation error; a step budget too small ends the solve with that status."""
    lam = jnp.array([0.05, 1.0, 4.0])

    def network(params, x_in, c_noise):
        sigma = jnp.exp(4.0 * c_noise)
        c = edm.preconditioning(sigma)
        x = x_in / c.c_in
        return (linear.optimal_weight(lam, sigma) * x - c.c_skip * x) / c.c_out

    denoise = edm.precondition(network)
    x_T = 80.0 * jax.random.normal(jax.random.key(1), (3,))
    exact = x_T * jnp.sqrt((lam + 0.002**2) / (lam + 80.0**2))
    adaptive = edm.generate(denoise, None, x_T, heun_steps=None, rtol=1e-8)
    assert int(adaptive.status) == status.OK
    np.testing.assert_allclose(adaptive.value, exact, rtol=1e-6)
    heun = edm.generate(denoise, None, x_T, heun_steps=64)
    assert int(heun.status) == status.OK
    np.testing.assert_allclose(heun.value, heun_sample(lambda x, s: denoise(None, x, s), x_T, karras_sigmas(64)), rtol=1e-14)
    assert float(jnp.max(jnp.abs(heun.value / exact - 1))) < 1e-2
    assert int(edm.generate(denoise, None, x_T, heun_steps=None, rtol=1e-8, max_steps=4).status) == status.MAX_STEPS
