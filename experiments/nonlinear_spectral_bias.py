"""Spectral bias of nonlinear denoisers (MLP-UNet, convolutional U-Net) trained with EDM ([WP] sec. 6).

ONE run (``point``) trains one network (the grid: ``architecture``) at one Adam learning rate
(traced: ``diffdyn scan --grid learning_rate=...`` is one program) from one seed with the EDM
recipe (:mod:`diffdyn.dynamics.edm`: preconditioning, log-normal training sigmas, EDM weighting,
minibatches drawn with replacement; :func:`diffdyn.dynamics.training.make_train` records the parameters
at log-spaced steps inside the compiled loop). At every checkpoint it generates samples with the
deterministic Heun sampler on the Karras grid (and, with ``adaptive``, with the adaptive diffrax
PF-ODE within ``max_steps``; its status is the run's) and measures (docs/theory.md section 6):

* the generated variance ``lambda~_k = u_k^T Cov(samples) u_k`` along every eigenvector ``u_k`` of
  the TRAINING-SET covariance (eigenvalue ``lambda_k``);
* the alignment: the share of the generated covariance's squared Frobenius norm on the diagonal
  in that basis (1: it shares the data eigenbasis); the same score of ``num_samples`` training
  examples is the sampling-noise reference;
* emergence steps ``tau*_k`` (optimizer STEPS) of the network and of the one-layer linear theory
  beside it (docs/theory.md section 2) on the same spectrum at ``tau = learning_rate x steps``,
  with the aligned init ``q`` whose ``tau = 0`` variance ``sigma_max^(2q) sigma_min^(2(1-q))`` is
  the geometric mean of the network's first record. The network trains with Adam on the
  element-averaged EDM-weighted loss, so only the SHAPE of the law (alpha, fitted per
  architecture by ``summarize``) is comparable, not its time scale.

The training set, its eigenbasis and the sampler's starting noise come from the root seed
(``config.seed``) and are shared by every run; the run key draws the init and the minibatches.
Datasets: ``gaussian`` (log-normal spectrum ``exp(N(0, log_std^2))`` normalised to mean 1 in a
Haar-random basis, ``n_train`` samples of dimension ``dim``), ``digits``, ``faces``, ``patches``
(bundled), ``mnist``, ``fashion-mnist``, ``cifar10`` (from ``data_path``); all in [-1, 1]
(:mod:`diffdyn.models.distributions.datasets`). Architectures: ``mlp`` (flat data) and ``unet``
(image-shaped data; ``gaussian`` with ``unet`` is reshaped to ``sqrt(dim) x sqrt(dim)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from diffdyn.dynamics import edm, measures, status
from diffdyn.dynamics.config import StudyConfig, setting
from diffdyn.dynamics.study import STATUS, Outputs, Row, Summary
from diffdyn.dynamics.theory import linear
from diffdyn.dynamics.training import log_spaced_steps, make_train
from diffdyn.dynamics.validation import ConfigError, require_increasing
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models.denoisers.mlp import MLPUNet
from diffdyn.models.denoisers.unet import UNet
from diffdyn.models.distributions import datasets

NAME = "nonlinear-spectral-bias"
REFERENCE = "Wang & Pehlevan, arXiv 2503.03206 (NeurIPS 2025), sec. 6, app. I; docs/theory.md sections 2 and 6"
CONVENTIONS = (
    "EDM sigma time; network: Adam on the element-averaged EDM-weighted loss, time in optimizer steps; theory: one-layer "
    "linear model, gradient flow on the summed un-halved loss at tau = learning_rate x steps, aligned init q matched to the "
    "network's initial generated variance"
)
PRECISION = "float32"
SOURCES = ("theory", "network")
VARIANCE_FLOOR = 1e-12  # training-set eigenvalues are clipped here (rank-deficient image sets)


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the nonlinear spectral-bias study (time in optimizer steps; EDM sigmas)."""

    architecture: tuple[str, ...] = setting(
        ("mlp",), "denoiser networks, one program each: MLP-UNet (flat data), convolutional U-Net (image-shaped)", grid=True, choices=("mlp", "unet")
    )
    learning_rate: float = setting(1e-3, "Adam learning rate (the theory's tau = learning_rate x steps)", traced=True, low=0.0, low_open=True)
    dataset: str = setting("gaussian", "training data", choices=datasets.DATASETS)
    dim: int = setting(32, "gaussian: data dimension (a square side^2 for unet)", low=2)
    n_train: int = setting(2000, "training examples (gaussian, patches: drawn; image sets: a fixed subset, 0 = all)", low=0)
    log_std: float = setting(1.0, "gaussian: std of the log variances", low=0.0)
    data_path: str = setting("", "directory of the mnist / fashion-mnist / cifar10 files")
    face_size: int = setting(16, "faces: resize 25x25 to face_size^2 (0: keep 25x25)", low=0)
    patch_size: int = setting(8, "patches: side of the square patches", low=2)
    width: int = setting(128, "mlp: hidden width", low=1)
    depth: int = setting(4, "mlp: residual blocks", low=1)
    embedding: int = setting(64, "noise-embedding size (even)", low=2)
    input_norm: bool = setting(True, "mlp: LayerNorm on the input (docs/theory.md section 6)")
    zero_output: bool = setting(True, "mlp: output layer starts at zero (EDM); false: LeCun-normal like the others")
    base_channels: int = setting(16, "unet: channels at full resolution", low=1)
    levels: int = setting(2, "unet: resolution levels (image sides divisible by 2**levels)", low=1)
    batch_size: int = setting(256, "minibatch size (drawn with replacement)", low=1)
    num_steps: int = setting(3000, "Adam steps", low=4)
    num_records: int = setting(16, "log-spaced checkpoints in [1, num_steps]", low=4)
    num_samples: int = setting(512, "generated samples per checkpoint (the same starting noise for every run)", low=2)
    heun_steps: int = setting(20, "Karras grid size of the Heun sampler (2 heun_steps - 1 denoiser calls)", low=2)
    adaptive: bool = setting(False, "also sample with the adaptive diffrax PF-ODE")
    rtol: float = setting(1e-4, "tolerance of the adaptive PF-ODE (rtol = atol)", low=0.0, high=0.1, low_open=True)
    max_steps: int = setting(4096, "step budget of each adaptive PF-ODE solve", low=1)
    sigma_min: float = setting(0.002, "smallest noise level of the samplers", low=0.0, low_open=True)
    sigma_max: float = setting(80.0, "largest noise level of the samplers", low=0.0, low_open=True)
    criterion: str = setting("geometric", "emergence threshold: geometric or harmonic mean of start and target", choices=("geometric", "harmonic"))


