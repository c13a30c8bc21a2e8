"""Tests for evae_tf.data: the IDX reader, source discovery and the tf.data pipelines."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from idx_fixtures import write_idx, write_mnist_dir

from evae_tf import data
from evae_tf.data import network, sources

REAL_PROBE = network.reachable  # the autouse fixture replaces it in every test
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
def expected_32(images: np.ndarray) -> np.ndarray:
    """Reference preprocessing for MNIST-style images: [N, 28, 28] uint8 → [N, 32, 32, 1]."""
    x = tf.constant(images[..., None], tf.float32) / 255.0
    return tf.image.resize(x, (32, 32), method="bilinear", antialias=False).numpy()


def collect(ds: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([batch.numpy() for batch in ds])


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """No test sees the real system locations, the environment or the network by accident."""
    empty = tmp_path_factory.mktemp("empty")
    monkeypatch.setattr(sources, "IDX_SEARCH_PATHS",
                        {"mnist": (str(empty / "keras-mnist"),),
                         "fashion_mnist": (str(empty / "debian"), str(empty / "keras"))})
    monkeypatch.setattr(sources, "NPZ_SEARCH_PATHS", {"mnist": (str(empty / "mnist.npz"),)})
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty / "tfds"))
    monkeypatch.setattr(network, "reachable", lambda *args, **kwargs: False)
    return empty


@pytest.fixture
def mnist_dir(tmp_path):
    images = write_mnist_dir(tmp_path / "idx", n_train=50, n_test=20, gz=True)
    return tmp_path / "idx", images


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_uint8_images_and_labels(tmp_path, gz):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([7, 0, 9], np.uint8)
    got_images = data.read_idx(write_idx(tmp_path / "images-idx3-ubyte", images, gz=gz))
    got_labels = data.read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels, gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_other_dtypes_are_native_endian(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 12).astype(dtype)
    got = data.read_idx(write_idx(tmp_path / "a.idx", array))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_read_idx_truncated_data(tmp_path):
    path = write_idx(tmp_path / "t.idx", np.zeros((2, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[: 16 + 1000])
    with pytest.raises(data.IdxFormatError, match="expected 1568 bytes of data .* found 1000") as e:
        data.read_idx(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("payload, message", [
    (b"\x08\x03\x00\x00\x00\x01", "not an IDX file"),
    (b"\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "unknown IDX data type code 0x42"),
])
def test_read_idx_corrupt_header(tmp_path, payload, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(data.IdxFormatError, match=message) as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t.idx", np.ones((10, 28, 28), np.uint8) * 3, gz=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(data.IdxFormatError, match="corrupt or truncated gzip") as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- IDX source


def test_idx_dir_is_found_and_loaded(mnist_dir):
    directory, images = mnist_dir
    assert data.find_source("fashion_mnist", directory) == data.Source("idx", directory)
    ds = data.load("fashion_mnist", "train", batch_size=16, data_dir=directory)
    assert ds.element_spec.shape.as_list() == [None, 32, 32, 1]
    assert ds.element_spec.dtype == tf.float32
    got = collect(ds)
    assert got.shape == (50, 32, 32, 1)
    assert got.min() >= 0.0 and got.max() <= 1.0
    np.testing.assert_allclose(got, expected_32(images["train"]), atol=1e-6)
    assert data.num_examples("fashion_mnist", "train", directory) == 50


@pytest.mark.parametrize("shuffle", [True, False])
def test_pipelines_run_without_tf_data_autotuning(mnist_dir, shuffle):
    """Autotuning makes each epoch's iterator teardown wait seconds (see pipeline_options)."""
    directory, _ = mnist_dir
    ds = data.load("fashion_mnist", "train", batch_size=16, data_dir=directory, shuffle=shuffle,
                   seed=1)
    assert ds.options().autotune.enabled is False
    # an option set later (as training does for sharding) keeps it off
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    assert ds.with_options(options).options().autotune.enabled is False
    assert collect(ds).shape == (50, 32, 32, 1)


def test_idx_holdout_is_the_test_split(mnist_dir):
    directory, images = mnist_dir
    got = data.load_arrays("mnist", "holdout", data_dir=directory)
    np.testing.assert_allclose(got, expected_32(images["test"]), atol=1e-6)
    assert data.num_examples("mnist", "holdout", directory) == 20
    assert data.num_examples("mnist", "holdout", directory, take=5) == 5


