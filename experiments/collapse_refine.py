"""Collapse and refine: denoisers learning data on a low-dimensional manifold ([H]; a reconstruction).

[H] (Huang et al., arXiv 2605.20235) is public only as an abstract: this study implements its
mechanism as docs/theory.md section 10 reconstructs it, every parameter configurable. ONE run
draws a k-dimensional manifold (subspace, sphere or flat torus) randomly embedded in R^D and:

* **collapse** (per noise level): for every family, parameterisation (denoiser loss,
  score-weighted, eps; :mod:`diffdyn.dynamics.theory.manifolds`) and noise level, trains an independent
  denoiser by gradient descent from ``D = x`` on ``n_train`` points (fresh minibatch and noise
  every step), its step a fixed fraction of the affine denoiser's stability bound at that sigma,
  and records at log-spaced checkpoints the Jacobian at on-manifold points (trace = effective
  rank, normal leakage, principal angle, spectrum, FLIPD) and the error to the exact denoiser
  split into its normal and tangent parts. The linear toy's closed form (on the training set's
  moments) lies beside it. Collapse time: the first tau at which the normal leakage per normal
  direction falls below ``collapse_threshold``;
* **intrinsic dimension**: FLIPD and the normal-bundle SVD, on the exact score and on every
  trained denoiser at ``reference_sigma``;
* **two-stage vs ambient** (our SiLD-like construction): the same intrinsic points embedded in
  each of ``comparison_dims`` (padded to one shape, masked models); at every training-set size n a
  conservative denoiser trained at ``encoder_sigma`` (score-weighted) gives the encoder (dominant
  subspace of its Jacobians at the training points, of the chart's dimension) and the decoder
  (itself); an EDM-trained MLP-UNet on the latents and one on the ambient points generate
  samples, scored by their distance to M and the MMD of their intrinsic coordinates to fresh data.

Families: ``linear`` ``F = W x + b`` (the linear toy, simulated), ``conservative`` (gradient of a
potential, :mod:`diffdyn.models.denoisers.conservative`), ``mlp`` (``W x + b`` + an MLP-UNet).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import edm, geometry, measures
from diffdyn.dynamics.config import LogGrid, StudyConfig, setting
from diffdyn.dynamics.study import Outputs, Row, Summary
from diffdyn.dynamics.theory import manifolds as theory
from diffdyn.dynamics.training import log_spaced_steps, make_train
from diffdyn.dynamics.validation import ConfigError
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.denoisers.conservative import Conservative
from diffdyn.models.denoisers.linear import Linear
from diffdyn.models.denoisers.mlp import MLPUNet
from diffdyn.models.distributions import manifolds as data
from diffdyn.models.distributions.gaussian import empirical_data

NAME = "collapse-refine"
REFERENCE = "Huang et al., arXiv 2605.20235 (abstract only: a reconstruction of the mechanism); docs/theory.md section 10"
CONVENTIONS = (
    "EDM sigma time; per-sigma loss weight(sigma) E||D - x0||^2, summed over dimensions, un-halved; tau = learning rate x steps "
    "(a GD step per sigma and parameterisation); EDM-trained MLP-UNets: Adam steps on the element-averaged EDM loss"
)
PRECISION = "float64"
FAMILIES = ("linear", "conservative", "mlp")
MODELS = ("latent", "ambient")


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the collapse-refine study (tau = learning rate x steps; EDM sigmas)."""

    manifold: tuple[str, ...] = setting(("sphere",), "data manifolds, one program each", grid=True, choices=data.MANIFOLDS)
    intrinsic_dim: tuple[int, ...] = setting((1, 2), "intrinsic dimension k, one program each", grid=True, low=1)
    ambient_dim: int = setting(16, "ambient dimension D of the per-sigma denoisers", low=2)
    radius: float = setting(1.0, "sphere and torus radius; subspace: scale s of the N(0, s^2 I_k) latents", traced=True, low=0.0, low_open=True)
    concentration: float = setting(2.0, "von Mises-Fisher concentration along M (0: uniform; sphere and torus)", traced=True, low=0.0)
    n_train: int = setting(256, "training points of the per-sigma denoisers", low=2)
    families: tuple[str, ...] = setting(("linear", "conservative"), "per-sigma denoiser families", choices=FAMILIES)
    parameterisations: tuple[str, ...] = setting(theory.PARAMETERISATIONS, "per-sigma parameterisations and loss weights", choices=theory.PARAMETERISATIONS)
    sigma: LogGrid = setting(LogGrid(0.05, 0.4, 4), "noise levels of the per-sigma denoisers")
    num_steps: int = setting(1500, "gradient-descent steps per noise level", low=1)
    num_records: int = setting(16, "log-spaced checkpoints", low=2)
    step_fraction: float = setting(0.5, "GD step / the affine denoiser's stability bound 2 / (r mu_max(M))", traced=True, low=0.0, high=1.0, low_open=True)
    batch_size: int = setting(64, "minibatch of every training step", low=1)
    width: int = setting(32, "hidden width of the conservative and MLP-UNet denoisers", low=1)
    init_scale: float = setting(0.1, "scale of the conservative denoiser's initial tied part", traced=True, low=0.0)
    collapse_threshold: float = setting(0.3, "collapse: normal leakage / sqrt(D - k) below this", low=0.0, high=1.0, low_open=True)
    reference_sigma: float = setting(0.1, "noise level (nearest grid value) of the final-rank and intrinsic-dimension headlines", low=0.0, low_open=True)
    num_points: int = setting(16, "on-manifold evaluation points", low=1)
    sample_sizes: tuple[int, ...] = setting(
        (16, 64, 256), "training-set sizes of the two-stage vs ambient comparison (each divides the largest; none: skip it)", low=2
    )
    comparison_dims: tuple[int, ...] = setting((8, 16), "ambient dimensions of the comparison (one program, padded to the largest)", low=2)
    encoder_sigma: float = setting(0.05, "noise level of the two-stage encoder / decoder", traced=True, low=0.0, low_open=True)
    edm_steps: int = setting(600, "Adam steps of the EDM-trained MLP-UNets", low=1)
    edm_learning_rate: float = setting(2e-3, "Adam learning rate of the EDM-trained MLP-UNets", traced=True, low=0.0, low_open=True)
    depth: int = setting(2, "residual blocks of the MLP-UNets", low=1)
    embedding: int = setting(16, "noise-embedding size of the MLP-UNets (even)", low=2)
    num_samples: int = setting(512, "generated samples per model (and fresh reference points)", low=2)
    heun_steps: int = setting(18, "Heun sampler steps on the Karras grid", low=2)
    sampler_sigma_max: float = setting(10.0, "sampler's largest noise level", low=0.0, low_open=True)
    mmd_bandwidth: float = setting(0.2, "MMD kernel bandwidth / radius (intrinsic coordinates)", traced=True, low=0.0, low_open=True)
    reference_dim: int = setting(1, "k of the sample-complexity figure (a value of intrinsic_dim)", low=1)