PRESETS = {
    "quick": Config(seeds=2),
    # tiny: ONE run, so that 1 and 8 devices batch it alike (float32 round-off differs, ~1e-7, between batch sizes)
    "tiny": Config(dim=4, n_train=64, width=8, depth=1, embedding=4, batch_size=16, num_steps=8, num_records=4, num_samples=32, heun_steps=4),
    "paper": Config(  # [WP] sec. 6 Gaussian settings (docs/theory.md section 6)
        learning_rate=1e-4,
        dim=256,
        n_train=10_000,
        width=256,
        depth=5,
        embedding=256,
        batch_size=1024,
        num_steps=5000,
        num_records=24,
        num_samples=10_000,
        zero_output=False,  # a random initial denoiser: d = 128 alpha 1.17 with it, 1.6-1.7 with EDM's zero output layer
    ),
}


# ----------------------------------------------------------------------------- data


def training_data(config: Config) -> datasets.TrainingSet:
    """The training set and its eigenbasis, on the host: drawn from the root seed, shared by
    every run (:func:`diffdyn.models.distributions.datasets.training_set`)."""
    options = dict(dim=config.dim, log_std=config.log_std, data_path=config.data_path, face_size=config.face_size, patch_size=config.patch_size)
    return datasets.training_set(config.dataset, config.seed, config.n_train, image_shaped=config.architecture == "unet", floor=VARIANCE_FLOOR, **options)


def training_set(config: Config) -> np.ndarray:
    """The training examples in the architecture's shape (float32)."""
    return training_data(config).examples


def model_for(config: Config, shape: tuple[int, ...]):
    if config.architecture == "mlp":
        return MLPUNet(shape[0], config.width, config.depth, config.embedding, input_norm=config.input_norm, zero_output=config.zero_output)
    height, width, channels = shape
    return UNet(height, width, channels, config.base_channels, config.levels, config.embedding)