def test_uncompressed_idx_files_and_env_var(tmp_path, monkeypatch):
    images = write_mnist_dir(tmp_path / "plain", n_train=4, n_test=3, gz=False)
    monkeypatch.setenv(data.ENV_DATA_DIR, str(tmp_path / "plain"))
    assert data.find_source("mnist") == data.Source("idx", tmp_path / "plain")
    np.testing.assert_allclose(data.load_arrays("mnist", "test"), expected_32(images["test"]),
                               atol=1e-6)


@pytest.mark.parametrize("drop_remainder, sizes", [(False, [16, 16, 16, 2]), (True, [16, 16, 16])])
def test_drop_remainder(mnist_dir, drop_remainder, sizes):
    ds = data.load("fashion_mnist", "train", batch_size=16, data_dir=mnist_dir[0],
                   drop_remainder=drop_remainder)
    assert [int(b.shape[0]) for b in ds] == sizes
    if drop_remainder:
        assert ds.element_spec.shape.as_list() == [16, 32, 32, 1]


def test_take_limits_examples(mnist_dir):
    got = collect(data.load("fashion_mnist", "train", batch_size=4, data_dir=mnist_dir[0], take=7))
    np.testing.assert_allclose(got, expected_32(mnist_dir[1]["train"][:7]), atol=1e-6)


def test_seeded_shuffle(mnist_dir):
    def epochs(seed, n=2):
        ds = data.load("fashion_mnist", "train", batch_size=8, shuffle=True, seed=seed,
                       data_dir=mnist_dir[0])
        return [collect(ds) for _ in range(n)]

    first, second = epochs(seed=1), epochs(seed=1)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)  # same seed: same order, epoch by epoch
    assert not np.array_equal(first[0], first[1])  # reshuffled each epoch
    assert not np.array_equal(first[0], epochs(seed=2, n=1)[0])  # other seed, other order
    unshuffled = expected_32(mnist_dir[1]["train"])
    assert not np.allclose(first[0], unshuffled, atol=1e-6)
    key = lambda x: np.sort(x.reshape(len(x), -1).sum(axis=1))  # noqa: E731
    np.testing.assert_allclose(key(first[0]), key(unshuffled), rtol=1e-5)  # a permutation


def test_wrong_image_dims_name_the_file(tmp_path):
    write_mnist_dir(tmp_path / "small", n_train=3, n_test=2, size=20)
    with pytest.raises(ValueError, match=r"expected uint8 images shaped \[N, 28, 28\]") as e:
        data.load("mnist", "train", batch_size=2, data_dir=tmp_path / "small")
    assert "train-images-idx3-ubyte" in str(e.value)


def test_idx_dir_has_no_validation_split(mnist_dir):
    with pytest.raises(ValueError, match="'validation' of mnist is not available"):
        data.load("mnist", "validation", batch_size=2, data_dir=mnist_dir[0])


def test_search_paths_order(tmp_path, monkeypatch):
    write_mnist_dir(tmp_path / "second", n_train=2, n_test=2)
    monkeypatch.setattr(sources, "IDX_SEARCH_PATHS",
                        {"fashion_mnist": (str(tmp_path / "first"), str(tmp_path / "second"))})
    assert data.find_source("fashion_mnist") == data.Source("idx", tmp_path / "second")
    write_mnist_dir(tmp_path / "first", n_train=2, n_test=2)
    assert data.find_source("fashion_mnist") == data.Source("idx", tmp_path / "first")


