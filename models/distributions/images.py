"""Image datasets for the nonlinear-denoiser studies ([WP] sec. 6), all scaled to ``[-1, 1]``.

Every loader returns a float ``numpy`` array of shape ``(n, height, width, channels)`` (use
:func:`flatten` for flat vectors). Bundled, offline:

* :func:`digits`: scikit-learn's 1797 handwritten digits, 8x8, raw range ``[0, 16]``;
* :func:`faces`: scikit-image's ``lfw_subset``, 200 faces of 25x25 (optionally resized);
* :func:`patches`: square patches of scikit-image's greyscale(d) photographs, positions drawn
  deterministically from a PRNG key.

From a local path (no download): :func:`mnist` / :func:`fashion_mnist` read the IDX files
``{train,t10k}-images-idx3-ubyte`` (optionally ``.gz``), :func:`cifar10` the python pickle batches
``data_batch_1..5`` / ``test_batch`` (in the directory or its ``cifar-10-batches-py``). A missing
path or file raises :class:`diffdyn.dynamics.validation.ConfigError` naming ``data_path``.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import jax
import numpy as np

from diffdyn.dynamics.validation import ConfigError, require_choice

PHOTOGRAPHS = ("camera", "astronaut", "coins", "moon", "text", "brick", "grass", "gravel", "clock", "coffee", "chelsea")
"""scikit-image sample photographs used by :func:`patches` (colour ones converted to grey)."""

SPLITS = ("train", "test")
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def to_unit_interval(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Affine map of ``[low, high]`` onto ``[-1, 1]`` (float64)."""
    return 2.0 * (np.asarray(values, dtype=np.float64) - low) / (high - low) - 1.0


def flatten(images: np.ndarray) -> np.ndarray:
    """``(n, height, width, channels) -> (n, height * width * channels)``."""
    return images.reshape(images.shape[0], -1)


def digits() -> np.ndarray:
    """scikit-learn digits, ``(1797, 8, 8, 1)`` in ``[-1, 1]``."""
    from sklearn.datasets import load_digits

    return to_unit_interval(load_digits().images, 0.0, 16.0)[..., None]


def faces(size: int = 0) -> np.ndarray:
    """scikit-image ``lfw_subset``, ``(200, 25, 25, 1)`` in ``[-1, 1]``; resized (anti-aliased)
    to ``(size, size)`` when ``size > 0``."""
    from skimage.data import lfw_subset
    from skimage.transform import resize

    images = lfw_subset()
    if size:
        images = np.stack([resize(image, (size, size), anti_aliasing=True) for image in images])
    return to_unit_interval(np.clip(images, 0.0, 1.0), 0.0, 1.0)[..., None]


def photograph(name: str) -> np.ndarray:
    """One scikit-image photograph as greyscale floats in ``[0, 1]``."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    image = img_as_float(getattr(skimage.data, require_choice("photograph", name, PHOTOGRAPHS))())
    return rgb2gray(image) if image.ndim == 3 else image


def patches(key: jax.Array, num: int, size: int = 8, names: tuple[str, ...] = PHOTOGRAPHS) -> np.ndarray:
    """``num`` square ``size x size`` patches from the photographs ``names``, ``(num, size, size, 1)``
    in ``[-1, 1]``: photograph and top-left corner drawn uniformly with ``key`` (the same key gives
    the same patches)."""
    images = [photograph(name) for name in names]
    choice_key, row_key, column_key = jax.random.split(key, 3)
    which = np.asarray(jax.random.randint(choice_key, (num,), 0, len(images)))
    unit_rows = np.asarray(jax.random.uniform(row_key, (num,)))
    unit_columns = np.asarray(jax.random.uniform(column_key, (num,)))
    out = np.empty((num, size, size))
    for index, (image_index, u, v) in enumerate(zip(which, unit_rows, unit_columns)):
        image = images[image_index]
        row = int(u * (image.shape[0] - size + 1))
        column = int(v * (image.shape[1] - size + 1))
        out[index] = image[row : row + size, column : column + size]
    return to_unit_interval(out, 0.0, 1.0)[..., None]


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST format: 2 zero bytes, a type code, the number of dims, big-endian
    int32 dims, then the data), plain or gzip-compressed (by the ``.gz`` suffix)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ConfigError(f"data_path: {str(path)!r} is not an IDX file")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"data_path: {str(path)!r} holds {data.size} values, header says {shape}")
    return data.reshape(shape)


def _directory(path: str | Path, what: str) -> Path:
    if not str(path):
        raise ConfigError(f"data_path: required for {what} (a local directory); got ''")
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(f"data_path: {str(directory)!r} is not a directory (needed for {what})")
    return directory


def _idx_images(path: str | Path, split: str, what: str) -> np.ndarray:
    directory = _directory(path, what)
    stem = {"train": "train", "test": "t10k"}[require_choice("split", split, SPLITS)] + "-images-idx3-ubyte"
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            images = read_idx(directory / name)
            return to_unit_interval(images, 0.0, 255.0)[..., None]
    raise ConfigError(f"data_path: no {stem} or {stem}.gz in {str(directory)!r} (needed for {what})")


def mnist(path: str | Path, split: str = "train") -> np.ndarray:
    """MNIST from IDX files in directory ``path``: ``(n, 28, 28, 1)`` in ``[-1, 1]``."""
    return _idx_images(path, split, "mnist")


def fashion_mnist(path: str | Path, split: str = "train") -> np.ndarray:
    """Fashion-MNIST (same file names and format as MNIST): ``(n, 28, 28, 1)`` in ``[-1, 1]``."""
    return _idx_images(path, split, "fashion-mnist")


def cifar10(path: str | Path, split: str = "train", *, grayscale: bool = False) -> np.ndarray:
    """CIFAR-10 python batches in ``path`` (or ``path/cifar-10-batches-py``): ``(n, 32, 32, 3)``
    (``(n, 32, 32, 1)`` with ``grayscale``, ITU-R 601 luma) in ``[-1, 1]``. The pickles hold
    ``{b"data": uint8 (n, 3072)}`` with the red, green and blue planes in that order."""
    directory = _directory(path, "cifar10")
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if require_choice("split", split, SPLITS) == "train" else ["test_batch"]
    found = [directory / name for name in names if (directory / name).is_file()]
    if not found:
        raise ConfigError(f"data_path: no CIFAR-10 batch ({', '.join(names)}) in {str(directory)!r}")
    batches = []
    for file in found:
        with open(file, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        batches.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    images = to_unit_interval(np.concatenate(batches), 0.0, 255.0)
    if grayscale:
        images = (images @ np.array([0.299, 0.587, 0.114]))[..., None]
    return images
