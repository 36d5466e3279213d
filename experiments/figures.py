"""Figures shared by the studies: theory vs simulation curves, emergence laws, power laws, phase maps.

Every helper draws on a matplotlib axis it is given (Agg backend, no display needed); a study's
``figures(dataset, config)`` lays its panels out with :func:`panels` and returns
``{name: Figure}``, which the runner saves as ``name.png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(count: int, title: str = "", *, rows: int = 1, width: float = 3.6, height: float = 3.2):
    """A figure with ``rows x ceil(count / rows)`` panels; returns ``(figure, flat list of axes)``."""
    columns = -(-count // rows)
    figure, axes = pyplot().subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    if title:
        figure.suptitle(title)
    return figure, list(axes.ravel())


def mode_colours(count: int):
    return pyplot().cm.viridis(np.linspace(0, 1, count))


def theory_and_simulation(axis, x, theory, simulated, *, log_y: bool = False, log_x: bool = True) -> None:
    """Curves ``[x, mode]``: theory as lines, simulation as dots, one colour per mode (a theory
    of all NaN, e.g. where none exists, draws nothing)."""
    theory, simulated = np.asarray(theory), np.asarray(simulated)
    for colour, mode in zip(mode_colours(simulated.shape[-1]), range(simulated.shape[-1])):
        axis.plot(x, theory[:, mode], color=colour, lw=1)
        axis.plot(x, simulated[:, mode], "o", color=colour, ms=2.5)
    axis.set_xscale("log" if log_x else "linear")
    if log_y:
        axis.set_yscale("log")


def emergence_law(axis, lam, tau_star: Mapping[str, np.ndarray], fits: Mapping[str, float] | None = None) -> None:
    """Emergence time vs data variance, log-log, one marker per source (with its fitted alpha)."""
    for (source, times), marker in zip(tau_star.items(), "so^vD"):
        times = np.asarray(times)
        label = source if not fits or fits.get(source) is None else f"{source} (alpha {fits[source]:.3g})"
        axis.loglog(np.broadcast_to(lam, times.shape).ravel(), times.ravel(), marker, ms=4, mfc="none", label=label)
    axis.set_xlabel("data variance lambda")
    axis.set_ylabel("emergence time")
    axis.legend(fontsize=7)


def power_law(axis, x, y, *, slope: float | None = None, intercept: float | None = None, label: str = "", marker: str = "o") -> None:
    """Points ``(x, y)`` on log-log axes and, given, the fitted line ``y = e^intercept x^slope``."""
    line = axis.loglog(x, y, marker, mfc="none", label=label)[0]
    if slope is not None and intercept is not None and np.isfinite(slope):
        grid = np.geomspace(np.min(x), np.max(x), 50)
        axis.loglog(grid, np.exp(intercept) * grid**slope, "-", color=line.get_color(), lw=0.8, label=f"slope {slope:.3g}")


def phase_map(axis, values, x_labels: Sequence, y_labels: Sequence, *, title: str, x_name: str, y_name: str) -> None:
    """A diverging colour map of ``values[y, x]`` centred on 0, labelled rows and columns."""
    values = np.asarray(values, float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    image = axis.pcolormesh(np.arange(len(x_labels)), np.arange(len(y_labels)), values, cmap="RdBu_r", vmin=-bound, vmax=bound or 1.0, shading="nearest")
    axis.set_xticks(np.arange(len(x_labels)), [f"{value:.3g}" if isinstance(value, float) else str(value) for value in x_labels], fontsize=7)
    axis.set_yticks(np.arange(len(y_labels)), [f"{value:.3g}" if isinstance(value, float) else str(value) for value in y_labels])
    axis.set(xlabel=x_name, ylabel=y_name, title=title)
    axis.figure.colorbar(image, ax=axis)
