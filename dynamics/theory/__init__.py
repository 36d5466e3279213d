"""Closed-form predictions of the learning dynamics, one module per model family.

- :mod:`.linear`: one-layer linear denoiser, per-mode weights under gradient flow and gradient
  descent, general non-aligned init with a data mean, generated variance in closed form
  (Ei / Ein), and the shared log-sigma quadrature of the generated variance [WP sec. 3-4].
- :mod:`.deep_linear`: two-layer linear denoisers (symmetric ``P P^T`` and balanced
  ``W2 W1``), logistic weights and their generated variance [WP sec. 5.1].
- :mod:`.convolution`: full-width circular and local patch convolutions on periodic signals,
  Fourier-space weights and generated variance [WP sec. 5.2].
- :mod:`.flow_matching`: linear flow-matching velocity field [WP app. H].
- :mod:`.random_features`: Gaussian-equivalence constants, spectral density of the feature
  covariance ``U``, bulk edges, generalization / memorization time scales [BUBM].
- :mod:`.speciation`: speciation and collapse times, the minority delay ``K*(h)``, exact-score
  cloning and basin measurements [BBdBM].

Conventions (docs/theory.md section 1; ``random_features`` and ``speciation`` use OU time ``t``,
docs/theory.md 7-8): EDM sigma-time ``x = x0 + sigma z``; per-noise-level
loss summed over dimensions and not halved; gradient flow ``dtheta/dtau = -eta grad L`` with
training time ``tau`` = learning rate x number of steps. All functions are pure ``jax.numpy``,
broadcast their inputs elementwise, and are jit-able and differentiable.

[WP] B. Wang, C. Pehlevan, "An Analytical Theory of Spectral Bias in the Learning Dynamics of
Diffusion Models", arXiv 2503.03206.
"""

from . import convolution, deep_linear, flow_matching, linear, random_features, speciation

__all__ = ["convolution", "deep_linear", "flow_matching", "linear", "random_features", "speciation"]