def test_keras_mnist_npz(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    npz = tmp_path / "mnist.npz"
    np.savez(npz, x_train=x_train, y_train=np.zeros(6), x_test=x_test, y_test=np.zeros(3))
    monkeypatch.setattr(sources, "NPZ_SEARCH_PATHS", {"mnist": (str(npz),)})
    assert data.find_source("mnist") == data.Source("npz", npz)
    np.testing.assert_allclose(data.load_arrays("mnist", "train"), expected_32(x_train), atol=1e-6)
    assert data.num_examples("mnist", "holdout") == 3


# --------------------------------------------------------------------------- TFDS source


@pytest.mark.parametrize("name", data.DATASETS)
def test_tfds_pipeline_on_mock_data(name):
    source = data.Source("tfds_prepared", None)
    with tfds.testing.mock_data(num_examples=10):
        for split in ("train", "holdout"):
            ds = data.load(name, split, batch_size=4, shuffle=True, seed=0, source=source)
            sizes = []
            for batch in ds:
                assert batch.dtype == tf.float32
                assert tuple(batch.shape[1:]) == data.image_shape(name)
                assert 0.0 <= float(tf.reduce_min(batch)) <= float(tf.reduce_max(batch)) <= 1.0
                sizes.append(int(batch.shape[0]))
            assert sizes == [4, 4, 2]
            assert data.num_examples(name, split, source=source) == 10
        assert data.load_arrays(name, "train", take=3, source=source).shape == (
            3, *data.IMAGE_SHAPES[name])


def test_tfds_download_is_chosen_only_when_online(monkeypatch, isolated):
    with pytest.raises(data.DataNotFoundError):
        data.find_source("cifar10")
    monkeypatch.setattr(network, "reachable", lambda *args, **kwargs: True)
    assert data.find_source("cifar10") == data.Source("tfds_download", isolated / "tfds")
    with tfds.testing.mock_data(num_examples=5):  # download_and_prepare is a no-op here
        batch = next(iter(data.load("cifar10", "train", batch_size=5)))
    assert batch.shape == (5, 32, 32, 3)


def test_source_tfds_skips_local_files(mnist_dir, monkeypatch):
    monkeypatch.setattr(network, "reachable", lambda *args, **kwargs: True)
    source = data.find_source("mnist", mnist_dir[0], allow_local=False)
    assert source == data.Source("tfds_download", mnist_dir[0])


def test_prepared_tfds_copies(tmp_path, monkeypatch, isolated):
    prepared = {tmp_path, isolated / "tfds"}
    monkeypatch.setattr(sources, "_tfds_prepared", lambda name, directory: directory in prepared)
    assert data.find_source("celeb_a", tmp_path) == data.Source("dir", tmp_path)
    assert data.find_source("celeb_a") == data.Source("tfds_prepared", isolated / "tfds")
    write_mnist_dir(tmp_path / "fashion-mnist", n_train=2, n_test=2)  # IDX files come first
    assert data.find_source("fashion_mnist", tmp_path) == data.Source(
        "idx", tmp_path / "fashion-mnist")


def test_center_crop_takes_the_middle():
    image = tf.reshape(tf.range(218 * 178 * 3), (218, 178, 3))
    np.testing.assert_array_equal(data.center_crop(image, 140), image[39:179, 19:159])
    batch = tf.stack([image, image + 1])
    assert data.center_crop(batch, 140).shape == (2, 140, 140, 3)


def test_celeb_a_preprocessing_keeps_only_the_centre():
    image = np.full((218, 178, 3), 10, np.uint8)
    image[39:179, 19:159] = [200, 100, 50]
    out = data.preprocess("celeb_a", tf.constant(image[None]))
    assert out.shape == (1, 64, 64, 3) and out.dtype == tf.float32
    np.testing.assert_allclose(out[0], np.broadcast_to([200 / 255, 100 / 255, 50 / 255],
                                                       (64, 64, 3)), atol=1e-6)


def test_cifar10_preprocessing_is_a_rescale():
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(data.preprocess("cifar10", tf.constant(images)), images / 255.0,
                               atol=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call", [
    lambda: data.load("svhn", "train", batch_size=2),
    lambda: data.find_source("svhn"),
    lambda: data.image_shape("svhn"),
    lambda: data.num_examples("svhn", "train"),
])
def test_unknown_dataset(call):
    expected = "Unknown dataset 'svhn'; expected one of: mnist, fashion_mnist, cifar10, celeb_a."
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value) == expected


def test_missing_explicit_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(data.DataNotFoundError, match="does not exist") as e:
        data.load("mnist", "train", batch_size=2, data_dir=missing)
    assert str(missing) in str(e.value)


def test_empty_explicit_dir_offline(tmp_path):
    with pytest.raises(data.DataNotFoundError) as e:
        data.find_source("fashion_mnist", tmp_path)
    assert str(tmp_path) in str(e.value)


def test_nothing_found_offline_fashion_mnist(isolated):
    with pytest.raises(data.DataNotFoundError) as e:
        data.load("fashion_mnist", "train", batch_size=2)
    message = str(e.value)
    assert "\n" not in message
    for part in ("dataset-fashion-mnist", "--data-dir", data.ENV_DATA_DIR, "internet",
                 str(isolated / "debian"), str(isolated / "tfds")):
        assert part in message


def test_nothing_found_offline_celeb_a():
    with pytest.raises(data.DataNotFoundError) as e:
        data.find_source("celeb_a")
    assert "dataset-fashion-mnist" not in str(e.value)
    assert "--data-dir" in str(e.value)


