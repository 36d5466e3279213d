"""Solver outcomes as values: a failed solve is a result of its run, never an exception.

Every adaptive diffrax solve in :mod:`diffdyn.dynamics` runs with ``throw=False`` and returns a
:class:`Solved` pair: the solution and an integer status (0 = ok). Under ``jax.vmap`` one stiff
run then cannot raise for (or stall) a whole batch: its step budget (``max_steps``) ends it, its
status says why, and the sweep masks it (:mod:`diffdyn.dynamics.sweep`).

Codes (:data:`FAILURES`, in order): ``0 ok``; ``1 nonfinite`` (a NaN/inf output, set by the
sweep); ``2 max_steps`` (the step budget ran out); ``3 solver`` (any other diffrax failure: a
singular or broken-down step, a step size that underflowed).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, Int

FAILURES = ("ok", "nonfinite", "max_steps", "solver")
OK, NONFINITE, MAX_STEPS, SOLVER = range(len(FAILURES))


class Solved(NamedTuple):
    """A solution and its status (0 = ok, see :data:`FAILURES`)."""

    value: Any
    status: Int[Array, ""]


def from_diffrax(result: diffrax.RESULTS) -> Int[Array, ""]:
    """The status code of a diffrax solution's ``result``."""
    return jnp.where(
        result == diffrax.RESULTS.successful,
        OK,
        jnp.where(result == diffrax.RESULTS.max_steps_reached, MAX_STEPS, SOLVER),
    ).astype(jnp.int32)


def finite(*arrays: Array) -> Int[Array, ""]:
    """``nonfinite`` if any entry of ``arrays`` is NaN/inf, else ok: for a ``point`` that checks
    only some of its outputs (e.g. the simulation, not a theory that is NaN where none exists)."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(array)) for array in arrays]))
    return jnp.where(ok, OK, NONFINITE).astype(jnp.int32)


def worst(*statuses: Int[Array, "..."]) -> Int[Array, ""]:
    """One status for several solves: the largest code (0 only if every solve succeeded).
    Arrays (e.g. one status per vmapped solve) are reduced over all their entries."""
    return jnp.max(jnp.stack([jnp.max(jnp.asarray(status, jnp.int32)) for status in statuses]))
