"""Which class is learned, and memorized, first: random-features score models on two classes.

**Reconstruction** (docs/theory.md section 8): [N] (Nicoletti, Ma, Ventura, Saglietti, Sarao
Mannelli, arXiv 2605.06367) studies classes and imbalance on top of the [BUBM] random-features
score; its exact settings could not be read, so this study rebuilds the model of sections 7-8
with every parameter configurable (:mod:`diffdyn.models.classes`): class 0 ``N(mu~_0 sqrt(d) e_1, I)``,
class 1 ``N(mu~_1 sqrt(d) e_2, r I)``, ``n_0 = problem.base_count`` training points of class 0
and ``n_1 = round(ratio n_0)`` of class 1, the score ``s_A(x) = (A / sqrt(p)) g(W x / sqrt(d))``
at one OU time ``t`` trained from ``A = 0`` by the exact gradient flow of the (class-weighted)
DSM loss.

ONE run (``point``) is one grid point (``r = variance_ratio``, ``mu~_1 = centroid_norm``,
``ratio = imbalance_ratio``) and one seed: per-class train/test loss curves, generalization and
memorization times, which class is first, and with ``generator.samples > 0`` the fraction of
generated samples that copy a training point, per class ([BUBM] sec. 2). ``summarize`` takes
seed medians: the class learned / memorized first at balance beside the prediction of section 8
(the higher-variance class first), the imbalance ratio at which that order reverses, and the
phase maps of ``log10 tau_1 / tau_0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from diffdyn.dynamics.config import LogGrid, StudyConfig, setting
from diffdyn.dynamics.study import Outputs, Row, Summary
from diffdyn.dynamics.validation import ConfigError
from diffdyn.experiments import figures as plots
from diffdyn.experiments.runner import bind
from diffdyn.models import classes
from diffdyn.models.classes import CLASSES, ClassProblem
from diffdyn.models.denoisers.random_features import Generator

NAME = "class-imbalance"
REFERENCE = "Nicoletti et al., arXiv 2605.06367 (reconstruction on Bonnaire et al., arXiv 2505.17638); docs/theory.md sections 7-8"
CONVENTIONS = "OU time t; DSM loss per dimension, L(A = 0) = 1; tau = k eta / d^2"
PRECISION = "float64"
MEASURES = {"generalization_time": "learned", "memorization_time": "memorized"}


@dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the class-imbalance study (OU time ``t``; ``tau = k eta / d^2``)."""

    variance_ratio: tuple[float, ...] = setting(
        (1.0, 4.0), "class variance ratio sigma_1^2 / sigma_0^2 (sigma_0 = 1)", grid=True, traced=True, low=0.0, low_open=True
    )
    centroid_norm: tuple[float, ...] = setting((1.0, 2.0), "centroid norm mu~_1 of class 1 (|mu_1| = mu~_1 sqrt(d))", grid=True, traced=True, low=0.0)
    imbalance_ratio: tuple[float, ...] = setting((0.125, 1.0, 8.0), "training counts n_1 / n_0 (one program each)", grid=True, low=0.0, low_open=True)
    centroid_norm_0: float = setting(1.0, "centroid norm mu~_0 of class 0", traced=True, low=0.0)
    time: float = setting(0.5, "OU time t of the score model", traced=True, low=0.0, low_open=True)
    class_weight: float = setting(1.0, "loss weight w_1 of class 1 (class 0 has w_0 = 1)", traced=True, low=0.0, low_open=True)
    problem: ClassProblem = setting(ClassProblem(), "the random-features problem")
    generator: Generator = setting(Generator(), "generated samples")


