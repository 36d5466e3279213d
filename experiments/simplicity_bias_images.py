"""Distributional simplicity bias on images: data vs its Gaussian clones over training ([BMG]).

ONE run (``point``) trains one EDM denoiser (:mod:`diffdyn.dynamics.edm`: preconditioning, log-normal
training sigmas, EDM weighting, minibatches with replacement, Adam; docs/theory.md section 6) on
the training split of one image set, one seed. At every checkpoint (step 0 and log-spaced steps)
and every evaluation noise level it measures the per-element denoising loss
(:mod:`diffdyn.dynamics.denoising`) on three evaluation sets of equal size:

* ``data``: the held-out images;
* ``gaussian_clone``: samples of ``N(mu, Sigma)`` fitted on the training split;
* ``mean_clone``: samples of the mean-only clone ``N(mu, (Tr Sigma / d) I)`` (same mean and total
  power, no correlations; :mod:`diffdyn.models.distributions.clones`).

[BMG] (docs/theory.md section 9): the denoiser learns the mean first, the covariance next and
higher-order cumulants last, so the data loss first separates from the mean-only clone's, then
from the Gaussian clone's. Measured in-graph: the relative gap ``(L_data - L_clone) / L_clone``,
the separation step (first checkpoint from which ``|gap|`` exceeds both ``threshold`` and
``significance`` Monte Carlo errors of the gap, for good) and the final gap, per clone and noise
level. Beside them, the closed forms: the Bayes-optimal (Wiener) loss
of each clone, ``(1/d) sigma^2 Tr[Sigma (Sigma + sigma^2 I)^-1]`` (docs/theory.md section 2), a
floor for the clone losses; and at step 0 the untrained denoiser ``c_skip(sigma) x`` has the same
expected loss on all three sets (it sees only the mean and total power).

Data sets (:mod:`diffdyn.models.distributions.datasets`): ``digits``, ``faces``, ``patches`` (bundled),
``mnist``, ``fashion-mnist``, ``cifar10`` (from ``data_path``), and ``gaussian``, the null control
(a log-normal spectrum in a random basis: its own Gaussian clone, so data and Gaussian-clone
losses must not separate). Data, split, clone samples and noise draws are host data (numpy
float64, cast to the study's float32) drawn from the root seed: the same for every seed,
architecture and learning rate. Results and commands: docs/studies/simplicity-bias-images.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import denoising, edm
from diffdyn.dynamics.config import StudyConfig, setting
from diffdyn.dynamics.study import Outputs, Row, Summary
from diffdyn.dynamics.training import log_spaced_steps, make_train
from diffdyn.dynamics.validation import ConfigError
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.denoisers.mlp import MLPUNet
from diffdyn.models.denoisers.unet import UNet
from diffdyn.models.distributions import clones, datasets

NAME = "simplicity-bias-images"
REFERENCE = "Bardone, Merger & Goldt, arXiv 2603.12901 (ICML 2026), images vs their Gaussian clone; docs/theory.md sections 2, 6, 9"
CONVENTIONS = "EDM sigma; evaluation loss per element (mean over pixels), not EDM-weighted; time in Adam steps"
PRECISION = "float32"
ARCHITECTURES = ("mlp", "unet")
SOURCES = ("data", "gaussian_clone", "mean_clone")
CLONES = SOURCES[1:]


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the image simplicity-bias study (time in Adam steps, noise levels EDM sigmas)."""

    dataset: tuple[str, ...] = setting(
        ("digits",), "data sets, one program each (gaussian: the null control, its own clone)", grid=True, choices=datasets.DATASETS
    )
    architecture: tuple[str, ...] = setting(("mlp",), "denoisers: MLP-UNet on flat images, or conv U-Net", grid=True, choices=ARCHITECTURES)
    num_images: int = setting(2000, "examples: a fixed random subset of an image set (0: all); patches, gaussian: how many are drawn", low=0)
    held_out: float = setting(0.2, "fraction of the images held out for evaluation (the clones fit the rest)", low=0.0, high=1.0, low_open=True)
    dim: int = setting(64, "gaussian: dimension", low=2)
    log_std: float = setting(1.0, "gaussian: std of the log variances (log-normal spectrum, mean 1)", low=0.0)
    data_path: str = setting("", "directory of the mnist / fashion-mnist / cifar10 files")
    face_size: int = setting(16, "faces: side after resizing the 25x25 images (0: keep 25)", low=0)
    patch_size: int = setting(8, "patches: side of the square patches", low=2)
    width: int = setting(128, "mlp: hidden width", low=1)
    depth: int = setting(4, "mlp: residual blocks", low=1)
    input_norm: bool = setting(True, "mlp: LayerNorm on the input (it hides each image's mean brightness and contrast)")
    base_channels: int = setting(16, "unet: channels at full resolution", low=1)
    levels: int = setting(2, "unet: resolution levels (image sides divisible by 2**levels)", low=1)
    embedding: int = setting(64, "noise-embedding size (even)", low=2)
    learning_rate: float = setting(1e-3, "Adam learning rate", traced=True, low=0.0, low_open=True)
    batch_size: int = setting(256, "minibatch size (drawn with replacement)", low=1)
    num_steps: int = setting(3000, "Adam steps", low=1)
    num_records: int = setting(16, "log-spaced checkpoints in [1, num_steps] (step 0 is added)", low=2)
    sigmas: tuple[float, ...] = setting((0.01, 0.03, 0.1, 0.3, 1.0, 3.0), "evaluation noise levels (increasing)", low=0.0, low_open=True)
    threshold: float = setting(0.1, "relative gap |L_data - L_clone| / L_clone that marks separation", low=0.0, low_open=True)
    significance: float = setting(3.0, "Monte Carlo standard errors of the gap that |gap| must also exceed", low=0.0)


