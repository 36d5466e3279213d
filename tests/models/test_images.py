"""Image datasets: bundled ones in [-1, 1], IDX and CIFAR-10 loaders on tiny files written here."""

import gzip
import pickle

import jax
import numpy as np
import pytest

from diffdyn.dynamics.validation import ConfigError
from diffdyn.models.distributions import images


def write_idx(path, array):
    """Write ``array`` (uint8) in the IDX format: 0, 0, type 0x08, ndim, big-endian dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())


def test_digits_range_and_shape():
    data = images.digits()
    assert data.shape == (1797, 8, 8, 1)
    assert data.min() == -1.0 and data.max() == 1.0


def test_faces_range_shape_and_resize():
    assert images.faces().shape == (200, 25, 25, 1)
    small = images.faces(16)
    assert small.shape == (200, 16, 16, 1)
    assert -1.0 <= small.min() < -0.5 and 0.5 < small.max() <= 1.0


def test_patches_are_deterministic_in_the_key_and_in_range():
    first = images.patches(jax.random.key(0), 50, 8, names=("camera", "coins"))
    again = images.patches(jax.random.key(0), 50, 8, names=("camera", "coins"))
    other = images.patches(jax.random.key(1), 50, 8, names=("camera", "coins"))
    assert first.shape == (50, 8, 8, 1)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= -1.0 and first.max() <= 1.0
    camera = images.photograph("camera")
    # Every patch is an exact crop of one of the photographs.
    unit = (first[0, ..., 0] + 1) / 2
    coins = images.photograph("coins")
    found = any(
        np.allclose(source[r : r + 8, c : c + 8], unit)
        for source in (camera, coins)
        for r in range(source.shape[0] - 7)
        for c in range(source.shape[1] - 7)
        if np.isclose(source[r, c], unit[0, 0])
    )
    assert found


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_and_mnist_loader(tmp_path, suffix):
    raw = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", raw)
    np.testing.assert_array_equal(images.read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), raw)
    for loader in (images.mnist, images.fashion_mnist):
        data = loader(tmp_path)
        assert data.shape == (2, 28, 28, 1)
        np.testing.assert_allclose(data[..., 0], raw / 255 * 2 - 1, rtol=1e-15)
    assert data.min() == -1.0 and data.max() == 1.0


def test_missing_paths_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="^data_path: .*not a directory"):
        images.mnist(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="^data_path: no train-images-idx3-ubyte"):
        images.fashion_mnist(tmp_path)
    with pytest.raises(ConfigError, match="^data_path: no CIFAR-10 batch"):
        images.cifar10(tmp_path)
    with pytest.raises(ConfigError, match="^data_path: required"):
        images.mnist("")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not idx")
    with pytest.raises(ConfigError, match="^data_path: .*not an IDX file"):
        images.mnist(tmp_path)


def test_cifar10_batches_channels_and_grayscale(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    planes = np.zeros((3, 3, 32, 32), np.uint8)  # 3 images; image i has only channel i at 255
    for i in range(3):
        planes[i, i] = 255
    for name, chunk in (("data_batch_1", planes[:2]), ("data_batch_2", planes[2:])):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": chunk.reshape(len(chunk), 3072), b"labels": [0] * len(chunk)}, handle)
    data = images.cifar10(tmp_path)
    assert data.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(data[:, 5, 7, :], 2 * np.eye(3) - 1)  # red, green, blue images
    grey = images.cifar10(tmp_path, grayscale=True)
    assert grey.shape == (3, 32, 32, 1)
    np.testing.assert_allclose(grey[:, 0, 0, 0], 2 * np.array([0.299, 0.587, 0.114]) - 1, rtol=1e-12)
    with pytest.raises(ConfigError, match="^data_path: no CIFAR-10 batch"):
        images.cifar10(tmp_path, "test")
