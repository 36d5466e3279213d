"""Spectral bias of nonlinear denoisers (MLP-UNet, convolutional U-Net) trained with EDM ([WP] sec. 6).

The study trains a nonlinear denoiser with the EDM recipe (:mod:`dynamics.edm`: preconditioning,
log-normal training sigmas, EDM weighting, minibatches drawn with replacement, Adam), several
seeds at once (``jax.vmap`` of :func:`dynamics.training.make_train`, parameters recorded at
log-spaced steps inside the compiled loop). At every checkpoint it generates samples with the
deterministic Heun sampler on the Karras grid (and, with ``adaptive``, with the adaptive diffrax
PF-ODE solver), vmapped over samples, checkpoints and seeds, and measures (THEORY.md 6):

* the generated variance ``lambda~_k = u_k^T Cov(samples) u_k`` along every eigenvector ``u_k`` of
  the TRAINING-SET covariance (eigenvalue ``lambda_k``);
* the alignment score: the fraction of the generated covariance's squared Frobenius norm on the
  diagonal in that basis (1: the generated covariance shares the data eigenbasis); the same
  score of ``num_samples`` training examples is the sampling-noise reference;
* emergence times ``tau*_k`` (in optimizer STEPS) and the fits ``tau* ~ lambda^-alpha``, split into
  rising and decaying modes with the gray zone excluded (:func:`dynamics.measures.fit_power_law`).

Beside it, the linear theory (:func:`dynamics.theory.linear.generated_variance`, THEORY.md 2) on
the same training spectrum, evaluated at ``tau = learning_rate x steps`` (the convention of the
linear studies; the network is trained with Adam on the element-averaged EDM-weighted loss, so
only the SHAPE of the law, alpha, is comparable, not the time scale) and with the init scale
``q`` that reproduces the network's measured initial generated variance
(``v0 = sigma_max^(2q) sigma_min^(2(1-q))``).

Datasets: ``gaussian`` (log-normal spectrum ``exp(N(0, log_std^2))`` normalised to mean 1 in a
Haar-random basis, ``n_train`` samples of dimension ``dim``), ``digits``, ``faces``, ``patches``
(bundled), ``mnist``, ``fashion-mnist``, ``cifar10`` (from ``data_path``); all scaled to [-1, 1]
(:mod:`models.distributions.images`). Architectures: ``mlp`` (flat data) and ``unet``
(image-shaped data; ``gaussian`` with ``unet`` is reshaped to ``sqrt(dim) x sqrt(dim)``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics import edm, measures
from dynamics.sampling import heun_sample, pf_ode_sample
from dynamics.schedules import karras_sigmas
from dynamics.sweep import Workload, with_values
from dynamics.theory import linear
from dynamics.training import log_spaced_steps, make_train
from dynamics.validation import (
    ConfigError,
    require_choice,
    require_increasing,
    require_positive_int,
    require_range,
)
from models.denoisers.mlp import MLPUNet
from models.denoisers.unet import UNet
from models.distributions import images
from models.distributions.gaussian import log_normal_spectrum, random_rotation

NAME = "nonlinear-spectral-bias"
DATASETS = ("gaussian", "digits", "faces", "patches", "mnist", "fashion-mnist", "cifar10")
PATH_DATASETS = ("mnist", "fashion-mnist", "cifar10")
ARCHITECTURES = ("mlp", "unet")
CRITERIA = ("geometric", "harmonic")
VARIANCE_FLOOR = 1e-12  # training-set eigenvalues are clipped here (rank-deficient image sets)


@dataclass(frozen=True)
class Config:
    """Settings of the nonlinear spectral-bias study. Training time is counted in optimizer
    steps; the linear theory beside it uses ``tau = learning_rate x steps``."""

    dataset: str = "gaussian"
    architecture: str = "mlp"
    dim: int = 32  # gaussian: data dimension (a square side^2 for unet)
    n_train: int = 2000  # training examples (gaussian, patches: drawn; others: subset, 0 = all)
    log_std: float = 1.0  # gaussian: std of the log variances
    data_path: str = ""  # directory of the mnist / fashion-mnist / cifar10 files
    face_size: int = 16  # faces: resize 25x25 to face_size^2 (0: keep 25x25)
    patch_size: int = 8  # patches: side of the square patches
    width: int = 128  # mlp: hidden width
    depth: int = 4  # mlp: residual blocks
    embedding: int = 64  # noise-embedding size (even)
    input_norm: bool = True  # mlp: LayerNorm on the input (THEORY.md 6)
    zero_output: bool = True  # mlp: output layer starts at zero (EDM); False: LeCun-normal like the others
    base_channels: int = 16  # unet: channels at full resolution
    levels: int = 2  # unet: resolution levels (image sides divisible by 2**levels)
    learning_rate: float = 1e-3  # Adam
    batch_size: int = 256
    num_steps: int = 3000
    num_records: int = 16  # log-spaced checkpoints in [1, num_steps]
    seeds: int = 2  # independent inits / noise streams, trained at once (vmap)
    num_samples: int = 512  # generated samples per checkpoint (same starting noise for all)
    heun_steps: int = 20  # Karras grid size of the Heun sampler (2 * heun_steps - 1 evaluations)
    adaptive: bool = False  # also sample with the adaptive diffrax PF-ODE solver
    rtol: float = 1e-4  # diffrax tolerance (adaptive only)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    criterion: str = "geometric"
    seed: int = 0


PRESETS = {
    "quick": Config(),
    "paper": Config(  # [WP] sec. 6 Gaussian settings (THEORY.md 6)
        dim=256,
        n_train=10_000,
        width=256,
        depth=5,
        embedding=256,
        learning_rate=1e-4,
        batch_size=1024,
        num_steps=5000,
        num_records=24,
        seeds=1,
        num_samples=10_000,
        heun_steps=20,
        zero_output=False,  # a random initial denoiser: d = 128 alpha 1.17 with it, 1.6-1.7 with EDM's zero output layer
    ),
}


# ----------------------------------------------------------------------------- data


@lru_cache(maxsize=4)
def image_set(dataset: str, data_path: str, face_size: int, patch_size: int, n_train: int, seed: int) -> np.ndarray:
    """The image dataset ``(n, height, width, channels)`` in [-1, 1] (cached: validate loads it
    once to check paths and shapes); at most ``n_train`` examples (a fixed random subset)."""
    key = jax.random.fold_in(jax.random.key(seed), 1)
    if dataset == "patches":
        return images.patches(key, n_train, patch_size)
    loaded = {
        "digits": images.digits,
        "faces": lambda: images.faces(face_size),
        "mnist": lambda: images.mnist(data_path),
        "fashion-mnist": lambda: images.fashion_mnist(data_path),
        "cifar10": lambda: images.cifar10(data_path),
    }[dataset]()
    if n_train and n_train < loaded.shape[0]:
        loaded = loaded[np.sort(np.asarray(jax.random.permutation(key, loaded.shape[0])[:n_train]))]
    return loaded


def gaussian_set(config: Config) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``n_train`` samples of the log-normal-spectrum Gaussian ([WP] sec. 6) and its population
    variances (decreasing order is not imposed). Traceable (``log_std`` may be traced)."""
    spectrum_key, rotation_key, sample_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1), 3)
    lam = log_normal_spectrum(spectrum_key, config.dim, config.log_std)
    basis = random_rotation(rotation_key, config.dim)
    white = jax.random.normal(sample_key, (config.n_train, config.dim))
    return (white * jnp.sqrt(lam)[None, :]) @ basis.T, lam