def validate(config: Config) -> None:
    """Cross-field checks of one grid point; loads the data once to check paths and shapes."""
    if config.dataset in ("gaussian", "patches") and config.n_train < 2:
        raise ConfigError(f"n_train: must be >= 2 for dataset {config.dataset}; got {config.n_train}")
    if config.embedding % 2:
        raise ConfigError(f"embedding: must be even; got {config.embedding}")
    require_increasing("sigma_min", config.sigma_min, "sigma_max", config.sigma_max)
    if config.dataset in datasets.PATH_DATASETS and not config.data_path:
        raise ConfigError(f"data_path: required for dataset {config.dataset} (a local directory)")
    if config.dataset == "gaussian" and config.architecture == "unet" and math.isqrt(config.dim) ** 2 != config.dim:
        raise ConfigError(f"dim: unet on gaussian data needs a square dim (side^2); got {config.dim}")
    shape = training_set(config).shape[1:]
    if config.architecture == "unet" and any(side % 2**config.levels for side in shape[:2]):
        raise ConfigError(f"levels: image sides {shape[0]}x{shape[1]} must be divisible by 2**levels = {2**config.levels}")


def validate_sweep(config: Config, swept: tuple[str, ...]) -> None:
    if "log_std" in swept and config.dataset != "gaussian":
        raise ConfigError(f"log_std: sets the gaussian dataset's spectrum; cannot be swept with dataset {config.dataset}")


# ----------------------------------------------------------------------------- one run


def record_steps(config: Config) -> tuple[int, ...]:
    """Log-spaced checkpoints in ``[1, num_steps]`` (step 0 is left out: log time axis)."""
    return log_spaced_steps(config.num_steps, config.num_records, include_zero=False)


def alignment(samples: jax.Array, basis: jax.Array) -> jax.Array:
    """Share of the squared Frobenius norm of the samples' covariance, written in ``basis``, on
    its diagonal (1 when it is diagonal in that basis)."""
    centred = samples - jnp.mean(samples, axis=0, keepdims=True)
    projected = centred @ basis
    cov = projected.T @ projected / (samples.shape[0] - 1)
    return jnp.sum(jnp.square(jnp.diagonal(cov))) / jnp.sum(jnp.square(cov))


def generated_measures(config: Config, denoise, params, starts: jax.Array, basis: jax.Array, *, adaptive: bool):
    """Per-mode variance ``[record, mode]``, alignment ``[record]`` and the worst solver status
    of the samples every checkpoint (``params`` leaves ``(record, ...)``) generates from
    ``starts`` (:func:`diffdyn.dynamics.edm.generate`: Heun, or the adaptive PF-ODE)."""
    ends = dict(sigma_min=config.sigma_min, sigma_max=config.sigma_max, rtol=config.rtol, max_steps=config.max_steps)
    generate = partial(edm.generate, denoise, heun_steps=None if adaptive else config.heun_steps, **ends)

    def one_checkpoint(checkpoint):
        samples, statuses = jax.vmap(partial(generate, checkpoint))(starts)
        samples = samples.reshape(starts.shape[0], -1)
        return measures.sample_mode_variances(samples, basis), alignment(samples, basis), status.worst(statuses)

    variance, aligned, statuses = jax.vmap(one_checkpoint)(params)
    return variance, aligned, status.worst(statuses)


def theory_q(initial_variance: jax.Array, config: Config) -> jax.Array:
    """Aligned init scale ``q`` whose ``tau = 0`` generated variance
    ``sigma_max^(2q) sigma_min^(2(1-q))`` is the geometric mean of ``initial_variance``."""
    log_min, log_max = 2 * math.log(config.sigma_min), 2 * math.log(config.sigma_max)
    return jnp.clip((jnp.mean(jnp.log(initial_variance)) - log_min) / (log_max - log_min), 0.0, 1.0)