PRESETS = {
    "quick": Config(seeds=2),
    "tiny": Config(
        variance_ratio=(1.0, 4.0),
        centroid_norm=(1.0,),
        imbalance_ratio=(1.0,),
        seeds=2,
        problem=ClassProblem(dim=8, num_features=32, base_count=8, num_noise=4, num_test=32, test_noise=2),
        generator=Generator(samples=8, taus=(1e2, 1e8), steps=4),
    ),
    "paper": Config(
        variance_ratio=(0.25, 0.5, 1.0, 2.0, 4.0),
        centroid_norm=(0.0, 0.5, 1.0, 2.0),
        imbalance_ratio=(1 / 16, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
        seeds=3,
        problem=ClassProblem(dim=100, num_features=6400, base_count=400, num_noise=32, num_test=2000, tau=LogGrid(1e-3, 1e7, 121)),
    ),
}


def validate(config: Config) -> None:
    """Class 1 needs at least one training point."""
    if classes.class_counts(config.problem.base_count, config.imbalance_ratio)[1] < 1:
        raise ConfigError(f"imbalance_ratio: {config.imbalance_ratio} x problem.base_count {config.problem.base_count} leaves class 1 without training points")


def point(key: PRNGKeyArray, config: Config) -> dict:
    """One grid point and one seed (see the module docstring)."""
    problem = config.problem
    counts = classes.class_counts(problem.base_count, config.imbalance_ratio)
    weights = jnp.stack([jnp.ones_like(config.class_weight), config.class_weight])
    mixture = classes.orthogonal_classes(problem.dim, config.variance_ratio, config.centroid_norm_0, config.centroid_norm)
    W = classes.features(problem, key)
    points = classes.training_points(key, mixture, counts)
    train = classes.training_statistics(problem, W, key, points, config.time)
    test = classes.fresh_statistics(problem, W, key, mixture, config.time)
    train_loss, test_loss = classes.class_curves(problem, train, test, counts, weights, config.time)
    generalization, memorization = classes.class_times(problem.tau.values(), train_loss, test_loss)
    outputs = {
        "train_loss": train_loss,
        "test_loss": test_loss,
        "generalization_time": generalization,
        "memorization_time": memorization,
        "learned_first": (generalization[1] < generalization[0]).astype(jnp.int32),
        "memorized_first": (memorization[1] < memorization[0]).astype(jnp.int32),
        "count": jnp.asarray(counts, jnp.int32),
    }
    if config.generator.samples:
        per_class, total = classes.generated_memorization(problem, config.generator, key, points, weights)
        outputs |= {"memorization_fraction_generated": per_class, "memorization_fraction_generated_total": total}
    return outputs


def outputs(config: Config) -> Outputs:
    return Outputs(
        dims={
            "train_loss": ("class_", "tau"),
            "test_loss": ("class_", "tau"),
            "generalization_time": ("class_",),
            "memorization_time": ("class_",),
            "count": ("class_",),
            "memorization_fraction_generated": ("class_", "tau_sample"),
            "memorization_fraction_generated_total": ("tau_sample",),
        },
        coords={"class_": np.array(CLASSES), "tau": config.problem.tau.values(), "tau_sample": np.asarray(config.generator.taus, float)},
        checked=("train_loss", "test_loss"),  # a time is NaN when its curve never gets there
        long_names={
            "generalization_time": "half of the per-class test-loss drop",
            "memorization_time": "half-rise of the per-class train/test gap",
            "learned_first": "1 if class 1 generalizes first, else 0",
            "memorized_first": "1 if class 1 is memorized first, else 0",
            "count": "training points per class",
            "memorization_fraction_generated": "fraction of generated samples nearest to a class-c point that copy it (ratio < 1/3)",
            "memorization_fraction_generated_total": "fraction of generated samples that copy a training point",
        },
    )


# ----------------------------------------------------------------------------- summary and figures


def time_ratio(dataset, measure: str):
    """Seed-median ``tau_1 / tau_0`` of ``measure`` over the grid."""
    median = dataset[measure].median("seed")
    return median.sel(class_="class_1") / median.sel(class_="class_0")


def first_class(ratio: float) -> str:
    return "n/a" if not np.isfinite(ratio) else CLASSES[int(ratio < 1.0)]


def predicted_first(variance_ratio: float) -> str | None:
    """Docs/theory.md section 8: the higher-variance class is learned and memorized first."""
    return None if variance_ratio == 1.0 else CLASSES[int(variance_ratio > 1.0)]


def reversal_ratio(order: np.ndarray, ratios: np.ndarray) -> float | None:
    """Over increasing ``ratios``: the geometric mean of the two neighbouring ratios at the first
    change of ``order`` (which class comes first), or ``None`` if it never changes."""
    changes = np.nonzero(np.diff(order) != 0)[0]
    if changes.size == 0:
        return None
    i = int(changes[0])
    return float(np.sqrt(ratios[i] * ratios[i + 1]))


def summarize(dataset, config: Config) -> Summary:
    """Per (variance ratio, centroid norm): the class learned / memorized first at balance (the
    swept n_1/n_0 nearest 1) vs section 8's prediction, and where the order reverses."""
    ratios = dataset.imbalance_ratio.values
    balance = float(ratios[np.argmin(np.abs(np.log(ratios)))])
    rows, points, maps = [], [], {}
    for measure, verb in MEASURES.items():
        log_ratio = np.log10(time_ratio(dataset, measure).transpose("variance_ratio", "centroid_norm", "imbalance_ratio"))
        maps[measure] = log_ratio.values
        for v in dataset.variance_ratio.values:
            for m in dataset.centroid_norm.values:
                curve = 10.0 ** log_ratio.sel(variance_ratio=v, centroid_norm=m).values
                at_balance = float(curve[list(ratios).index(balance)])
                reversal = reversal_ratio((curve < 1.0).astype(int), ratios)
                where = f"sigma_1^2/sigma_0^2={v:g}, mu~_1={m:g}, n_1/n_0={balance:g}"
                note = f"tau_1/tau_0 = {at_balance:.3g}; order reverses at n_1/n_0 = {'none in grid' if reversal is None else f'{reversal:.3g}'}"
                rows.append(Row(f"class {verb} first", first_class(at_balance), predicted_first(float(v)), where, note))
                points.append(
                    {
                        "measure": measure,
                        "variance_ratio": float(v),
                        "centroid_norm": float(m),
                        "first_at_balance": first_class(at_balance),
                        "time_ratio_1_over_0": curve.tolist(),
                        "reversal_ratio": reversal,
                    }
                )
    higher = lambda measure: all(p["first_at_balance"] == "class_1" for p in points if p["measure"] == measure and p["variance_ratio"] > 1.0)
    values = {
        "balance": balance,
        "points": points,
        "phase_map": {"log10_time_ratio": maps, "dims": ["variance_ratio", "centroid_norm", "imbalance_ratio"]},
        "higher_variance_learned_first_at_balance": higher("generalization_time"),
        "higher_variance_memorized_first_at_balance": higher("memorization_time"),
    }
    if "memorization_fraction_generated" in dataset:
        values["generated_samples"] = generated_summary(dataset, balance)
        rows.append(
            Row(
                "higher-variance class copied more (balance)",
                values["generated_samples"]["higher_variance_copied_more_at_balance"],
                True,
                f"n_1/n_0={balance:g}",
                "mean over generator taus and seeds",
            )
        )
    notes = (
        "Times: generalization = half of the per-class test-loss drop; memorization = half-rise of the per-class train/test gap; seed medians.",
        "Reconstruction of [N] on the [BUBM] random-features score (docs/theory.md section 8); every parameter configurable.",
    )
    return Summary(rows, values, notes)


def generated_summary(dataset, balance: float) -> dict:
    """Seed-mean copy fractions per grid point, class and generator ``tau``, and whether the
    higher-variance class copies more (mean over ``tau``) at balance at every such point."""
    per_class = dataset.memorization_fraction_generated.mean("seed").transpose("variance_ratio", "centroid_norm", "imbalance_ratio", "class_", "tau_sample")
    total = dataset.memorization_fraction_generated_total.mean("seed").transpose("variance_ratio", "centroid_norm", "imbalance_ratio", "tau_sample")
    higher = per_class.sel(imbalance_ratio=balance).where(per_class.variance_ratio > 1.0, drop=True).mean("tau_sample")
    return {
        "tau_sample": dataset.tau_sample.values.tolist(),
        "dims": list(per_class.dims),
        "per_class": per_class.values,
        "total": total.values,
        "higher_variance_copied_more_at_balance": bool((higher.sel(class_="class_1") > higher.sel(class_="class_0")).all()),
    }


def figures(dataset, config: Config) -> dict:
    """Phase maps of ``log10 tau_1 / tau_0`` over (imbalance, variance ratio) per centroid norm;
    per-class test loss and gap at seed 0; generated copy fractions if any."""
    norms = dataset.centroid_norm.values
    phase, axes = plots.panels(2 * len(norms), "log10 tau_1/tau_0 < 0 (blue): class 1 first", rows=2, width=4.2)
    for i, (measure, verb) in enumerate(MEASURES.items()):
        ratio = np.log10(time_ratio(dataset, measure).transpose("variance_ratio", "centroid_norm", "imbalance_ratio"))
        for j, norm in enumerate(norms):
            plots.phase_map(
                axes[i * len(norms) + j],
                ratio.sel(centroid_norm=norm),
                list(dataset.imbalance_ratio.values),
                list(dataset.variance_ratio.values),
                title=f"{verb}, mu~_1={norm:g}",
                x_name="n_1 / n_0",
                y_name="sigma_1^2 / sigma_0^2",
            )
    one = dataset.isel(seed=0, centroid_norm=0, variance_ratio=-1)
    where = f"sigma_1^2/sigma_0^2={float(one.variance_ratio):g}, mu~_1={float(one.centroid_norm):g}, seed 0"
    curves, (loss_axis, gap_axis) = plots.panels(2, f"per-class curves at {where} (solid: class 0, dashed: class 1)", width=4.5)
    for k, ratio in enumerate(one.imbalance_ratio.values):
        for c, style in zip(CLASSES, ("-", "--")):
            run = one.sel(imbalance_ratio=ratio, class_=c)
            loss_axis.semilogx(one.tau, run.test_loss, style, color=f"C{k}", label=f"{c}, n_1/n_0={ratio:g}")
            gap_axis.semilogx(one.tau, run.test_loss - run.train_loss, style, color=f"C{k}")
    loss_axis.set(xlabel="tau", ylabel="test loss")
    gap_axis.set(xlabel="tau", ylabel="test - train loss")
    loss_axis.legend(fontsize=6)
    result = {"phase_map": phase, "class_curves": curves}
    if "memorization_fraction_generated" in dataset:
        result["generated_memorization"] = generated_figure(dataset)
    return result


def generated_figure(dataset):
    """Seed-mean copy fraction vs the generator's tau, per class (line style) and imbalance
    (colour), one panel per variance ratio, at the first centroid norm."""
    fractions = dataset.memorization_fraction_generated.mean("seed").isel(centroid_norm=0)
    figure, axes = plots.panels(len(dataset.variance_ratio), "copied fraction of generated samples", width=4.2)
    for axis, v in zip(axes, dataset.variance_ratio.values):
        for k, ratio in enumerate(dataset.imbalance_ratio.values):
            for c, style in zip(CLASSES, ("-", "--")):
                axis.semilogx(
                    dataset.tau_sample,
                    fractions.sel(variance_ratio=v, imbalance_ratio=ratio, class_=c),
                    style,
                    marker="o",
                    color=f"C{k}",
                    label=f"{c}, n_1/n_0={ratio:g}",
                )
        axis.set(xlabel="generator training time tau", ylabel="copied fraction", ylim=(-0.02, 1.02), title=f"sigma_1^2/sigma_0^2={v:g}")
    axes[0].legend(fontsize=6)
    return figure


run = bind(__name__)