PRESETS = {
    "quick": Config(seeds=2),
    "tiny": Config(num_images=120, width=16, depth=2, embedding=8, batch_size=16, num_steps=8, num_records=3, sigmas=(0.1, 1.0)),
    "paper": Config(
        dataset=("digits", "faces", "patches"),
        architecture=("mlp", "unet"),
        num_images=10_000,
        width=256,
        depth=5,
        embedding=128,
        num_steps=20_000,
        num_records=24,
        sigmas=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        seeds=3,
    ),
}


# ----------------------------------------------------------------------------- data


class Evaluation(NamedTuple):
    """Host data of one image set: training images (flat), the evaluation sets (flat, one per
    source), the noise draws per evaluation noise level, the image shape and the two clones."""

    train: np.ndarray  # (n, d)
    sets: np.ndarray  # (source, m, d)
    noise: np.ndarray  # (sigma, m, d)
    shape: tuple[int, ...]
    clones: tuple  # (Gaussian clone, mean-only clone): GaussianData


@lru_cache(maxsize=8)
def evaluation(config: Config, precision: str) -> Evaluation:
    """The :class:`Evaluation` of the config's data set (eager, also while a sweep program is
    traced): the set drawn with the key ``seed`` (whose ``patches`` and ``gaussian`` draws follow
    jax's default float dtype ``precision``, part of the cache key), the split, clone samples and
    noise with the numpy generator seeded with ``seed``."""
    with jax.ensure_compile_time_eval():
        loaded = datasets.load(
            config.dataset,
            jax.random.key(config.seed),
            config.num_images,
            dim=config.dim,
            log_std=config.log_std,
            data_path=config.data_path,
            face_size=config.face_size,
            patch_size=config.patch_size,
        )
    rng = np.random.default_rng(config.seed)
    train, held = clones.split(loaded.reshape(loaded.shape[0], -1), config.held_out, rng)
    fitted = (clones.gaussian_clone(train), clones.mean_only_clone(train))
    sets = np.stack([held] + [clones.draw(rng, clone, held.shape[0]) for clone in fitted])
    noise = rng.standard_normal((len(config.sigmas), *held.shape))
    return Evaluation(train, sets, noise, loaded.shape[1:], fitted)