PRESETS = {
    "quick": Config(seeds=2),
    "tiny": Config(
        intrinsic_dim=(1,),
        ambient_dim=4,
        n_train=16,
        families=("linear",),
        sigma=LogGrid(0.1, 0.4, 2),
        num_steps=40,
        num_records=4,
        batch_size=16,
        num_points=3,
        sample_sizes=(),
    ),
    "paper": Config(  # our larger settings ([H]'s own are not public)
        manifold=("subspace", "sphere", "torus"),
        intrinsic_dim=(1, 2, 4),
        ambient_dim=64,
        families=FAMILIES,
        sigma=LogGrid(0.02, 0.5, 8),
        num_steps=20_000,
        num_records=32,
        batch_size=256,
        width=128,
        sample_sizes=(16, 64, 256, 1024),
        comparison_dims=(16, 32, 64, 128),
        edm_steps=10_000,
        depth=4,
        embedding=64,
        num_samples=2048,
        seeds=4,
    ),
}


def validate(config: Config) -> None:
    """Cross-field checks of one grid point."""
    span = data.chart_dim(config.manifold, config.intrinsic_dim)
    for field, dims in (("ambient_dim", (config.ambient_dim,)), ("comparison_dims", config.comparison_dims)):
        if min(dims, default=span + 1) <= span:
            raise ConfigError(
                f"{field}: a {config.manifold} of dimension {config.intrinsic_dim} spans R^{span}; D must exceed it, got {getattr(config, field)}"
            )
    largest = max(config.sample_sizes, default=1)
    if any(largest % n for n in config.sample_sizes):
        raise ConfigError(f"sample_sizes: each must divide the largest ({largest}); got {config.sample_sizes}")
    if config.embedding % 2:
        raise ConfigError(f"embedding: must be even; got {config.embedding}")
    if config.manifold == "subspace" and config.concentration:
        raise ConfigError("concentration: the subspace has Gaussian latents; set 0")


