"""Store a sweep: finished chunks as atomic ``.npz`` files, the sweep's identity in a manifest.

Layout of an output directory ``OUT``: ``OUT/scan.json`` (experiment, config, axes, root seed and
the chunk size of every group) and ``OUT/chunks/g{group}-c{chunk}.npz``. Each file appears whole
or not at all (:func:`diffdyn.dynamics.storage.atomic_path`), so a sweep killed at any moment resumes
from its finished chunks with the same chunk sizes, and gives the uninterrupted result bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from diffdyn.dynamics.storage import atomic_path
from diffdyn.dynamics.validation import ConfigError

MANIFEST = "scan.json"


class ChunkStore:
    """Finished chunks on disk under ``out`` (or in memory when ``out`` is ``None``)."""

    def __init__(self, out: Path | None):
        self.out = None if out is None else Path(out)
        self.memory: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def path(self, group: int, chunk: int) -> Path:
        return self.out / "chunks" / f"g{group:04d}-c{chunk:06d}.npz"

    def open(self, manifest: dict, *, resume: bool, overwrite: bool) -> dict:
        """Start, resume or replace; returns the manifest in force (a resumed one keeps its chunk
        sizes). Refuses to resume a different sweep, to replace without ``overwrite``, and to
        replace a directory that does not hold a sweep."""
        if self.out is None:
            return manifest
        held = (self.out / MANIFEST).exists()
        if held and resume:
            stored = json.loads((self.out / MANIFEST).read_text())
            identity = lambda m: {key: m[key] for key in m if key != "chunk_sizes"}
            if identity(stored) != identity(json.loads(json.dumps(manifest))):
                raise ConfigError(f"out: {self.out} holds a different sweep (experiment, config, grid or seeds differ); cannot resume")
            return stored
        if held and not overwrite:
            raise ConfigError(f"out: {self.out} already holds a sweep; pass --resume to finish it, --overwrite to replace it, or choose another --out")
        if held:
            shutil.rmtree(self.out)
        elif self.out.exists() and any(self.out.iterdir()):
            raise ConfigError(f"out: {self.out} is a non-empty directory that holds no sweep; choose another --out")
        (self.out / "chunks").mkdir(parents=True, exist_ok=True)
        self.write_manifest(manifest)
        return manifest

    def read_manifest(self) -> dict:
        return json.loads((self.out / MANIFEST).read_text())

    def write_manifest(self, manifest: dict) -> None:
        with atomic_path(self.out / MANIFEST) as temporary:
            temporary.write_text(json.dumps(manifest, indent=2) + "\n")

    def done(self, group: int, chunk: int) -> bool:
        return (group, chunk) in self.memory or (self.out is not None and self.path(group, chunk).exists())

    def save(self, group: int, chunk: int, arrays: dict[str, np.ndarray]) -> None:
        if self.out is None:
            self.memory[(group, chunk)] = arrays
            return
        with atomic_path(self.path(group, chunk)) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, **arrays)

    def load(self, group: int, chunk: int) -> dict[str, np.ndarray]:
        if self.out is None:
            return self.memory[(group, chunk)]
        with np.load(self.path(group, chunk)) as stored:
            return {name: stored[name] for name in stored.files}