def evaluation_for(config: Config) -> Evaluation:
    """:func:`evaluation` cached by the fields that the data depend on (traced fields may be tracers)."""
    fields = ("dataset", "num_images", "held_out", "dim", "log_std", "data_path", "face_size", "patch_size", "sigmas", "seed")
    return evaluation(Config(**{name: getattr(config, name) for name in fields}), jax.dtypes.canonicalize_dtype(np.float64).name)


def network_for(config: Config, shape: tuple[int, ...]):
    if config.architecture == "mlp":
        return MLPUNet(int(np.prod(shape)), config.width, config.depth, config.embedding, input_norm=config.input_norm)
    return UNet(*shape, base_channels=config.base_channels, levels=config.levels, embedding=config.embedding)


def validate(config: Config) -> None:
    """Cross-field checks of one grid point (the image set is loaded once, to check paths and shapes)."""
    if config.dataset in datasets.PATH_DATASETS and not config.data_path:
        raise ConfigError(f"data_path: required for dataset {config.dataset} (a local directory)")
    if config.dataset in ("patches", "gaussian") and config.num_images < 8:
        raise ConfigError(f"num_images: dataset {config.dataset} needs at least 8 drawn examples; got {config.num_images}")
    if config.embedding % 2:
        raise ConfigError(f"embedding: must be even; got {config.embedding}")
    if not config.sigmas or any(low >= high for low, high in zip(config.sigmas, config.sigmas[1:])):
        raise ConfigError(f"sigmas: needs increasing values; got {config.sigmas}")
    if config.num_records > config.num_steps:
        raise ConfigError(f"num_records: at most num_steps ({config.num_steps}); got {config.num_records}")
    shape = evaluation_for(config).shape
    if config.architecture == "unet" and len(shape) != 3:
        raise ConfigError(f"architecture: unet needs image data; dataset {config.dataset} is flat")
    if config.architecture == "unet" and any(side % 2**config.levels for side in shape[:2]):
        raise ConfigError(f"levels: image sides {shape[0]}x{shape[1]} must be divisible by 2**levels = {2**config.levels}")


def record_steps(config: Config) -> tuple[int, ...]:
    return log_spaced_steps(config.num_steps, config.num_records, include_zero=True)


# ----------------------------------------------------------------------------- one run


def optimal_losses(config: Config, data: Evaluation):
    """Wiener loss of each clone per noise level: ``(clone, sigma)``, computed eagerly (a
    constant of the program, so it is the same number in every compiled program)."""
    with jax.ensure_compile_time_eval():
        return jnp.stack([clones.optimal_loss(clone, np.asarray(config.sigmas)) for clone in data.clones])


