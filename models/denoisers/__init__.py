"""Pure-functional denoisers.

Each denoiser is a frozen (hashable, static) dataclass holding only shape-determining settings,
with pure methods over plain pytrees of parameters:

* ``init(key, scale) -> params``: ``scale`` is the traced init scale ``Q`` (may be vmapped);
* ``apply(params, x, sigma) -> x_hat`` for ONE sample ``x`` (vmap outside);
* ``affine(params) -> (A, c)`` for denoisers affine in ``x`` (``D(x) = A x + c``), which makes the
  exact population loss and exact covariance propagation available.

The nonlinear networks (``MLPUNet``, ``UNet``) instead expose ``init(key, ...)`` and a raw
``network(params, x, c_noise)`` for ONE sample, which ``dynamics.edm.precondition`` turns into a
denoiser conditioned on sigma (docs/theory.md 6).

The linear models here are independent per noise level (one parameter set per sigma node, as in [WP]);
``dynamics.sampling.grid_denoiser`` interpolates a grid of them in ``log sigma``.
"""

from diffdyn.models.denoisers.convolution import Circulant, Patch, circulant_matrix
from diffdyn.models.denoisers.deep_linear import DeepLinear, SymmetricTwoLayer
from diffdyn.models.denoisers.linear import Linear
from diffdyn.models.denoisers.mlp import MLPUNet
from diffdyn.models.denoisers.unet import UNet

__all__ = ["Circulant", "DeepLinear", "Linear", "MLPUNet", "Patch", "SymmetricTwoLayer", "UNet", "circulant_matrix"]