def linear_theory(config: Config, lam: jax.Array, q: jax.Array, step: jax.Array) -> jax.Array:
    """Generated variance per mode of the one-layer linear denoiser (docs/theory.md section 2) at
    ``tau = learning_rate x step`` from the aligned init ``q``: ``sigma_max^2 exp(2 int (psi - 1)
    d ln sigma)`` of the closed-form weights ``psi(sigma, tau)`` by Gauss-Legendre quadrature
    (equal to the Ein closed form ``linear.generated_variance`` to 4e-14 in float64 and 1e-5 in
    float32; that one's float64 series constant breaks jax 0.10.2 programs that mix float32 and
    float64 in one process)."""
    weights = lambda sigma: linear.weights(lam, q, config.learning_rate * step, sigma)
    return linear.generated_variance_quadrature(weights, sigma_min=config.sigma_min, sigma_max=config.sigma_max)


def point(key, config: Config) -> dict:
    """One network at one learning rate and one seed (see the module docstring)."""
    data = training_data(config)
    with jax.ensure_compile_time_eval():  # shared by every run: host constants, not computations for XLA to fold
        examples, basis, lam = jnp.asarray(data.examples), jnp.asarray(data.basis, jnp.float32), jnp.asarray(data.lam, jnp.float32)
        noise_key = jax.random.fold_in(jax.random.key(config.seed), 3)
        starts = config.sigma_max * jax.random.normal(noise_key, (config.num_samples, *data.examples.shape[1:]), jnp.float32)
        alignment_reference = alignment(examples[: config.num_samples].reshape(-1, lam.size), basis)
    model = model_for(config, data.examples.shape[1:])
    denoise = edm.precondition(model.network)
    train = make_train(
        lambda init_key, hparams: model.init(init_key, jnp.float32),
        edm.make_loss(denoise, examples, config.batch_size),
        num_steps=config.num_steps,
        record_steps=record_steps(config),
        optimizer="adam",
    )
    trajectory = train(key, {"learning_rate": config.learning_rate})
    variance, aligned, _ = generated_measures(config, denoise, trajectory.params, starts, basis, adaptive=False)  # Heun: always ok
    steps = jnp.asarray(record_steps(config), jnp.float32)
    q = theory_q(variance[0], config)
    theory = jax.vmap(lambda step: linear_theory(config, lam, q, step))(steps)
    variances = jnp.stack([theory, variance])
    emergence_step, rising = measures.emergence_times(steps, variances, lam, criterion=config.criterion)
    outputs = {
        "variance": variances,
        "emergence_step": emergence_step,
        "rising": rising,
        "alignment": aligned,
        "loss": trajectory.loss,
        "lam": lam,
        "theory_q": q,
        "alignment_reference": alignment_reference,
    }
    if config.adaptive:
        outputs["variance_adaptive"], _, outputs[STATUS] = generated_measures(config, denoise, trajectory.params, starts, basis, adaptive=True)
    return outputs


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={
            "variance": ("source", "step", "mode"),
            "emergence_step": ("source", "mode"),
            "rising": ("source", "mode"),
            "alignment": ("step",),
            "loss": ("step",),
            "lam": ("mode",),
            "variance_adaptive": ("step", "mode"),
        },
        coords={"source": np.array(SOURCES), "step": np.asarray(record_steps(config))},
        checked=("variance", "alignment", "loss", "variance_adaptive"),  # a mode that never emerges has a NaN step
        long_names={
            "variance": f"generated variance per training eigenmode (network: Heun, {config.heun_steps} steps, {config.num_samples} samples)",
            "variance_adaptive": "generated variance per training eigenmode (adaptive diffrax PF-ODE, same starting noise)",
            "emergence_step": "first step at which the generated variance crosses the threshold",
            "alignment": "share of the generated covariance's squared Frobenius norm on the diagonal (training eigenbasis)",
            "alignment_reference": "the same share for num_samples training examples",
            "loss": "EDM minibatch loss at the checkpoint",
            "lam": "training-set covariance eigenvalue",
            "theory_q": "aligned init scale of the linear theory, matched to the network's initial variance",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def summarize(dataset, config: Config) -> Summary:
    """Per architecture (seeds pooled): the fitted alpha of the network and of the linear theory
    (rising and decaying modes), the alignment at the last checkpoint, the final loss, and with
    ``adaptive`` the Heun vs diffrax gap."""
    rows, per_architecture = [], {}
    for architecture in dataset.architecture.values:
        one = dataset.sel(architecture=architecture)
        where = f"architecture={architecture}"
        fits = measures.fit_power_laws(one.lam, one.emergence_step, one.variance.isel(step=0), one.rising)
        direction = max(("rising", "decaying"), key=lambda d: fits["network"][d]["n_modes"])
        for way in ("rising", "decaying"):
            fit = fits["network"][way]
            rows.append(
                Row(
                    f"alpha (tau* ~ lambda^-alpha), {way} modes",
                    fit["alpha"],
                    fits["theory"][way]["alpha"],
                    where,
                    f"{fit['n_modes']} modes x seeds, R^2 {fit['r2']:.3g}; prediction: linear theory",
                )
            )
        result = {
            "direction": direction,
            "alpha": fits["network"][direction]["alpha"],
            "r2": fits["network"][direction]["r2"],
            "n_modes": fits["network"][direction]["n_modes"],
            "alpha_theory": fits["theory"][direction]["alpha"],
            "alignment_final": float(one.alignment.isel(step=-1).mean()),
            "alignment_reference": float(one.alignment_reference.mean()),
            "final_loss": float(one.loss.isel(step=-1).mean()),
            "theory_q": float(one.theory_q.mean()),
            "fits": fits,
        }
        rows.append(
            Row(
                "alignment with the training eigenbasis (last checkpoint)",
                result["alignment_final"],
                result["alignment_reference"],
                where,
                "prediction: training examples' own score",
            )
        )
        rows.append(Row("final EDM loss", result["final_loss"], None, where))
        if "variance_adaptive" in one:
            gap = np.abs(one.variance.sel(source="network") / one.variance_adaptive - 1)
            result["max_rel_dev_heun_vs_adaptive"] = float(gap.max())
            rows.append(Row("max rel. gap Heun / adaptive variance", result["max_rel_dev_heun_vs_adaptive"], 0.0, where, f"{config.heun_steps} Karras steps"))
        per_architecture[str(architecture)] = result
    notes = (
        (
            "alpha: minus the OLS slope of log tau* on log lambda; tau* in optimizer steps where the generated variance crosses "
            "the geometric (or harmonic) mean of its first record and its target; gray zone 0.5x-2x excluded."
        ),
        "theory: one-layer linear model at tau = learning rate x steps, aligned init q matched to the network's initial variance (only alpha compares).",
    )
    return Summary(rows, {"dataset": config.dataset, "dim": int(dataset.sizes["mode"]), "architectures": per_architecture}, notes)


def figures(dataset, config: Config) -> dict:
    """Per architecture: variance trajectories of seed 0 (lines: theory, dots: network),
    emergence steps vs lambda (every seed), alignment per seed."""
    names = [str(name) for name in dataset.architecture.values]
    title = f"{config.dataset} (d = {dataset.sizes['mode']}), learning rate {config.learning_rate:g}"
    variance_figure, variance_axes = plots.panels(len(names), f"generated variance per mode, {title} (lines: theory, dots: network)", width=5.0, height=3.8)
    law_figure, law_axes = plots.panels(len(names), f"emergence step vs data variance, {title}", width=4.6, height=3.8)
    aligned_figure, aligned_axes = plots.panels(len(names), f"alignment with the data eigenbasis, {title}", width=4.6, height=3.4)
    for index, name in enumerate(names):
        one = dataset.sel(architecture=name)
        first = one.variance.isel(seed=0)
        plots.theory_and_simulation(variance_axes[index], one.step, first.sel(source="theory"), first.sel(source="network"), log_y=True)
        variance_axes[index].set(xlabel="step", ylabel="generated variance")
        plots.emergence_law(law_axes[index], one.lam.values, {source: one.emergence_step.sel(source=source).values for source in ("network", "theory")})
        law_axes[index].set_ylabel("emergence step")
        for seed in one.seed.values:
            aligned_axes[index].semilogx(one.step, one.alignment.sel(seed=seed), label=f"seed {seed}")
        aligned_axes[index].axhline(float(one.alignment_reference.mean()), color="k", ls="--", lw=0.8, label="training examples")
        aligned_axes[index].set(xlabel="step", ylabel="diagonal share of the covariance")
        aligned_axes[index].legend(fontsize=7)
        for axes in (variance_axes, law_axes, aligned_axes):
            axes[index].set_title(name)
    return {"variance": variance_figure, "emergence": law_figure, "alignment": aligned_figure}


run = bind(__name__)
