"""Assemble a sweep's stored chunks into one labelled dataset.

Dims: one per axis (the grid fields, then fields swept on top; ``.`` in a nested field's path
becomes ``_``), then ``seed``, then each output's own dims. Static axes that change an output's
shape make the dataset the outer join of the groups (NaN where a group has no entry; a boolean
output with such gaps becomes 0/1 floats). Every run gets ``failure`` (a :mod:`diffdyn.dynamics.status` code, CF
``flag_values`` / ``flag_meanings``) and ``diverged = failure != 0``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import xarray as xr

from diffdyn.dynamics import config as configs
from diffdyn.dynamics import status
from diffdyn.dynamics.sweep.execute import chunks
from diffdyn.dynamics.sweep.plan import Plan
from diffdyn.dynamics.sweep.store import ChunkStore

RESERVED_OUTPUTS = ("failure", "diverged")


def _group_dataset(study: ModuleType, plan: Plan, group, store: ChunkStore, size: int) -> xr.Dataset:
    outputs = study.outputs(group.config)
    parts = [store.load(group.index, number) for number in range(len(chunks(group, size)))]
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    traced_axes = [axis for axis in plan.axes if axis.traced]
    run_dims = [axis.name for axis in traced_axes] + ["seed"]
    variables = {name: (run_dims + list(outputs.dims.get(name, ())), values.reshape(group.shape + values.shape[1:])) for name, values in arrays.items()}
    coords = {axis.name: np.asarray(axis.values) for axis in traced_axes}
    coords["seed"] = np.arange(plan.config.seeds)
    for dims, values in variables.values():
        for dim, size_of in zip(dims, values.shape):
            coords.setdefault(dim, np.asarray(outputs.coords.get(dim, np.arange(size_of))))
    part = xr.Dataset(variables, coords=coords)
    for name, text in outputs.long_names.items():
        if name in part:
            part[name].attrs["long_name"] = text
    static = {axis.name: [group.static[axis.path]] for axis in plan.axes if not axis.traced}
    return part.expand_dims(static) if static else part


def assemble(study: ModuleType, plan: Plan, store: ChunkStore, sizes: Sequence[int]) -> xr.Dataset:
    """The labelled dataset of a finished sweep (see the module docstring)."""
    parts = [_group_dataset(study, plan, group, store, size) for group, size in zip(plan.groups, sizes)]
    if len(parts) > 1:
        flags = {name for part in parts for name, value in part.data_vars.items() if value.dtype == bool}
        as_float = lambda part: part.map(lambda v: v.astype(float) if v.dtype == bool else v)
        dataset = xr.combine_by_coords(
            [as_float(part) for part in parts], data_vars="minimal", compat="no_conflicts", join="outer", combine_attrs="drop_conflicts"
        )
        dataset = dataset.reindex({axis.name: list(axis.values) for axis in plan.axes if not axis.traced})
        dataset["failure"] = dataset.failure.astype(np.int32)
        for name in flags:  # back to booleans where every group has every entry
            if not dataset[name].isnull().any():
                dataset[name] = dataset[name].astype(bool)
    else:
        dataset = parts[0]
    dataset = dataset.transpose(*(axis.name for axis in plan.axes), "seed", ...)
    dataset["failure"].attrs.update(
        long_name="why a run failed (0: ok)", flag_values=np.arange(len(status.FAILURES), dtype=np.int32), flag_meanings=" ".join(status.FAILURES)
    )
    dataset["diverged"] = dataset.failure != status.OK
    dataset["diverged"].attrs["long_name"] = "run failed (its float outputs are NaN); see failure"
    dataset.attrs.update(
        experiment=study.NAME,
        reference=study.REFERENCE,
        conventions=study.CONVENTIONS,
        precision=study.PRECISION,
        config=json.dumps(configs.to_dict(plan.config)),
        swept=",".join(axis.path for axis in plan.axes),
        keys="run key = fold_in(key(config.seed), seed)",
    )
    return dataset


def failure_counts(dataset: xr.Dataset) -> dict[str, int]:
    """Failed runs by reason (reasons with no run left out)."""
    codes = dataset.failure.values.ravel()
    return {reason: int(np.sum(codes == code)) for code, reason in enumerate(status.FAILURES) if code and np.any(codes == code)}