def point(key, config: Config) -> dict:
    """One denoiser on one image set, one seed (see the module docstring)."""
    data = evaluation_for(config)
    shape = data.shape if config.architecture == "unet" else (data.train.shape[1],)
    as_samples = lambda flat: jnp.asarray(flat).reshape(*flat.shape[:-1], *shape)
    network = network_for(config, shape)
    denoise = edm.precondition(network.network)
    train_set = as_samples(data.train)
    init = lambda init_key, hparams: network.init(init_key, train_set.dtype)
    train = make_train(
        init, edm.make_loss(denoise, train_set, config.batch_size), num_steps=config.num_steps, record_steps=record_steps(config), optimizer="adam"
    )
    trajectory = train(key, {"learning_rate": config.learning_rate})
    loss, error = denoising.loss_curves(denoise, trajectory.params, as_samples(data.sets), as_samples(data.noise), jnp.asarray(config.sigmas))
    gap, gap_error = denoising.relative_gap(loss[:1], error[:1], loss[1:], error[1:])  # (clone, step, sigma)
    apart = (jnp.abs(gap) > config.threshold) & (jnp.abs(gap) > config.significance * gap_error)
    separation = jax.vmap(jax.vmap(lambda flags: denoising.separation_step(trajectory.steps, flags), in_axes=1))(apart)
    return {
        "loss": loss,
        "loss_error": error,
        "gap": gap,
        "gap_error": gap_error,
        "separation_step": separation,
        "final_gap": gap[:, -1],
        "optimal_loss": optimal_losses(config, data),
        "train_loss": trajectory.loss,
    }


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={
            "loss": ("source", "step", "sigma"),
            "loss_error": ("source", "step", "sigma"),
            "gap": ("clone", "step", "sigma"),
            "gap_error": ("clone", "step", "sigma"),
            "separation_step": ("clone", "sigma"),
            "final_gap": ("clone", "sigma"),
            "optimal_loss": ("clone", "sigma"),
            "train_loss": ("step",),
        },
        coords={"source": np.array(SOURCES), "clone": np.array(CLONES), "step": np.array(record_steps(config)), "sigma": np.asarray(config.sigmas)},
        checked=("loss", "loss_error", "gap_error", "optimal_loss", "train_loss"),  # separation_step is NaN where no separation happens
        long_names={
            "loss": "per-element denoising loss at fixed noise draws (held-out data, Gaussian clone, mean-only clone)",
            "loss_error": "Monte Carlo standard error of loss",
            "gap": "relative gap (L_data - L_clone) / L_clone",
            "gap_error": "Monte Carlo standard error of gap (first order, the two means independent)",
            "separation_step": f"first checkpoint from which |gap| > {config.threshold:g} and > {config.significance:g} gap_error for good (NaN: none)",
            "final_gap": "gap at the last checkpoint",
            "optimal_loss": "Bayes-optimal (Wiener) per-element loss of the clone",
            "train_loss": "EDM minibatch training loss at the checkpoint",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def grid_points(dataset):
    """``(label, selection)`` for every (dataset, architecture) of the sweep."""
    return [
        (f"{name}/{network}", dataset.sel(dataset=name, architecture=network)) for name in dataset.dataset.values for network in dataset.architecture.values
    ]


def of_clones(one, name: str):
    """Output ``name`` (``loss`` or ``loss_error``) on the two clones, with a ``clone`` dim."""
    return one[name].sel(source=list(CLONES)).rename(source="clone")


def summarize(dataset, config: Config) -> Summary:
    """Per image set and architecture: the checks of the closed forms (in units of the Monte
    Carlo error), the order in which the clones separate from the data, and per clone and noise
    level the separation step (seed mean over the seeds that separate) and the final gap."""
    rows, table = [], {}
    for label, one in grid_points(dataset):
        start = one.isel(step=0)
        error = np.hypot(start.loss_error.sel(source="data"), of_clones(start, "loss_error"))
        initial = float((np.abs(start.loss.sel(source="data") - of_clones(start, "loss")) / error).max())
        rows.append(Row("max |L_data - L_clone| / MC error at step 0", initial, 0.0, label, "the untrained c_skip(sigma) x sees only the mean and total power"))
        excess = float(((of_clones(one, "loss") - one.optimal_loss) / of_clones(one, "loss_error")).min())
        rows.append(Row("min (L_clone - Wiener loss) / MC error", excess, ">= 0", label, "the Wiener filter is Bayes-optimal on the clone (within MC: > -3)"))
        mean_clone, gaussian_clone = (one.separation_step.sel(clone=clone) for clone in CLONES[::-1])
        first = (mean_clone <= gaussian_clone) | (np.isfinite(mean_clone) & np.isnan(gaussian_clone))
        separated = int((np.isfinite(mean_clone) | np.isfinite(gaussian_clone)).sum())
        fraction = float(first.sum()) / separated if separated else None
        rows.append(
            Row(
                "fraction where the mean-only clone separates no later",
                fraction,
                1.0,
                label,
                f"of {separated} (sigma, seed) with a separation; ties: the same checkpoint",
            )
        )
        final = one.final_gap.mean("seed")
        table[label] = {clone: {} for clone in CLONES}
        for clone, sigma in itertools.product(CLONES, one.sigma.values):
            steps = one.separation_step.sel(clone=clone, sigma=sigma)
            entry = {
                "separation_step": float(steps.mean()),
                "separated_seeds": int(np.isfinite(steps).sum()),
                "final_gap": float(final.sel(clone=clone, sigma=sigma)),
            }
            table[label][clone][f"{sigma:g}"] = entry
            note = f"final gap {entry['final_gap']:+.3f}; {entry['separated_seeds']}/{one.seed.size} seeds separated"
            rows.append(Row(f"separation step vs {clone}", entry["separation_step"], None, f"{label}, sigma={sigma:g}", note))
        for clone in CLONES:
            size = np.abs(final.sel(clone=clone).values)
            largest = float(one.sigma[np.nanargmax(size)]) if np.isfinite(size).any() else None
            rows.append(Row(f"sigma of the largest |final gap| vs {clone}", largest, float(one.sigma.min()), label, "[BMG]: largest at low noise"))
    notes = (
        (
            f"gap = (L_data - L_clone) / L_clone at fixed noise draws; separation step = first checkpoint from which |gap| > {config.threshold:g} "
            f"and > {config.significance:g} Monte Carlo errors at every later one (seed mean over the seeds that separate); "
            "final gap: seed mean at the last checkpoint."
        ),
        "gaussian_clone = N(mu, Sigma), mean_clone = N(mu, (Tr Sigma / d) I), both fitted on the training split; data = held-out images.",
    )
    return Summary(rows, {"table": table}, notes)


def figures(dataset, config: Config) -> dict:
    """Loss curves per noise level (first grid point, seed 0) and the gap vs the Gaussian clone
    per grid point (seed mean; step axis symlog, step 0 included)."""
    points = grid_points(dataset)
    first = points[0][1].isel(seed=0)
    title = f"{points[0][0]}, seed 0: loss (solid data, dashed Gaussian clone, dotted mean clone, grey Wiener)"
    loss_figure, loss_axes = plots.panels(first.sigma.size, title, rows=1 + (first.sigma.size > 3))
    for axis, sigma in zip(loss_axes, first.sigma.values):
        at = first.sel(sigma=sigma)
        for index, (source, style) in enumerate(zip(SOURCES, ("-", "--", ":"))):
            axis.plot(at.step, at.loss.sel(source=source), style, color=f"C{index}")
        axis.axhline(float(at.optimal_loss.sel(clone="gaussian_clone")), color="grey", lw=0.8)
        axis.set(xscale="symlog", xlim=(0, None), yscale="log", title=f"sigma = {sigma:g}", xlabel="Adam step")
    gap_figure, gap_axes = plots.panels(len(points), "relative gap (L_data - L_Gaussian clone) / L_clone, one line per sigma")
    for axis, (label, one) in zip(gap_axes, points):
        gap = one.gap.sel(clone="gaussian_clone").mean("seed")
        for colour, sigma in zip(plots.mode_colours(one.sigma.size), one.sigma.values):
            axis.plot(one.step, gap.sel(sigma=sigma), color=colour, label=f"{sigma:g}")
        axis.axhspan(-config.threshold, config.threshold, color="grey", alpha=0.2)
        axis.set(xscale="symlog", xlim=(0, None), title=label, xlabel="Adam step")
        axis.legend(fontsize=6, title="sigma")
    return {"losses": loss_figure, "gap": gap_figure}


run = bind(__name__)