def training_set(config: Config) -> np.ndarray | jnp.ndarray:
    """Training examples with the shape the architecture takes: flat ``(n, d)`` for ``mlp``,
    ``(n, height, width, channels)`` for ``unet`` (gaussian: a jax array, traceable in ``log_std``)."""
    if config.dataset == "gaussian":
        flat = gaussian_set(config)[0]
        if config.architecture == "mlp":
            return flat
        side = math.isqrt(config.dim)
        return flat.reshape(flat.shape[0], side, side, 1)
    data = image_set(config.dataset, config.data_path, config.face_size, config.patch_size, config.n_train, config.seed)
    return images.flatten(data) if config.architecture == "mlp" else data


def eigenbasis(flat: np.ndarray | jnp.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (increasing, clipped at ``VARIANCE_FLOOR``) and eigenvectors (columns) of the
    1/n-normalised covariance of the flat training set: numpy on the host for a numpy array,
    ``jax.numpy`` (traceable, for a sweep) for a jax array."""
    xp = np if isinstance(flat, np.ndarray) else jnp
    centred = flat - flat.mean(axis=0, keepdims=True)
    lam, basis = xp.linalg.eigh(centred.T @ centred / flat.shape[0])
    return xp.maximum(lam, VARIANCE_FLOOR), basis


def model_for(config: Config, shape: tuple[int, ...]):
    if config.architecture == "mlp":
        return MLPUNet(shape[0], config.width, config.depth, config.embedding, input_norm=config.input_norm, zero_output=config.zero_output)
    height, width, channels = shape
    return UNet(height, width, channels, config.base_channels, config.levels, config.embedding)


def validate(config: Config) -> Config:
    """Check every field on the host (and load the data once to check paths and shapes); raise
    :class:`ConfigError` naming the first bad field."""
    require_choice("dataset", config.dataset, DATASETS)
    require_choice("architecture", config.architecture, ARCHITECTURES)
    require_positive_int("dim", config.dim, minimum=2)
    require_positive_int("n_train", config.n_train, minimum=0)
    if config.dataset in ("gaussian", "patches") and config.n_train < 2:
        raise ConfigError(f"n_train: must be >= 2 for dataset {config.dataset}; got {config.n_train}")
    require_range("log_std", config.log_std, low=0.0)
    require_positive_int("face_size", config.face_size, minimum=0)
    require_positive_int("patch_size", config.patch_size, minimum=2)
    require_positive_int("width", config.width)
    require_positive_int("depth", config.depth)
    require_positive_int("embedding", config.embedding, minimum=2)
    if config.embedding % 2:
        raise ConfigError(f"embedding: must be even; got {config.embedding}")
    require_positive_int("base_channels", config.base_channels)
    require_positive_int("levels", config.levels)
    require_range("learning_rate", config.learning_rate, low=0.0, low_open=True)
    require_positive_int("batch_size", config.batch_size)
    require_positive_int("num_steps", config.num_steps, minimum=4)
    require_positive_int("num_records", config.num_records, minimum=4)
    require_positive_int("seeds", config.seeds)
    require_positive_int("num_samples", config.num_samples, minimum=2)
    require_positive_int("heun_steps", config.heun_steps, minimum=2)
    require_range("rtol", config.rtol, low=0.0, high=1e-1, low_open=True)
    require_range("sigma_min", config.sigma_min, low=0.0, low_open=True)
    require_increasing("sigma_min", config.sigma_min, "sigma_max", config.sigma_max)
    require_choice("criterion", config.criterion, CRITERIA)
    require_positive_int("seed", config.seed, minimum=0)
    if config.dataset in PATH_DATASETS and not config.data_path:
        raise ConfigError(f"data_path: required for dataset {config.dataset} (a local directory)")
    if config.dataset == "gaussian" and config.architecture == "unet":
        side = math.isqrt(config.dim)
        if side * side != config.dim:
            raise ConfigError(f"dim: unet on gaussian data needs a square dim (side^2); got {config.dim}")
        shape = (side, side, 1)
    elif config.dataset == "gaussian":
        shape = (config.dim,)
    else:
        shape = training_set(config).shape[1:]
    if config.architecture == "unet" and any(side % 2**config.levels for side in shape[:2]):
        raise ConfigError(
            f"levels: image sides {shape[0]}x{shape[1]} must be divisible by 2**levels = {2**config.levels}"
        )
    return config


# ----------------------------------------------------------------------------- simulation


def record_steps(config: Config) -> tuple[int, ...]:
    """Log-spaced checkpoints in ``[1, num_steps]`` (step 0 is left out: log time axis)."""
    return log_spaced_steps(config.num_steps, config.num_records, include_zero=False)


def study_train(config: Config, model, data: jnp.ndarray):
    """ONE denoiser's ``train(key, hparams) -> Trajectory`` (:func:`dynamics.training.make_train`):
    the EDM minibatch loss on ``data``, Adam at ``hparams["learning_rate"]``, parameters recorded
    at :func:`record_steps`."""
    denoise = edm.precondition(model.network)
    loss = edm.make_loss(denoise, data, config.batch_size)
    init = lambda key, hparams: model.init(key, data.dtype)
    return make_train(init, loss, num_steps=config.num_steps, record_steps=record_steps(config), optimizer="adam")


def train_runs(config: Config, model, data: jnp.ndarray):
    """Train ``seeds`` denoisers at once; returns the :class:`dynamics.training.Trajectory`
    with leading axes ``(seed, record)``. Seed ``s`` uses ``fold_in(fold_in(key(seed), 2), s)``."""
    train = study_train(config, model, data)
    root = jax.random.fold_in(jax.random.key(config.seed), 2)
    keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(config.seeds))
    hparams = {"learning_rate": jnp.asarray(config.learning_rate, data.dtype)}
    return jax.jit(jax.vmap(train, in_axes=(0, None)))(keys, hparams)


def alignment(samples: jnp.ndarray, basis: jnp.ndarray) -> jnp.ndarray:
    """Fraction of the squared Frobenius norm of the samples' covariance, written in ``basis``,
    that lies on its diagonal (1 when it is diagonal in that basis)."""
    centred = samples - jnp.mean(samples, axis=0, keepdims=True)
    projected = centred @ basis
    cov = projected.T @ projected / (samples.shape[0] - 1)
    return jnp.sum(jnp.square(jnp.diagonal(cov))) / jnp.sum(jnp.square(cov))


def generated_measures(config: Config, model, params, basis: jnp.ndarray, starts: jnp.ndarray, *, adaptive: bool):
    """Per-mode variance and alignment of the samples generated by every checkpoint of every seed
    (``params`` leaves ``(seed, record, ...)``): Heun on the Karras grid, or the adaptive diffrax
    PF-ODE; one compiled program vmapped over seeds, checkpoints and samples."""
    denoise = edm.precondition(model.network)
    sigmas = karras_sigmas(config.heun_steps, config.sigma_min, config.sigma_max).astype(starts.dtype)

    def one_checkpoint(checkpoint):
        sample_denoise = lambda x, sigma: denoise(checkpoint, x, sigma)
        if adaptive:
            generate = lambda x: pf_ode_sample(
                sample_denoise, x, sigma_max=config.sigma_max, sigma_min=config.sigma_min,
                rtol=config.rtol, atol=config.rtol,
            )
        else:
            generate = lambda x: heun_sample(sample_denoise, x, sigmas)
        samples = jax.vmap(generate)(starts).reshape(starts.shape[0], -1)
        return measures.sample_mode_variances(samples, basis), alignment(samples, basis)

    return jax.jit(jax.vmap(jax.vmap(one_checkpoint)))(params)


def starting_noise(config: Config, shape: tuple[int, ...]) -> jnp.ndarray:
    """The sampler's ``num_samples`` starting points ``sigma_max z`` (float32), the same for every
    seed and checkpoint (key ``fold_in(key(seed), 3)``)."""
    noise_key = jax.random.fold_in(jax.random.key(config.seed), 3)
    return config.sigma_max * jax.random.normal(noise_key, (config.num_samples, *shape), jnp.float32)


def simulate(config: Config) -> dict:
    """Train and measure in float32 (the network runs); returns host arrays."""
    with jax.enable_x64(False):
        data = jnp.asarray(training_set(config), jnp.float32)
        flat = np.asarray(data, np.float64).reshape(data.shape[0], -1)
        lam, basis_np = eigenbasis(flat)
        basis = jnp.asarray(basis_np, jnp.float32)
        model = model_for(config, tuple(data.shape[1:]))
        trajectory = train_runs(config, model, data)
        starts = starting_noise(config, tuple(data.shape[1:]))
        variance, aligned = generated_measures(config, model, trajectory.params, basis, starts, adaptive=False)
        out = {
            "lam": lam,
            "steps": np.asarray(trajectory.steps[0]),
            "loss": np.asarray(trajectory.loss),
            "variance": np.asarray(variance, np.float64),
            "alignment": np.asarray(aligned, np.float64),
        }
        reference = jnp.asarray(flat[: min(config.num_samples, flat.shape[0])], jnp.float32)
        out["alignment_reference"] = float(alignment(reference, basis))
        if config.adaptive:
            adaptive_variance, _ = generated_measures(config, model, trajectory.params, basis, starts, adaptive=True)
            out["variance_adaptive"] = np.asarray(adaptive_variance, np.float64)
        return out


def theory_q(initial_variance: np.ndarray, config: Config) -> float:
    """Aligned init scale ``q`` whose tau = 0 generated variance
    ``sigma_max^(2q) sigma_min^(2(1-q))`` equals the geometric mean of ``initial_variance``."""
    log_v0 = float(np.mean(np.log(initial_variance)))
    log_min, log_max = 2 * math.log(config.sigma_min), 2 * math.log(config.sigma_max)
    return float(np.clip((log_v0 - log_min) / (log_max - log_min), 0.0, 1.0))


def emergence(config: Config, steps: np.ndarray, variance: np.ndarray, lam: np.ndarray):
    """Emergence steps and directions for curves ``variance[..., step, mode]`` with targets ``lam``;
    the initial variance is the first record's. Traceable (returns jax arrays)."""
    curves = jnp.moveaxis(jnp.asarray(variance), -2, -1)  # (..., mode, step)
    flat = curves.reshape(-1, curves.shape[-1])
    goals = jnp.broadcast_to(jnp.asarray(lam), curves.shape[:-1]).reshape(-1)
    time = lambda curve, goal: measures.emergence_time(jnp.asarray(steps, curve.dtype), curve, goal, criterion=config.criterion)
    tau_star, rising = jax.vmap(time)(flat, goals)
    return tau_star.reshape(curves.shape[:-1]), rising.reshape(curves.shape[:-1])


def run(config: Config = PRESETS["quick"]) -> xr.Dataset:
    """Train, sample, measure, and lay the linear theory beside it; one labelled dataset."""
    config = validate(config)
    sim = simulate(config)
    lam, steps = sim["lam"], sim["steps"]
    q = theory_q(sim["variance"][:, 0], config)
    with jax.enable_x64(True):
        theory_variance = np.asarray(linear.generated_variance(
            jnp.asarray(lam)[None, :], q, config.learning_rate * jnp.asarray(steps, float)[:, None],
            sigma_min=config.sigma_min, sigma_max=config.sigma_max,
        ))
    stacked = np.stack([np.broadcast_to(theory_variance, sim["variance"].shape), sim["variance"]])
    tau_star, rising = map(np.asarray, emergence(config, steps, stacked, lam))
    dataset = xr.Dataset(
        {
            "variance": (("source", "seed", "step", "mode"), stacked),
            "emergence_step": (("source", "seed", "mode"), tau_star),
            "rising": (("source", "seed", "mode"), rising),
            "alignment": (("seed", "step"), sim["alignment"]),
            "loss": (("seed", "step"), sim["loss"]),
        },
        coords={
            "source": ["theory", "network"],
            "seed": np.arange(config.seeds),
            "step": steps,
            "tau": ("step", config.learning_rate * steps.astype(float)),
            "mode": np.arange(lam.size),
            "lam": ("mode", lam),
        },
        attrs={
            "experiment": NAME,
            "config": repr(dataclasses.asdict(config)),
            "conventions": (
                "EDM sigma time; network: Adam on the element-averaged EDM-weighted loss, time in steps; "
                "theory: one-layer linear model, gradient flow on the summed un-halved loss at "
                "tau = learning_rate x steps, aligned init q matched to the measured initial variance"
            ),
            "theory_q": q,
            "alignment_reference": sim["alignment_reference"],
            "source_reference": "Wang & Pehlevan, arXiv 2503.03206 (NeurIPS 2025), sec. 6, app. I",
        },
    )
    dataset["variance"].attrs["long_name"] = f"generated variance per training eigenmode (Heun, {config.heun_steps} steps, {config.num_samples} samples)"
    dataset["alignment"].attrs["long_name"] = "fraction of generated covariance Frobenius mass on the diagonal (training eigenbasis)"
    dataset["loss"].attrs["long_name"] = "EDM minibatch loss at the checkpoint"
    if "variance_adaptive" in sim:
        dataset["variance_adaptive"] = (("seed", "step", "mode"), sim["variance_adaptive"])
        dataset["variance_adaptive"].attrs["long_name"] = "generated variance per mode (adaptive diffrax PF-ODE)"
    return dataset


# ----------------------------------------------------------------------------- sweeps

SCAN_TRACED = ("learning_rate", "log_std")  # vary inside one compiled sweep program


def validate_sweep(config: Config, fields: tuple[str, ...]) -> None:
    """``log_std`` shapes the gaussian dataset only."""
    if "log_std" in fields and config.dataset != "gaussian":
        raise ConfigError(f"log_std: sets the gaussian dataset's spectrum; cannot be swept with dataset {config.dataset}")


def scan_workload(config: Config) -> Workload:
    """One run for :func:`dynamics.sweep.sweep`: one denoiser trained at a traced Adam
    ``learning_rate`` (and, for ``gaussian``, a traced spectrum width ``log_std``), sampled with
    Heun at every checkpoint and measured as in :func:`run`.

    The training data, the training-set eigenbasis and the sampler's starting noise come from
    the config's ``seed`` as in :func:`run` (common to every run of a sweep); the run key (seed
    ``s``: ``fold_in(key(seed), s)``) draws the init and the minibatches, so a sweep run is not
    one of :func:`run`'s seeds, whose keys are ``fold_in(fold_in(key(seed), 2), s)``. The network
    trains in float32 as in :func:`run`; the gaussian data are drawn in the sweep's float64
    before the cast (other draws than :func:`run`'s float32 ones). Outputs: ``lam[mode]``,
    ``loss``, ``alignment[step]``, ``variance[step, mode]``, ``emergence_step``,
    ``rising[mode]`` (the network's; the linear theory and the exponent fits stay with
    :func:`run` and :func:`summary`). A run diverges when its loss or variances are not finite.
    """
    shape = tuple(np.shape(training_set(config))[1:])
    model = model_for(config, shape)
    steps = np.asarray(record_steps(config))
    starts = starting_noise(config, shape)

    def run_one(key, values):
        point = with_values(config, values)
        data = jnp.asarray(training_set(point), jnp.float32)
        lam, basis = eigenbasis(data.astype(jnp.float64).reshape(data.shape[0], -1))
        learning_rate = jnp.asarray(point.learning_rate, jnp.float32)
        trajectory = study_train(point, model, data)(key, {"learning_rate": learning_rate})
        one_seed = jax.tree.map(lambda leaf: leaf[None], trajectory.params)
        variance, aligned = generated_measures(point, model, one_seed, basis.astype(jnp.float32), starts, adaptive=False)
        variance = variance[0].astype(jnp.float64)
        tau_star, rising = emergence(point, steps, variance, lam)
        return {
            "lam": lam,
            "loss": trajectory.loss,
            "alignment": aligned[0].astype(jnp.float64),
            "variance": variance,
            "emergence_step": tau_star,
            "rising": rising,
        }

    per_mode = ("mode",)
    return Workload(
        run=run_one,
        dims={
            "lam": per_mode,
            "loss": ("step",),
            "alignment": ("step",),
            "variance": ("step", "mode"),
            "emergence_step": per_mode,
            "rising": per_mode,
        },
        coords={"step": steps},
        divergence_outputs=("loss", "variance"),  # emergence_step is NaN for a mode that never emerges
    )


# ----------------------------------------------------------------------------- summary


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summary(dataset: xr.Dataset, config: Config) -> dict:
    """Fitted exponents (network and linear theory), alignment and loss at the end."""
    lam = dataset.lam.values
    fits = {}
    for source in ("theory", "network"):
        sub = dataset.sel(source=source)
        initial = sub.variance.isel(step=0).values
        fits[source] = measures.fit_power_law(
            np.broadcast_to(lam, initial.shape).ravel(),
            sub.emergence_step.values.ravel(),
            initial.ravel(),
            sub.rising.values.ravel(),
        )
    direction = max(("rising", "decaying"), key=lambda d: fits["network"][d]["n_modes"])
    result = {
        "dataset": config.dataset,
        "architecture": config.architecture,
        "dim": int(lam.size),
        "n_train": int(config.n_train),
        "direction": direction,
        "alpha": _finite(fits["network"][direction]["alpha"]),
        "r2": _finite(fits["network"][direction]["r2"]),
        "n_modes": fits["network"][direction]["n_modes"],
        "alpha_theory": _finite(fits["theory"][direction]["alpha"]),
        "alpha_rising": _finite(fits["network"]["rising"]["alpha"]),
        "alpha_decaying": _finite(fits["network"]["decaying"]["alpha"]),
        "slope_rising": _finite(-fits["network"]["rising"]["alpha"]),
        "slope_decaying": _finite(-fits["network"]["decaying"]["alpha"]),
        "alignment_final": float(dataset.alignment.isel(step=-1).mean()),
        "alignment_reference": float(dataset.attrs["alignment_reference"]),
        "final_loss": float(dataset.loss.isel(step=-1).mean()),
        "theory_q": float(dataset.attrs["theory_q"]),
        "fits": fits,
    }
    if "variance_adaptive" in dataset:
        heun = dataset.variance.sel(source="network").isel(step=-1)
        gap = np.abs(heun / dataset.variance_adaptive.isel(step=-1) - 1)
        result["max_rel_dev_heun_vs_adaptive"] = float(gap.max())
    return result


def summary_markdown(result: dict) -> str:
    show = lambda value, digits=3: "n/a" if value is None else f"{value:.{digits}g}"
    fits = result["fits"]
    lines = [
        f"# nonlinear-spectral-bias: {result['architecture']} on {result['dataset']} (d = {result['dim']})",
        "",
        "| source | direction | modes fitted | alpha | R^2 |",
        "|---|---|---|---|---|",
    ]
    for source in ("network", "theory"):
        for direction in ("rising", "decaying"):
            fit = fits[source][direction]
            lines.append(
                f"| {source} | {direction} | {fit['n_modes']} (gray {fit['n_gray']}, never {fit['n_nan']}) | "
                f"{show(_finite(fit['alpha']), 4)} | {show(_finite(fit['r2']), 3)} |"
            )
    lines += [
        "",
        f"Headline ({result['direction']} modes): alpha = {show(result['alpha'], 4)} (R^2 {show(result['r2'])}, "
        f"{result['n_modes']} modes); linear theory on the same spectrum: {show(result['alpha_theory'], 4)}.",
        f"Alignment with the training eigenbasis at the last checkpoint: {result['alignment_final']:.3f} "
        f"(training examples, same count: {result['alignment_reference']:.3f}). Final EDM loss {result['final_loss']:.4g}.",
    ]
    if "max_rel_dev_heun_vs_adaptive" in result:
        lines.append(f"Heun vs adaptive diffrax, last checkpoint: max rel. variance gap {result['max_rel_dev_heun_vs_adaptive']:.3g}.")
    lines += [
        "",
        "alpha: minus the OLS slope of log tau* on log lambda; tau* in optimizer steps (emergence at the "
        "geometric/harmonic mean of initial and target variance; gray zone 0.5x-2x excluded). Theory: "
        f"one-layer linear model at tau = learning rate x steps, init q = {result['theory_q']:.3f} matched to "
        "the network's initial generated variance.",
    ]
    return "\n".join(lines) + "\n"


def plot(dataset: xr.Dataset, config: Config) -> dict:
    """Figures: variance trajectories (network vs theory), tau* vs lambda with fits, alignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = dataset.lam.values
    steps = dataset.step.values
    colours = plt.cm.viridis(np.linspace(0, 1, lam.size))
    order = np.argsort(lam)
    title = f"{config.architecture} on {config.dataset} (d = {lam.size})"

    variance, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for axis, source in zip(axes, ("network", "theory")):
        curves = dataset.variance.sel(source=source).isel(seed=0).values
        for rank, mode in enumerate(order):
            axis.loglog(steps, curves[:, mode], color=colours[rank], lw=0.8)
        axis.set_title(f"{source}" + (" (tau = lr x steps)" if source == "theory" else ""))
        axis.set_xlabel("step")
    axes[0].set_ylabel("generated variance per mode")
    variance.suptitle(title)
    variance.tight_layout()

    law, axis = plt.subplots(figsize=(4.4, 3.6))
    fits = summary(dataset, config)["fits"]
    for source, marker in (("network", "o"), ("theory", "s")):
        tau_star = dataset.emergence_step.sel(source=source).values
        rising = dataset.rising.sel(source=source).values
        lam_all = np.broadcast_to(lam, tau_star.shape)
        for direction, mask, face in (("rising", rising, None), ("decaying", ~rising, "none")):
            axis.loglog(lam_all[mask], tau_star[mask], marker, ms=3.5, mfc=face, alpha=0.7,
                        label=f"{source} {direction} (alpha {fits[source][direction]['alpha']:.2f})")
    axis.set_xlabel("training-set variance lambda")
    axis.set_ylabel("emergence step")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=6)
    law.tight_layout()

    aligned, axis = plt.subplots(figsize=(4.4, 3.2))
    for seed in dataset.seed.values:
        axis.semilogx(steps, dataset.alignment.sel(seed=seed), label=f"seed {seed}")
    axis.axhline(dataset.attrs["alignment_reference"], color="k", ls="--", lw=0.8, label="training examples")
    axis.set_xlabel("step")
    axis.set_ylabel("diagonal mass fraction")
    axis.set_title(f"alignment with the data eigenbasis, {title}", fontsize=8)
    axis.legend(fontsize=7)
    aligned.tight_layout()
    return {"variance": variance, "emergence": law, "alignment": aligned}
