"""The inverse-variance emergence law of the one-layer closed form (docs/theory.md 2)."""

import jax
import jax.numpy as jnp
import pytest

from diffdyn.dynamics import measures
from diffdyn.dynamics.theory import linear


@pytest.mark.parametrize(("criterion", "slope"), [("geometric", -1.02), ("harmonic", -1.17)])
def test_emergence_law_of_the_one_layer_model(criterion, slope):
    """Q = 0.1, 20 log-spaced lambda in [1e-3, 1e2]: slope of log tau* on log lambda."""
    lam = jnp.geomspace(1e-3, 1e2, 20)
    taus = jnp.geomspace(1e-4, 1e3, 1401)
    variance = linear.generated_variance(lam[:, None], 0.1, taus[None, :])
    tau_star, rising = jax.vmap(lambda v, target: measures.emergence_time(taus, v, target, criterion=criterion))(variance, lam)
    fit = measures.fit_power_law(lam, tau_star, variance[:, 0], rising)
    assert fit["rising"]["n_modes"] == 20
    assert abs(-fit["rising"]["alpha"] - slope) < 0.01
