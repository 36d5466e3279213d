"""End-to-end differentiability: training, the PF-ODE, closed forms and emergence times (float64).

Every derivative is checked against central finite differences; the simulated ones also against
the closed forms of docs/theory.md section 2 where both exist.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from diffdyn.dynamics import objectives
from diffdyn.dynamics.measures import emergence_time, soft_emergence_time
from diffdyn.dynamics.sampling import generated_covariance, grid_denoiser, interpolate_log_sigma, pf_ode_sample
from diffdyn.dynamics.schedules import SIGMA_MAX, SIGMA_MIN
from diffdyn.dynamics.theory import linear
from diffdyn.dynamics.training import make_train, quadratic_gradient_descent, quadratic_gradient_flow
from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.denoisers import Linear
from diffdyn.models.distributions.gaussian import random_rotation


def central_differences(fn, x, relative_step):
    """``d fn / d x_i`` for every entry of the vector ``x`` (``fn`` returns an array or scalar),
    with step ``relative_step * |x_i|``; stacked on the last axis like ``jax.jacfwd``."""
    x = np.asarray(x, dtype=float)
    columns = []
    for i in range(x.size):
        step = relative_step * abs(x[i])
        shift = np.zeros_like(x)
        shift[i] = step
        columns.append((np.asarray(fn(x + shift)) - np.asarray(fn(x - shift))) / (2 * step))
    return np.stack(columns, axis=-1)


def population(model, basis, lam, sigma):
    """Exact population loss of ``model`` for centred data with covariance ``U diag(lam) U^T``."""
    cov = (basis * lam[None, :]) @ basis.T
    return lambda params: objectives.population_loss(model.affine, params, jnp.zeros(basis.shape[0]), cov, sigma)


# --- soft emergence time ---------------------------------------------------------------------

TAUS = np.geomspace(1e-3, 1e2, 2000)


def relaxation(taus, target, start):
    """``v(tau) = target (1 - e^-tau) + start e^-tau``: monotone, crossing known exactly."""
    return target * (1 - np.exp(-taus)) + start * np.exp(-taus)


@pytest.mark.parametrize("criterion", ["geometric", "harmonic"])
def test_soft_emergence_time_tends_to_the_hard_crossing(criterion):
    """Dense monotone curves (rising and decaying, and the [WP] generated variance of a rising
    and a decaying mode): temperature 0.01 matches the hard crossing to 1e-2 relative
    (measured: <= 2.4e-5 geometric, <= 3.4e-4 harmonic)."""
    curves = [(relaxation(TAUS, 10.0, 0.1), 10.0, 0.1), (relaxation(TAUS, 0.01, 1.0), 0.01, 1.0)]
    for lam, q in [(0.3, 0.1), (0.05, 0.9)]:
        curves.append((np.asarray(linear.generated_variance(lam, q, TAUS)), lam, None))
    for variance, target, start in curves:
        hard, rising = emergence_time(TAUS, variance, target, criterion=criterion, initial=start)
        soft, soft_rising = soft_emergence_time(TAUS, variance, target, criterion=criterion, temperature=0.01, initial=start)
        assert np.isfinite(hard) and bool(rising) == bool(soft_rising)
        assert_allclose(soft, hard, rtol=1e-2)
    # Past the threshold from the first record: taus[0]; never crossing: taus[-1] (not NaN).
    flat = np.full(TAUS.shape, 5.0)
    assert_allclose(soft_emergence_time(TAUS, flat, 10.0, initial=0.1, temperature=0.01)[0], TAUS[0], rtol=1e-12)
    assert_allclose(soft_emergence_time(TAUS, flat, 10.0, temperature=0.01)[0], TAUS[-1], rtol=1e-12)


def test_soft_emergence_time_gradient_matches_finite_differences_and_vmaps():
    """jax.jacrev through lam~(tau) = linear.generated_variance(lam, q, tau) (target lam) w.r.t.
    ln lam and q equals central differences to 1e-6 relative (measured 6e-10); jit(vmap) over
    modes equals the per-mode calls. The transition (temperature 0.1) spans a few records: with
    one narrower than the grid spacing, tau*(lam) is still smooth but ripples at the grid scale,
    and central differences need much smaller steps (measured: 200 records, temperature 0.05,
    error 3.7e-5 at step 1e-4)."""
    taus = jnp.geomspace(1e-3, 1e3, 400)  # ln-spacing 0.035, below the transition width

    def emergence(log_lam, q):  # (geometric, harmonic) tau* of one mode
        lam = jnp.exp(log_lam)
        variance = linear.generated_variance(lam, q, taus)
        return jnp.stack([soft_emergence_time(taus, variance, lam, criterion=criterion, temperature=0.1)[0] for criterion in ("geometric", "harmonic")])

    log_lams, q = np.log(np.array([0.01, 0.3, 10.0])), np.float64(0.1)
    batched = jax.jit(jax.vmap(emergence, in_axes=(0, None)))
    d_lam, d_q = jax.jit(jax.vmap(jax.jacrev(emergence, argnums=(0, 1)), in_axes=(0, None)))(log_lams, q)
    fd_lam = central_differences(lambda x: batched(x, q), log_lams, 1e-5)  # modes are independent
    fd_q = central_differences(lambda x: batched(log_lams, x[0]), [q], 1e-5)[..., 0]
    assert_allclose(d_lam, np.diagonal(fd_lam, axis1=0, axis2=2).T, rtol=1e-6)
    assert_allclose(d_q, fd_q, rtol=1e-6)
    # Larger modes emerge earlier: d ln tau* / d ln lam ~ -1 ([WP] alpha ~ 1).
    slopes = d_lam / batched(log_lams, q)
    assert np.all((slopes < -0.5) & (slopes > -1.5)), slopes

    lams = np.exp(log_lams)
    variances = linear.generated_variance(lams[:, None], q, taus[None, :])
    measure = lambda v, t: soft_emergence_time(taus, v, t, temperature=0.05)
    tau_star, rising = jax.jit(jax.vmap(measure))(variances, lams)
    single = jax.jit(measure)
    for i in range(lams.size):
        assert_allclose(tau_star[i], single(variances[i], lams[i])[0], rtol=1e-13)
        assert bool(rising[i]) == bool(single(variances[i], lams[i])[1])
    # A traced temperature is allowed (not validated on the host).
    warm = jax.jit(lambda t: soft_emergence_time(taus, variances[0], lams[0], temperature=t)[0])
    assert np.isfinite(warm(0.02))


def test_soft_emergence_time_validation_matches_emergence_time():
    with pytest.raises(ConfigError, match="criterion.*'arithmetic'.*geometric, harmonic"):
        emergence_time(TAUS, TAUS, 1.0, criterion="arithmetic")
    with pytest.raises(ConfigError, match="criterion.*'arithmetic'.*geometric, harmonic"):
        soft_emergence_time(TAUS, TAUS, 1.0, criterion="arithmetic")
    with pytest.raises(ValueError, match="variance"):
        soft_emergence_time(TAUS, TAUS[:-1], 1.0)
    with pytest.raises(ConfigError, match="temperature"):
        soft_emergence_time(TAUS, TAUS, 1.0, temperature=0.0)


# --- rematerialised training loop ------------------------------------------------------------


def test_remat_gives_identical_gradients():
    """jax.grad of the final loss (and of a recorded weight) w.r.t. the learning rate and the
    spectrum, 200 steps of sgd and of adam: identical with and without remat."""
    dim = 4
    model, basis = Linear(dim), random_rotation(jax.random.key(3), dim)
    # A non-zero data mean: with b's gradient exactly 0, Adam's sqrt(v) at v = 0 has no derivative.
    mean = jnp.linspace(-1.0, 1.0, dim)

    def loss(params, key, hparams):
        cov = (basis * hparams["lam"][None, :]) @ basis.T
        return objectives.population_loss(model.affine, params, mean, cov, 0.5)

    def objective(lr, lam, optimizer, remat):
        train = make_train(
            lambda key, hparams: model.init(key, 0.1),
            loss,
            num_steps=200,
            record_steps=(0, 50, 200),
            optimizer=optimizer,
            remat=remat,
        )
        trajectory = train(jax.random.key(0), {"learning_rate": lr, "lam": lam})
        return trajectory.loss[-1] + jnp.sum(trajectory.params["W"][1])

    @jax.jit  # one compilation for the four variants
    def all_gradients(lr, lam):
        return {(optimizer, remat): jax.grad(objective, argnums=(0, 1))(lr, lam, optimizer, remat) for optimizer in ("sgd", "adam") for remat in (False, True)}

    grads = all_gradients(0.01, jnp.array([0.05, 0.3, 1.0, 3.0]))
    for optimizer in ("sgd", "adam"):
        plain, remat = grads[optimizer, False], grads[optimizer, True]
        assert np.all(np.isfinite(plain[1])) and plain[0] != 0
        for a, b in zip(plain, remat, strict=True):
            assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_remat_differentiates_ten_thousand_steps():
    """10^4 GD steps of a d = 8 linear denoiser: d(final loss)/d(learning rate) with remat
    equals the derivative of the discrete-GD closed form, and the backward pass stores ~one
    carry per step (measured: 5.9 MB of temporaries = 74 floats per step for 72 parameters;
    22 MB without remat)."""
    dim, num_steps, sigma, q = 8, 10_000, 1.0, 0.1
    model = Linear(dim)
    lam = jnp.geomspace(0.01, 10.0, dim)
    loss = population(model, jnp.eye(dim), lam, sigma)
    train = make_train(
        lambda key, hparams: model.init(key, q),
        lambda params, key, hparams: loss(params),
        num_steps=num_steps,
        record_steps=(num_steps,),
        remat=True,
    )

    def final_loss(lr):
        return train(jax.random.key(0), {"learning_rate": lr}).loss[-1]

    def closed_form(lr):  # per mode (w - 1)^2 lam + sigma^2 w^2, b stays 0
        w = linear.gd_weights(lam, q, num_steps, sigma, eta=lr)
        return jnp.sum(jnp.square(w - 1.0) * lam + sigma**2 * jnp.square(w))

    compiled = jax.jit(jax.grad(final_loss)).lower(1e-4).compile()
    grad = compiled(1e-4)
    assert np.isfinite(grad) and grad < 0
    assert_allclose(grad, jax.grad(closed_form)(1e-4), rtol=1e-8)
    memory = compiled.memory_analysis()
    if memory is not None:  # CPU/GPU report it
        num_params = dim * dim + dim
        assert memory.temp_size_in_bytes < 1.5 * num_steps * num_params * 8


# --- exact quadratic flow: derivatives through a degenerate Hessian ---------------------------


def test_quadratic_flow_and_descent_derivatives_match_closed_forms():
    """A full d x d weight has every Hessian eigenvalue d times (autodiff through eigh alone gives
    NaN there): jax.jacfwd of the exact flow / GD weights w.r.t. (lam, q, tau, sigma, eta) equals
    that of the per-mode closed forms (reverse mode: see the simulated-derivatives test below)."""
    dim = 3
    model, basis = Linear(dim), random_rotation(jax.random.key(4), dim)

    def mode_weights(matrix):
        return jnp.diagonal(basis.T @ matrix @ basis)

    def flow(x):
        lam, q, tau, sigma, eta = x[:dim], x[dim], x[dim + 1], x[dim + 2], x[dim + 3]
        at = quadratic_gradient_flow(population(model, basis, lam, sigma), model.init(None, q), eta=eta)
        return mode_weights(at(tau)["W"])

    def stable_step(x):  # GD step 0.4 / (sigma^2 + lam_max) (stable below 1 / (...)), scaled by eta
        return x[dim + 3] * 0.4 / (x[dim + 2] ** 2 + jnp.max(x[:dim]))

    def descent(x):  # 40 steps; x[dim + 1] is unused (the step count is an integer)
        lam, q, sigma = x[:dim], x[dim], x[dim + 2]
        at = quadratic_gradient_descent(population(model, basis, lam, sigma), model.init(None, q), eta=stable_step(x))
        return mode_weights(at(40)["W"])

    def flow_theory(x):
        return linear.weights(x[:dim], x[dim], x[dim + 1], x[dim + 2], eta=x[dim + 3])

    def descent_theory(x):
        return linear.gd_weights(x[:dim], x[dim], 40, x[dim + 2], eta=stable_step(x))

    @jax.jit
    def jacobians(x):
        return [(jax.jacfwd(f)(x), jax.jacfwd(g)(x)) for f, g in ((flow, flow_theory), (descent, descent_theory))]

    lam = [0.05, 0.5, 2.0]
    for tau, sigma, eta in [(1e-3, 0.01, 1.0), (0.5, 1.0, 0.7), (20.0, 1.0, 0.7), (0.5, 80.0, 1e-4)]:
        for simulated, theory in jacobians(np.array([*lam, 0.1, tau, sigma, eta])):
            # atol: roundoff of O(1) weights, where a derivative is ~0 (e.g. d/dq once converged)
            assert_allclose(simulated, theory, rtol=1e-9, atol=1e-14)


# --- gradients through training and the probability-flow ODE -------------------------------


def test_gradient_through_training_and_pf_ode_matches_finite_differences():
    """d/d(lam, learning rate) of sum_k ln lam~_k: 1000 optax-sgd steps of per-sigma Linear
    denoisers on 12 nodes (vmapped), then PF-ODE samples of the grid denoiser.

    The PF-ODE is linear and, from the aligned init on centred data, diagonal in the data
    eigenbasis u_k: x_0 = sum_k m_k (u_k . x_T) u_k, and lam~_k = sigma_max^2 m_k^2. So ONE
    sample from x_T = sigma_max sum_k u_k gives every mode exactly: lam~_k = (u_k . x_0)^2
    (cheaper to compile than a batch). lr = 1e-4 < 1/(80^2 + lam_max) keeps GD
    stable at sigma = 80 (tau = 0.1: the modes are partly learned).

    Solver rtol 1e-12 and finite-difference step 1e-3 (relative): the interpolated denoiser has
    kinks at the nodes and the adaptive solver's step sequence moves with the parameters, which
    puts noise on the objective (~1e-9 relative at rtol 1e-10), while jax.grad differentiates
    the computed solution. Measured max relative FD error: 5e-5 (rtol 1e-10, step 1e-3);
    at rtol 1e-12, 5.5e-5 / 2.5e-6 / 2.3e-7 for steps 1e-5 / 1e-4 / 1e-3.
    """
    dim, q, num_steps = 3, 0.1, 1000
    model, basis = Linear(dim), random_rotation(jax.random.key(1), dim)
    nodes = jnp.geomspace(SIGMA_MIN, SIGMA_MAX, 12)
    x_T = SIGMA_MAX * jnp.sum(basis, axis=1)
    train = jax.vmap(
        make_train(
            lambda key, hparams: model.init(key, q),
            lambda params, key, hparams: population(model, basis, hparams["lam"], hparams["sigma"])(params),
            num_steps=num_steps,
            record_steps=(num_steps,),
        ),
        in_axes=(None, {"lam": None, "learning_rate": None, "sigma": 0}),
    )

    def objective(x):
        lam, lr = x[:dim], x[dim]
        trajectory = train(jax.random.key(0), {"lam": lam, "learning_rate": lr, "sigma": nodes})
        final = jax.tree.map(lambda leaf: leaf[:, -1], trajectory.params)
        x_0 = pf_ode_sample(grid_denoiser(model.apply, final, nodes), x_T, rtol=1e-12, atol=1e-14).value
        return jnp.sum(jnp.log(jnp.square(basis.T @ x_0)))  # = sum_k ln lam~_k, see above

    value_and_grad = jax.jit(jax.value_and_grad(objective))  # one compilation, reused for FD
    x0 = np.array([0.3, 1.0, 3.0, 1e-4])
    value, grad = value_and_grad(x0)
    assert np.isfinite(value)
    fd = central_differences(lambda x: value_and_grad(x)[0], x0, 1e-3)
    assert np.all(np.abs(grad * x0) > 0.1)  # non-trivial in every direction
    assert_allclose(grad, fd, rtol=1e-4)


def test_closed_form_and_simulated_derivatives_agree():
    """d lam~_k / d(lam, tau) at q = 0.1, tau = 1: closed form (jax.jacfwd of
    linear.generated_variance) vs simulation (reverse mode through the exact gradient flow at 64 sigma
    nodes, interpolated in ln sigma, covariance pushed through the PF-ODE), both vs central
    differences. Compared as elasticities d ln lam~_k / d ln x_j.

    Values and derivatives differ by the sigma-grid interpolation error, second order in the node
    spacing (measured relative gaps: values 3.0e-5 / 7.3e-6, derivatives 6.0e-5 / 1.5e-5 at
    32 / 64 nodes), so 64 nodes are compared at 1e-4. The interpolated denoiser has kinks at
    the nodes, and the adaptive solver's error there depends on where its steps fall: the
    computed variance jumps by ~5e-8 relative at rtol 1e-10 (1e-5 at 1e-8) when a parameter
    moves, ~1e-9 at rtol 1e-12, hence rtol 1e-12 and a 1e-3 finite-difference step here
    (measured: reverse mode vs central differences within 6e-6 in elasticity).
    """
    dim, q = 3, 0.1
    model, basis = Linear(dim), random_rotation(jax.random.key(2), dim)
    nodes = jnp.geomspace(SIGMA_MIN, SIGMA_MAX, 64)

    def simulated(x):
        lam, tau = x[:dim], x[dim]

        def at_node(sigma):
            return quadratic_gradient_flow(population(model, basis, lam, sigma), model.init(None, q))(tau)

        grid = jax.vmap(at_node)(nodes)

        def affine(sigma):  # in the data eigenbasis: per-mode error control
            matrix, offset = model.affine(interpolate_log_sigma(grid, nodes, sigma))
            return basis.T @ matrix @ basis, basis.T @ offset

        return jnp.diagonal(generated_covariance(affine, dim, rtol=1e-12, atol=1e-14).value)

    def closed(x):
        return linear.generated_variance(x[:dim], q, x[dim])

    x0 = np.array([0.05, 0.5, 5.0, 1.0])

    @jax.jit  # one compilation: the Jacobian row by row (cheaper to build than jacrev's vmap), FD
    def value_and_row(x, cotangent):
        value, pullback = jax.vjp(simulated, x)
        return value, pullback(cotangent)[0]

    rows = [value_and_row(x0, row) for row in np.eye(dim)]
    value_sim, jac_sim = rows[0][0], np.stack([row[1] for row in rows])
    value_theory = closed(x0)
    assert_allclose(value_sim, value_theory, rtol=1e-4)

    def elasticity(jacobian, value):
        return np.asarray(jacobian) * x0[None, :] / np.asarray(value)[:, None]

    sim = elasticity(jac_sim, value_sim)
    theory = elasticity(jax.jacfwd(closed)(x0), value_theory)
    # The modes decouple: d lam~_k / d lam_j = 0 for j != k, in both.
    off_diagonal = ~np.eye(dim, dtype=bool)
    assert np.all(np.abs(sim[:, :dim][off_diagonal]) < 1e-12)
    assert np.all(theory[:, :dim][off_diagonal] == 0)
    assert np.all(np.abs(np.diagonal(theory[:, :dim])) > 0.5) and np.all(np.abs(theory[:, dim]) > 1e-3)
    assert_allclose(sim, theory, rtol=1e-4, atol=1e-12)
    fd_theory = central_differences(closed, x0, 1e-5)
    assert_allclose(theory, elasticity(fd_theory, value_theory), rtol=1e-7, atol=1e-9)
    # Central differences of the simulation along lam_1 and tau (each costs two solves).
    columns = [1, dim]

    def along(columns_x):
        x = x0.copy()
        x[columns] = columns_x
        return value_and_row(x, np.zeros(dim))[0]

    fd_sim = central_differences(along, x0[columns], 1e-3)
    assert_allclose(sim[:, columns], fd_sim * x0[None, columns] / np.asarray(value_sim)[:, None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "lam, q, tau, eta",
    [(10.0, 0.1, 0.1, 1.0), (1.0, 0.1, 1.0, 0.5), (0.1, 0.3, 10.0, 2.0), (0.01, 0.5, 0.1, 1.0), (1.0, 0.2, 1e-6, 1.0)],
)
def test_closed_form_jacobian_in_lam_q_tau_eta(lam, q, tau, eta):
    """jax.jacfwd of linear.generated_variance w.r.t. (lam, q, tau, eta) vs central differences;
    tau and eta enter only through eta * tau (docs/theory.md section 1)."""

    def variance(x):
        return linear.generated_variance(x[0], x[1], x[2], eta=x[3])

    x0 = np.array([lam, q, tau, eta])
    jac = jax.jacfwd(variance)(x0)
    assert np.all(np.isfinite(jac))
    assert_allclose(jac, central_differences(variance, x0, 1e-4), rtol=1e-6, atol=1e-14)
    assert_allclose(jac[2] * tau, jac[3] * eta, rtol=1e-12)