def test_bad_arguments(mnist_dir):
    with pytest.raises(ValueError, match="Unknown source 'web'"):
        data.load("mnist", "train", batch_size=2, source="web")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        data.load("mnist", "train", batch_size=0, data_dir=mnist_dir[0])


def test_network_probe_fails_fast_on_a_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert REAL_PROBE(("127.0.0.1", port), timeout=1.0) is False


# --------------------------------------------------------------------------- the real files


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                    reason=f"{DEBIAN_FASHION_MNIST} missing (apt-get install dataset-fashion-mnist)")
def test_debian_fashion_mnist(monkeypatch):
    monkeypatch.setattr(sources, "IDX_SEARCH_PATHS", {"fashion_mnist": (str(DEBIAN_FASHION_MNIST),)})
    assert data.find_source("fashion_mnist") == data.Source("idx", DEBIAN_FASHION_MNIST)
    assert data.num_examples("fashion_mnist", "train") == 60_000
    assert data.num_examples("fashion_mnist", "holdout") == 10_000
    holdout = data.load_arrays("fashion_mnist", "holdout")
    assert holdout.shape == (10_000, 32, 32, 1) and holdout.dtype == np.float32
    assert 0.0 <= holdout.min() and holdout.max() <= 1.0 and holdout.mean() > 0.1


# --------------------------------------------------------------------------- the package


def test_read_idx_header_reads_dims_only(tmp_path):
    path = write_idx(tmp_path / "images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), gz=True)
    dtype, dims = data.idx.read_idx_header(path)
    assert dtype == np.dtype(">u1") and dims == (5, 28, 28)
    path.write_bytes(path.read_bytes()[:40])  # the header survives, the data does not
    assert data.idx.read_idx_header(path)[1] == (5, 28, 28)
    with pytest.raises(data.IdxFormatError):
        data.read_idx(path)


def test_errors_are_the_project_errors():
    from evae_tf import errors

    assert data.DataNotFoundError is errors.DataNotFoundError
    assert data.IdxFormatError is errors.IdxFormatError
    assert issubclass(data.IdxFormatError, errors.EvaeError)
    assert issubclass(data.IdxFormatError, ValueError)


def test_shuffled_labelled_batches_keep_each_label_with_its_image(mnist_dir):
    directory, _ = mnist_dir
    plain = list(data.load_labelled("fashion_mnist", "train", batch_size=16, data_dir=directory))
    shuffled = list(data.load_labelled("fashion_mnist", "train", batch_size=16, data_dir=directory,
                                       shuffle=True, seed=3))
    x0 = np.concatenate([b[0].numpy() for b in plain])
    y0 = np.concatenate([b[1].numpy() for b in plain])
    x1 = np.concatenate([b[0].numpy() for b in shuffled])
    y1 = np.concatenate([b[1].numpy() for b in shuffled])
    assert x1.shape == (50, 32, 32, 1) and y1.dtype == np.int32
    assert not np.array_equal(x0, x1)
    order = [int(np.argmin(np.abs(x0 - x).sum(axis=(1, 2, 3)))) for x in x1]
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(y1, y0[order])


def test_data_imports_none_of_the_layers_above_it():
    import subprocess
    import sys

    code = ("import sys, evae_tf.data.labels; print(' '.join(m for m in sys.modules "
            "if m.startswith('evae_tf.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120).stdout.split()
    assert "evae_tf.data.pipeline" in loaded
    for layer in ("models", "samplers", "training", "runs", "evaluation", "experiments",
                  "config"):
        assert not [m for m in loaded if m == f"evae_tf.{layer}" or
                    m.startswith(f"evae_tf.{layer}.")], layer


def test_the_table_and_the_source_search_import_no_tensorflow():
    """A CLI checks --dataset against the table before TensorFlow loads."""
    import subprocess
    import sys

    code = ("import sys; from evae_tf.data import DATASETS, image_shape, find_source, network; "
            "from evae_tf.data.registry import DATASETS; "
            "assert image_shape('celeb_a') == (64, 64, 3); "
            "assert 'tensorflow' not in sys.modules and 'tensorflow_datasets' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_lazy_names_are_the_submodules_names():
    from evae_tf.data import labels, pipeline, raw

    assert data.load is pipeline.load and data.load_arrays is pipeline.load_arrays
    assert data.num_examples is raw.num_examples and data.load_labelled is labels.load_labelled
    assert set(data.__all__) <= set(dir(data))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018
