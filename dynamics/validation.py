"""Input checks that run on the host, before anything is traced or compiled.

Every failure raises :class:`ConfigError` whose message starts with the offending field and states
the allowed values, so the CLI can print it as one line and exit with status 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


class ConfigError(ValueError):
    """Bad user input; the message names the field and the allowed values."""


def require_choice(field: str, value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{field}: unknown value {value!r}; allowed: {', '.join(allowed)}")
    return value


def require_subset(field: str, values, allowed: Iterable[str]) -> tuple[str, ...]:
    """A non-empty selection from ``allowed`` (e.g. the families or tasks of a study)."""
    allowed = tuple(allowed)
    if not values:
        raise ConfigError(f"{field}: at least one of {', '.join(allowed)}")
    return tuple(require_choice(field, value, allowed) for value in values)


def require_finite(field: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"{field}: must be finite (no NaN or inf); got {_show(array)}")
    return array


def require_range(field: str, values, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False) -> np.ndarray:
    """Check ``low <= values <= high`` (``low < values`` with ``low_open``), elementwise."""
    array = require_finite(field, values)
    below = array <= low if low_open else array < low
    if np.any(below) or np.any(array > high):
        left = "(" if low_open else "["
        raise ConfigError(f"{field}: allowed range {left}{low}, {high}]; got {_show(array)}")
    return array


def require_positive_int(field: str, value: int, *, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{field}: must be an integer >= {minimum}; got {value!r}")
    return int(value)


def require_increasing(field_low: str, low: float, field_high: str, high: float) -> None:
    if not low < high:
        raise ConfigError(f"{field_low}: must be < {field_high} ({high}); got {low}")


def require_psd(field: str, matrix, *, tol: float = 1e-10) -> np.ndarray:
    """Check a symmetric positive semi-definite matrix (eigenvalues >= -tol * largest)."""
    array = require_finite(field, matrix)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ConfigError(f"{field}: must be a square matrix; got shape {array.shape}")
    if not np.allclose(array, array.T, rtol=1e-10, atol=1e-12):
        raise ConfigError(f"{field}: must be symmetric")
    eigenvalues = np.linalg.eigvalsh(array)
    scale = max(float(np.abs(eigenvalues).max()), 1.0)
    if eigenvalues.min() < -tol * scale:
        raise ConfigError(f"{field}: must be positive semi-definite; smallest eigenvalue {eigenvalues.min():.3g}")
    return array


def _show(array: np.ndarray) -> str:
    flat = array.ravel()
    text = np.array2string(flat[:6], precision=4, separator=", ")
    return text if flat.size <= 6 else text[:-1] + ", ...]"