def validate_sweep(config: Config, swept: tuple[str, ...]) -> None:
    if "concentration" in swept and "subspace" in config.manifold:
        raise ConfigError("concentration: cannot be swept with the subspace (Gaussian latents)")


# ----------------------------------------------------------------------------- models and training


def network(config: Config, family: str, dim: int):
    """``(init(key, skip, scale), apply(params, x, sigma))`` of the network ``F``; ``F(0) = skip x``
    (plus the conservative denoiser's small tied part; the MLP-UNet's output layer starts at 0).
    The nonlinear parts are averaged over their width (the MLP-UNet's output divided by it), so
    their tangent kernel stays below the linear part's and the affine stability bound holds."""
    if family == "conservative":
        model = Conservative(dim, config.width)
        return model.init, lambda params, x, sigma: model.apply(params, x)
    linear, mlp = Linear(dim), MLPUNet(dim, config.width, config.depth, config.embedding, input_norm=False)
    if family == "linear":
        return lambda key, skip, scale: linear.init(key, skip), linear.apply
    init = lambda key, skip, scale: {"linear": linear.init(key, skip), "mlp": mlp.init(key)}
    return init, lambda params, x, sigma: linear.apply(params["linear"], x) + mlp.network(params["mlp"], x, jnp.log(sigma) / 4.0) / config.width


def first_rows(points, count):
    """The first ``count`` rows of ``points`` (``count`` may be traced and divides the row count),
    each repeated to keep the shape: a uniformly drawn row is uniform over them."""
    return points[(jnp.arange(points.shape[0]) * count) // points.shape[0]]


def schedule(config: Config, names, sigmas, points) -> dict:
    """:func:`diffdyn.dynamics.theory.manifolds.descent_schedule` on the moments of the training ``points``."""
    return theory.descent_schedule(names, sigmas, *empirical_data(points), config.step_fraction)


def over_grid(function):
    """``function`` vmapped over the (parameterisation, sigma) axes of its arguments."""
    return jax.vmap(jax.vmap(function))


def record_steps(num_steps: int, num_records: int) -> tuple[int, ...]:
    return log_spaced_steps(num_steps, num_records, include_zero=False)


def denoiser(apply, params, entry, active):
    """``D(x) = active (skip x + out F(active x, sigma))`` at the schedule ``entry``, ONE sample: on
    the coordinates where the 0/1 mask ``active`` is 1 exactly a model of those coordinates."""
    return lambda x: active * (entry["skip"] * x + entry["out"] * apply(params, active * x, entry["sigma"]))


def train_per_sigma(config: Config, net, points, key, entry, active):
    """One denoiser trained by GD at the schedule ``entry`` from ``D = x``; its trajectory."""
    init, apply = net

    def loss(params, step_key, entry):
        index_key, noise_key = jax.random.split(step_key)
        x0 = points[jax.random.randint(index_key, (config.batch_size,), 0, points.shape[0])]
        error = jax.vmap(denoiser(apply, params, entry, active))(x0 + entry["sigma"] * jax.random.normal(noise_key, x0.shape)) - x0
        return entry["weight"] * jnp.mean(jnp.sum(jnp.square(error), axis=-1))

    start = lambda init_key, entry: init(init_key, (1.0 - entry["skip"]) / entry["out"], config.init_scale)
    return make_train(start, loss, num_steps=config.num_steps, record_steps=record_steps(config.num_steps, config.num_records))(key, entry)


def edm_denoiser(config: Config, mask):
    """An MLP-UNet with EDM preconditioning, ``mask D(mask x)``: on the ``m`` coordinates where
    ``mask`` is 1 exactly an m-dimensional model (a latent one when they are the first m)."""
    mlp = MLPUNet(mask.shape[0], config.width, config.depth, config.embedding, input_norm=False)
    return mlp, lambda params, x, sigma: mask * edm.precondition(mlp.network)(params, mask * x, sigma)


def train_edm(config: Config, points, mask, key):
    """The EDM recipe (Adam, log-normal sigmas, EDM weighting) on ``points``: the final parameters."""
    mlp, denoise = edm_denoiser(config, mask)
    train = make_train(
        lambda k, h: mlp.init(k),
        edm.make_loss(denoise, points, config.batch_size),
        num_steps=config.edm_steps,
        record_steps=(config.edm_steps,),
        optimizer="adam",
    )
    return jax.tree.map(lambda leaf: leaf[-1], train(key, {"learning_rate": config.edm_learning_rate}).params)


# ----------------------------------------------------------------------------- one run


def family_block(config: Config, manifold, family: str, points, probe, h, key) -> dict:
    """One family trained at every (parameterisation, sigma), measured at every checkpoint."""
    net, active = network(config, family, manifold.ambient_dim), jnp.ones(manifold.ambient_dim)
    train_key, svd_key = jax.random.split(key)
    trajectory = over_grid(lambda entry: train_per_sigma(config, net, points, train_key, entry, active))(h)
    on_points, tangents, noise = probe

    def measure(params, entry):
        denoise = denoiser(net[1], params, entry, active)
        geometry_ = data.denoiser_geometry(manifold, on_points, tangents, denoise, entry["sigma"])
        return geometry_ | {"denoiser_error": data.denoiser_errors(manifold, on_points + entry["sigma"] * noise, denoise, entry["sigma"])}

    measured = over_grid(lambda run, entry: jax.vmap(lambda params: measure(params, entry))(run))(trajectory.params, h)
    at = reference_index(config)
    final, reference = jax.tree.map(lambda leaf: leaf[:, at, -1], trajectory.params), jax.tree.map(lambda leaf: leaf[:, at], h)
    score = lambda params, entry: lambda x: (denoiser(net[1], params, entry, active)(x) - x) / entry["sigma"] ** 2
    bundle = jax.vmap(lambda params, entry: data.normal_bundle_estimate(score(params, entry), on_points, entry["sigma"], svd_key))(final, reference)
    return measured | {"loss": trajectory.loss, "normal_bundle_svd": bundle}


def linear_toy(config: Config, manifold, points, probe, h, taus) -> dict:
    """The closed form (docs/theory.md section 10) of the identity-initialised affine denoiser
    trained by the study's gradient descent on the training set's moments: its effective rank,
    normal leakage and collapse time."""
    dim, (on_points, tangents, _) = manifold.ambient_dim, probe
    weights = lambda entry, tau: theory.linear_toy_weights(
        jnp.eye(dim, dim + 1), *empirical_data(points), entry["sigma"], tau, entry["rate"], entry["learning_rate"]
    )[:, :dim]
    curve = lambda entry, tau: data.denoiser_geometry(manifold, on_points, tangents, lambda x: weights(entry, tau) @ x, entry["sigma"])
    measured = over_grid(lambda entry, times: jax.vmap(lambda tau: curve(entry, tau))(times))(h, taus)
    return {
        "theory_effective_rank": measured["trace"],
        "theory_normal_leakage": measured["leakage"],
        "theory_collapse_time": over_grid(collapse(config))(measured["leakage"], taus),
    }


def collapse(config: Config):
    """``(leakage[step], tau[step]) -> `` the first tau with leakage <= ``collapse_threshold`` (NaN: never)."""
    return lambda leakage, tau: measures.first_reach_time(tau, -leakage, -config.collapse_threshold)


def two_stage(config: Config, manifold, active, points, count, reference, key) -> dict:
    """At training-set size ``count`` (the first rows of ``points``, on the coordinates where
    ``active`` is 1): samples of the latent (two-stage) and the ambient EDM model, their distance
    to M and the MMD of their intrinsic coordinates to the ``reference`` coordinates."""
    train, (encoder_key, model_key, start_key) = first_rows(points, count), jax.random.split(key, 3)
    net = network(config, "conservative", manifold.ambient_dim)
    entry = jax.tree.map(lambda leaf: leaf[0, 0], schedule(config, ("score_weighted",), jnp.reshape(config.encoder_sigma, (1,)), train))
    trained = jax.tree.map(lambda leaf: leaf[-1], train_per_sigma(config, net, train, encoder_key, entry, active).params)
    decode = denoiser(net[1], trained, entry, active)
    dim, span = manifold.ambient_dim, data.chart_dim(manifold.kind, manifold.intrinsic_dim)
    encoder = geometry.dominant_subspace(jax.vmap(jax.jacfwd(decode))(train), span)
    masks = jnp.stack([(jnp.arange(dim) < span).astype(points.dtype), active])
    sets = jnp.stack([jnp.pad(train @ encoder, ((0, 0), (0, dim - span))), train])

    def generate(model_points, mask, model_key):
        params, denoise = train_edm(config, model_points, mask, model_key), edm_denoiser(config, mask)[1]
        starts = mask[None, :] * config.sampler_sigma_max * jax.random.normal(start_key, (config.num_samples, dim))
        return jax.vmap(lambda x: edm.generate(denoise, params, x, heun_steps=config.heun_steps, sigma_max=config.sampler_sigma_max).value)(starts)

    latent, ambient = jax.vmap(generate)(sets, masks, jax.random.split(model_key))
    samples = jnp.stack([jax.vmap(decode)(latent[:, :span] @ encoder.T), ambient])
    on_manifold = jax.vmap(jax.vmap(lambda x: data.project(manifold, x)))(samples)
    coordinates = jax.vmap(jax.vmap(lambda x: data.coordinates(manifold, x)))(samples)
    return {
        "sample_error": jax.vmap(lambda chart: geometry.gaussian_mmd(chart, reference, config.mmd_bandwidth * manifold.radius))(coordinates),
        "sample_distance": jnp.mean(jnp.sum(jnp.square(samples - on_manifold), axis=-1), axis=-1),
        "encoder_angle": geometry.principal_angles(encoder, manifold.embedding @ manifold.embedding.T)[-1],
    }


def comparison(config: Config, key) -> dict:
    """:func:`two_stage` for every ``comparison_dims`` (the same intrinsic points, each in its own
    random embedding padded to the largest) and every ``sample_sizes`` (nested training sets),
    and the MMD floor: the MMD between two fresh reference sets."""
    padded, (data_key, reference_key, floor_key, pair_key, *embedding_keys) = (
        max(config.comparison_dims),
        jax.random.split(key, 4 + len(config.comparison_dims)),
    )
    embed = lambda embedding_key, dim: data.random_manifold(
        embedding_key, config.manifold, config.intrinsic_dim, dim, config.radius, config.concentration, padded
    )
    manifolds = jax.tree.map(lambda *leaves: jnp.stack(leaves), *map(embed, embedding_keys, config.comparison_dims))
    active = (jnp.arange(padded)[None, :] < jnp.asarray(config.comparison_dims)[:, None]).astype(manifolds.radius.dtype)
    points = jax.vmap(lambda manifold: data.sample(data_key, manifold, max(config.sample_sizes)))(manifolds)
    first = jax.tree.map(lambda leaf: leaf[0], manifolds)
    fresh = lambda k: jax.vmap(lambda x: data.coordinates(first, x))(data.sample(k, first, config.num_samples))
    at_size = lambda count: jax.vmap(lambda *args: two_stage(config, *args, count, fresh(reference_key), pair_key))(manifolds, active, points)
    floor = geometry.gaussian_mmd(fresh(reference_key), fresh(floor_key), config.mmd_bandwidth * config.radius)
    return jax.vmap(at_size)(jnp.asarray(config.sample_sizes)) | {"mmd_floor": floor}


def point(key, config: Config) -> dict:
    """One manifold, one k and one seed: every block of the module docstring."""
    manifold_key, data_key, probe_key, noise_key, train_key, svd_key, comparison_key = jax.random.split(key, 7)
    manifold = data.random_manifold(manifold_key, config.manifold, config.intrinsic_dim, config.ambient_dim, config.radius, config.concentration)
    points, on_points = data.sample(data_key, manifold, config.n_train), data.sample(probe_key, manifold, config.num_points)
    probe = (on_points, jax.vmap(lambda x: data.tangent_projector(manifold, x))(on_points), jax.random.normal(noise_key, on_points.shape))
    h = schedule(config, config.parameterisations, config.sigma.values(), points)
    taus = h["learning_rate"][..., None] * jnp.asarray(record_steps(config.num_steps, config.num_records), points.dtype)[None, None, :]
    blocks = [family_block(config, manifold, family, points, probe, h, train_key) for family in config.families]
    simulated = {name: jnp.stack([block[name] for block in blocks]) for name in blocks[0]}
    exact = lambda sigma: data.denoiser_geometry(manifold, *probe[:2], lambda x: data.optimal_denoiser(manifold, x, sigma), sigma)
    optimal = jax.vmap(exact)(h["sigma"][0])
    sigma = float(config.sigma.values()[reference_index(config)])
    return (
        (comparison(config, comparison_key) if config.sample_sizes else {})
        | linear_toy(config, manifold, points, probe, h, taus)
        | {
            "effective_rank": simulated["trace"],
            "normal_leakage": simulated["leakage"],
            "principal_angle": simulated["angle"],
            "flipd": simulated["flipd"],
            "jacobian_spectrum": simulated["spectrum"],
            "denoiser_error": simulated["denoiser_error"],
            "loss": simulated["loss"],
            "tau": taus,
            "normal_bundle_svd": simulated["normal_bundle_svd"],
            "collapse_time": jax.vmap(over_grid(collapse(config)), in_axes=(0, None))(simulated["leakage"], taus),
            "optimal_effective_rank": optimal["trace"],
            "optimal_flipd": optimal["flipd"],
            "exact_normal_bundle_svd": data.normal_bundle_estimate(lambda x: data.score(manifold, x, sigma), on_points, sigma, svd_key),
        }
    )


def outputs(config: Config) -> Outputs:
    grid = ("parameterisation", "sigma")
    curves = {name: ("family", *grid, "step") for name in ("effective_rank", "normal_leakage", "principal_angle", "flipd", "loss")}
    return Outputs(
        dims=curves
        | {
            "jacobian_spectrum": ("family", *grid, "step", "rank"),
            "denoiser_error": ("family", *grid, "step", "part"),
            "normal_bundle_svd": ("family", "parameterisation"),
            "collapse_time": ("family", *grid),
            "tau": (*grid, "step"),
            "theory_effective_rank": (*grid, "step"),
            "theory_normal_leakage": (*grid, "step"),
            "theory_collapse_time": grid,
            "optimal_effective_rank": ("sigma",),
            "optimal_flipd": ("sigma",),
            "exact_normal_bundle_svd": (),
            "mmd_floor": (),
            "sample_error": ("size", "comparison_dim", "model"),
            "sample_distance": ("size", "comparison_dim", "model"),
            "encoder_angle": ("size", "comparison_dim"),
        },
        coords={
            "family": np.asarray(config.families),
            "parameterisation": np.asarray(config.parameterisations),
            "sigma": config.sigma.values(),
            "step": np.asarray(record_steps(config.num_steps, config.num_records)),
            "part": np.array(["normal", "tangent", "projection"]),
            "model": np.asarray(MODELS),
            "size": np.asarray(config.sample_sizes),
            "comparison_dim": np.asarray(config.comparison_dims),
        },
        checked=("effective_rank", "normal_leakage", "loss", "optimal_effective_rank", "sample_error", "sample_distance"),
        long_names={
            "effective_rank": "tr dD/dx at on-manifold points (mean)",
            "normal_leakage": "||(I - P_T) dD/dx||_F / sqrt(D - k) at on-manifold points (mean; 1 for D = x)",
            "principal_angle": "largest principal angle (rad) between the top-k eigenspace of dD/dx and T_x M (mean)",
            "flipd": "FLIPD estimate of the denoiser's score at on-manifold points (mean)",
            "denoiser_error": "|D - D*|^2 normal and tangent to M, and |D - pi_M|^2, at noised points (mean)",
            "collapse_time": "first tau with normal_leakage <= collapse_threshold (NaN: not within the run)",
            "theory_collapse_time": "the same for the linear toy's closed form",
            "tau": "training time: GD step x steps",
            "sample_error": "MMD^2 of the samples' intrinsic coordinates to fresh data",
            "sample_distance": "mean squared distance of the samples to M",
            "encoder_angle": "largest principal angle (rad) between the learned encoder and the span of M",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def reference_index(config: Config) -> int:
    """Index of the grid sigma nearest (in log) to ``reference_sigma``."""
    return int(np.argmin(np.abs(np.log(config.sigma.values() / config.reference_sigma))))


def log_slope(x, y) -> tuple[float, int]:
    """OLS slope of ``ln y`` on ``ln x`` over the finite entries, and how many there were."""
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    used = np.isfinite(y) & (y > 0)
    slope = np.polyfit(np.log(x[used]), np.log(y[used]), 1)[0] if len(np.unique(x[used])) > 1 else np.nan
    return float(slope), int(used.sum())


def summarize(dataset, config: Config) -> Summary:
    """Per manifold: collapse-time slopes per (family, parameterisation) against the normal-block
    law; final effective rank and intrinsic-dimension estimates against k; the latent and ambient
    models' sample error (and its slope in n) and distance to M for every D."""
    rows, values = [], {key: {} for key in ("collapse_time_slope", "final_effective_rank", "intrinsic_dimension_estimate", "sample_complexity")}
    for manifold in dataset.manifold.values:
        one, name = dataset.sel(manifold=manifold), str(manifold)
        values["collapse_time_slope"][name] = collapse_slopes(one, config, rows, f"manifold={manifold}")
        for k in one.intrinsic_dim.values:
            ranks, estimates = final_estimates(one.sel(intrinsic_dim=k), config, rows, f"manifold={manifold}, k={k}")
            values["final_effective_rank"].setdefault(name, {})[str(k)] = ranks
            values["intrinsic_dimension_estimate"].setdefault(name, {})[str(k)] = estimates
        if "sample_error" in one:
            complexity = values["sample_complexity"][name] = sample_complexity(one, config)
            for dim, curves in complexity["by_ambient_dim"].items():
                where, largest = f"manifold={manifold}, k={complexity['k']}, D={dim}", f"n={complexity['sizes'][-1]}"
                for model in MODELS:
                    rows.append(Row(f"sample MMD^2 ({model})", curves[model][-1], None, f"{where}, {largest}", f"floor {complexity['mmd_floor']:.3g}"))
                    rows.append(Row(f"sample-error slope d ln MMD^2 / d ln n ({model})", curves[f"{model}_slope"], None, where, f"n = {complexity['sizes']}"))
                    rows.append(Row(f"sample distance^2 to M ({model})", curves[f"{model}_distance"][-1], None, f"{where}, {largest}"))
        if "linear" in one.family:
            deviation = float(np.abs(one.normal_leakage.sel(family="linear") - one.theory_normal_leakage).max())
            rows.append(
                Row("max |normal leakage - closed form| (linear family)", deviation, 0.0, f"manifold={manifold}", "SGD with fresh noise vs the exact descent")
            )
    notes = (
        (
            f"collapse time: first tau (GD step x steps) at which ||(I - P_T) dD/dx||_F / sqrt(D - k), averaged over on-manifold points, falls below "
            f"{config.collapse_threshold}; slopes pooled over k and seeds; predicted: the linear toy's normal block under gradient flow, "
            "ln(1/threshold) / (r sigma^2), r = 2 weight c_out^2; linear toy on these data: the exact descent's closed form."
        ),
        "denoiser and score_weighted differ only by the weight sigma^-4 and take the same GD step in units of their stability bound: their runs coincide step by step and their slopes differ by exactly 4.",
        "sample error: biased MMD^2 (Gaussian kernel, bandwidth mmd_bandwidth x radius) of the samples' intrinsic coordinates to fresh data; floor: two fresh sets.",
    )
    return Summary(rows, values, notes)


def collapse_slopes(one, config: Config, rows: list, where: str) -> dict:
    """Collapse-time slope per (family, parameterisation), pooled over k and seeds; appends rows."""
    sigmas, slopes = config.sigma.values(), {}
    for family in one.family.values:
        for name in one.parameterisation.values:
            times = one.collapse_time.sel(family=family, parameterisation=name)
            measured, used = log_slope(one.sigma.broadcast_like(times), times)
            predicted = log_slope(sigmas, theory.collapse_time(theory.flow_rate(str(name), sigmas), sigmas, config.collapse_threshold))[0]
            toy = log_slope(one.sigma.broadcast_like(times), one.theory_collapse_time.sel(parameterisation=name).broadcast_like(times))[0]
            slopes.setdefault(str(family), {})[str(name)] = {"measured": measured, "predicted": predicted, "linear_toy_on_data": toy, "collapsed_runs": used}
            rows.append(
                Row(
                    "collapse-time slope d ln tau_c / d ln sigma",
                    measured,
                    predicted,
                    f"{where}, family={family}, {name}",
                    f"{used} collapsed (k, sigma, seed); linear toy on these data {toy:.3g}",
                )
            )
    return slopes


def final_estimates(one, config: Config, rows: list, where: str) -> tuple[dict, dict]:
    """At ``reference_sigma`` and the last checkpoint (mean over parameterisations and seeds): the
    effective rank and the intrinsic-dimension estimates per family and of the exact denoiser;
    appends rows (predicted: k)."""
    at, k = one.isel(sigma=reference_index(config), step=-1), float(one.intrinsic_dim)
    per_family = lambda variable: {str(family): float(at[variable].sel(family=family).mean()) for family in one.family.values}
    ranks = per_family("effective_rank") | {"exact_denoiser": float(at.optimal_effective_rank.mean())}
    estimates = {
        "flipd": per_family("flipd") | {"exact_score": float(at.optimal_flipd.mean())},
        "normal_bundle_svd": per_family("normal_bundle_svd") | {"exact_score": float(at.exact_normal_bundle_svd.mean())},
    }
    where = f"{where}, sigma={float(at.sigma):.3g}"
    rows += [Row(f"final effective rank tr dD/dx ({source})", rank, k, where, "last checkpoint") for source, rank in ranks.items()]
    rows += [
        Row(f"intrinsic dimension, {estimator} ({source})", value, k, where)
        for estimator, by_source in estimates.items()
        for source, value in by_source.items()
    ]
    return ranks, estimates


def sample_complexity(one, config: Config) -> dict:
    """Sample MMD^2 (and its log-log slope in n) and distance to M vs n for every D at
    ``reference_dim`` (mean over seeds)."""
    k = config.reference_dim if config.reference_dim in one.intrinsic_dim.values else int(one.intrinsic_dim[0])
    at = one.sel(intrinsic_dim=k).mean("seed")

    def curves(dim, model):
        error = at.sample_error.sel(comparison_dim=dim, model=model).values
        return {
            model: error.tolist(),
            f"{model}_slope": log_slope(at["size"].values, error)[0],
            f"{model}_distance": at.sample_distance.sel(comparison_dim=dim, model=model).values.tolist(),
        }

    by_dim = {str(dim): curves(dim, "latent") | curves(dim, "ambient") for dim in at.comparison_dim.values}
    return {"k": int(k), "sizes": at["size"].values.tolist(), "mmd_floor": float(at.mmd_floor), "by_ambient_dim": by_dim}


def figures(dataset, config: Config) -> dict:
    """Effective rank vs tau per sigma (dashed: linear toy), collapse time vs sigma (lines: the
    normal-block law), and the sample error and distance vs n for every D (first manifold)."""
    one = dataset.isel(manifold=0)
    one = one.sel(intrinsic_dim=config.reference_dim) if config.reference_dim in one.intrinsic_dim.values else one.isel(intrinsic_dim=0)
    run, names, colours = one.isel(seed=0, family=-1), list(dataset.parameterisation.values), plots.mode_colours(dataset.sigma.size)
    rank_figure, rank_axes = plots.panels(len(names), f"effective rank tr dD/dx, {run.family.item()} (dashed: linear toy)")
    for axis, name in zip(rank_axes, names):
        for colour, sigma in zip(colours, run.sigma.values):
            at = run.sel(parameterisation=name, sigma=sigma)
            axis.semilogx(at.tau, at.effective_rank, "o-", color=colour, ms=2.5, label=f"sigma {sigma:.3g}")
            axis.semilogx(at.tau, at.theory_effective_rank, "--", color=colour, lw=0.8)
        axis.set(title=name, xlabel="tau")
    rank_axes[0].legend(fontsize=7)
    collapse_figure, collapse_axes = plots.panels(dataset.family.size, "collapse time vs sigma (lines: normal-block law)")
    sigmas = config.sigma.values()
    for axis, family in zip(collapse_axes, dataset.family.values):
        for name in names:
            times = one.collapse_time.sel(family=family, parameterisation=name)
            law = theory.collapse_time(theory.flow_rate(str(name), sigmas), sigmas, config.collapse_threshold)
            line = axis.loglog(
                one.sigma.broadcast_like(times).values.ravel(),
                times.values.ravel(),
                "o",
                mfc="none",
                label=f"{name} (slope {log_slope(one.sigma.broadcast_like(times), times)[0]:.2f})",
            )[0]
            axis.loglog(sigmas, law, "-", color=line.get_color(), lw=0.8)
        axis.set(title=family, xlabel="sigma", ylabel="collapse time tau")
        axis.legend(fontsize=7)
    figures = {"effective_rank": rank_figure, "collapse_time": collapse_figure}
    if "sample_error" in dataset:
        complexity = sample_complexity(dataset.isel(manifold=0), config)
        figure, axes = plots.panels(2, f"two-stage (solid) vs ambient (dashed), k = {complexity['k']}")
        for colour, (dim, curves) in zip(plots.mode_colours(len(complexity["by_ambient_dim"])), complexity["by_ambient_dim"].items()):
            for axis, suffix in zip(axes, ("", "_distance")):
                axis.loglog(complexity["sizes"], curves[f"latent{suffix}"], "o-", color=colour, label=f"D = {dim}")
                axis.loglog(complexity["sizes"], curves[f"ambient{suffix}"], "s--", color=colour)
        axes[0].axhline(complexity["mmd_floor"], color="gray", lw=0.8, ls=":")
        axes[0].set(xlabel="training points n", ylabel="MMD^2, intrinsic coordinates")
        axes[1].set(xlabel="training points n", ylabel="mean squared distance to M")
        axes[0].legend(fontsize=7)
        figures["sample_complexity"] = figure
    return figures


run = bind(__name__)
