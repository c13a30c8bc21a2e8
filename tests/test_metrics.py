"""evae_tf.evaluation's metrics: sharpness against hand-computed values; the Fréchet distance
against closed forms; the FID pipeline, its feature networks and their loaders."""

import json
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from idx_fixtures import write_mnist_dir
from scipy import ndimage

from evae_tf import data, evaluation
from evae_tf.data import labels, network
from evae_tf.evaluation import classifier, features, frechet


def test_flat_image_has_zero_sharpness():
    assert float(evaluation.sharpness(np.full((2, 8, 8, 1), 0.7, np.float32))) == 0.0


def test_checkerboard_has_its_known_variance():
    board = (np.indices((8, 8)).sum(0) % 2).astype(np.float32)  # 0/1 checkerboard
    # Interior response: 4 neighbours of opposite value minus 4·centre = 4 - 8·centre → ±4.
    got = float(evaluation.sharpness(board[None, :, :, None]))
    assert got == pytest.approx(16.0)


def test_matches_scipy_laplace_on_random_rgb_images():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 10, 12, 3)).astype(np.float32)
    gray = x @ np.array(evaluation.LUMA_WEIGHTS, np.float32)
    expected = []
    for g in gray:
        full = ndimage.correlate(g.astype(np.float64), np.array(evaluation.LAPLACE_FILTER), mode="constant")
        expected.append(full[1:-1, 1:-1].var())  # valid padding
    np.testing.assert_allclose(evaluation.sharpness_per_image(x).numpy(), expected, rtol=1e-4)
    assert float(evaluation.sharpness(x)) == pytest.approx(np.mean(expected), rel=1e-4)


def test_sharper_images_score_higher():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 16, 16, 1)).astype(np.float32)
    blurred = ndimage.uniform_filter(x, size=(1, 3, 3, 1))
    assert float(evaluation.sharpness(x)) > 5 * float(evaluation.sharpness(blurred))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match=r"Received: shape=\(4, 4\)"):
        evaluation.sharpness(np.zeros((4, 4), np.float32))


# =========================================================================== FID

def random_cov(rng, dim, rank=None):
    a = rng.normal(size=(dim, rank or dim))
    return a @ a.T / (rank or dim)


# --------------------------------------------------------------------------- frechet_distance


def test_frechet_distance_of_identical_fits_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=6), random_cov(rng, 6)
    assert evaluation.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2.0, 5), rng.uniform(0.1, 2.0, 5)  # standard deviations
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)
    got = evaluation.frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_rank_deficient_covariances_is_finite():
    rng = np.random.default_rng(2)  # 5 feature vectors in 20 dimensions, as with too few images
    s1, s2 = random_cov(rng, 20, rank=4), random_cov(rng, 20, rank=4)
    got = evaluation.frechet_distance(np.zeros(20), s1, np.ones(20), s2)
    assert np.isfinite(got) and got > 20.0 - 1e-6


def test_a_non_finite_root_is_retried_with_eps_on_the_diagonals(monkeypatch, caplog):
    calls = []
    real = frechet._sqrtm

    def flaky(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.inf) if len(calls) == 1 else real(matrix)

    monkeypatch.setattr(frechet, "_sqrtm", flaky)
    sigma = np.diag([1.0, 0.0])
    got = evaluation.frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (sigma + 1e-6 * np.eye(2)) @ (sigma + 1e-6 * np.eye(2)))
    assert got == pytest.approx(0.0, abs=1e-5) and "adding 1e-06 to the diagonals" in caplog.text


def test_imaginary_parts_are_dropped_when_tiny_and_refused_when_large(monkeypatch):
    sigma = np.eye(2)
    monkeypatch.setattr(frechet, "_sqrtm", lambda m: np.eye(2) + 1e-9j)
    assert evaluation.frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma) == pytest.approx(0.0)
    monkeypatch.setattr(frechet, "_sqrtm", lambda m: np.eye(2) + 0.25j)
    with pytest.raises(ValueError, match=r"imaginary component of 0\.25 \(> 0\.001\)"):
        evaluation.frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma)


@pytest.mark.parametrize("args, message", [
    ((np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)), r"same length\. Received: mu1.shape=\(3,\), mu2.shape=\(2,\)"),
    ((np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)), r"`sigma1` must be \[3, 3\].*sigma1.shape=\(2, 2\)"),
    ((np.zeros(3), np.eye(3), np.zeros(3), np.ones((3, 4))), r"`sigma2` must be \[3, 3\]"),
    ((np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2)), r"`mu2` has non-finite entries"),
])
def test_frechet_distance_shape_errors(args, message):
    with pytest.raises(ValueError, match=message):
        evaluation.frechet_distance(*args)


# --------------------------------------------------------------------------- GaussianStats


def test_streaming_moments_equal_numpy_on_the_concatenation():
    rng = np.random.default_rng(3)
    # A large common offset: a naive sum of squares would lose the spread to round-off.
    batches = [1e4 + rng.normal(size=(n, 7)).astype(np.float32) for n in (5, 1, 17, 0, 9)]
    stats = evaluation.GaussianStats()
    for batch in batches:
        stats.update(batch)
    everything = np.concatenate(batches).astype(np.float64)
    assert stats.count == 32 and stats.dim == 7
    np.testing.assert_allclose(stats.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(everything, rowvar=False), rtol=1e-9, atol=1e-12)


def test_streaming_moments_errors():
    stats = evaluation.GaussianStats().update(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2 feature vectors; have 1"):
        _ = stats.covariance
    with pytest.raises(ValueError, match="dimension 4 do not match the earlier 3"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\[batch, dim\]. Received: shape=\(3,\)"):
        stats.update(np.zeros(3))
    with pytest.raises(ValueError, match="No features"):
        _ = evaluation.GaussianStats().mean


# --------------------------------------------------------------------------- the FID pipeline


def tiny_network():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(4, 3, strides=2, activation="tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(6, activation="tanh"),
    ])
    return evaluation.KerasFeatures(model, "tiny", "a random CNN for tests", batch_size=16)


def batches_of(images, size=20):
    return [images[i:i + size] for i in range(0, len(images), size)]


def test_fid_pipeline_end_to_end_with_a_tiny_network(caplog):
    network = tiny_network()
    rng = np.random.default_rng(4)
    real = rng.uniform(size=(100, 16, 16, 1)).astype(np.float32)
    other = rng.uniform(size=(100, 16, 16, 1)).astype(np.float32)
    shifted = np.clip(other * 0.5 + 0.4, 0, 1)

    same = evaluation.fid(batches_of(real), batches_of(real), network)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["network"] == "tiny" and same["num_images"] == 100
    assert "100 images per side (fewer than 10,000)" in same["warning"] and "fewer than" in caplog.text
    fresh = evaluation.fid(batches_of(real), batches_of(other), network)["fid"]
    far = evaluation.fid(batches_of(real), batches_of(shifted), network)["fid"]
    assert 0 < fresh < far
    # The features are the Keras model's outputs, batch by batch; the FID is the Fréchet
    # distance of their NumPy mean and covariance.
    f_real, f_other = (np.concatenate([network(b) for b in batches_of(x)]) for x in (real, other))
    np.testing.assert_allclose(f_real, network.model(real).numpy(), rtol=1e-5, atol=1e-6)
    assert f_real.shape == (100, 6) and network(real[:0]).shape == (0, 0)
    expected = evaluation.frechet_distance(f_real.mean(0), np.cov(f_real, rowvar=False),
                                           f_other.mean(0), np.cov(f_other, rowvar=False))
    assert fresh == pytest.approx(expected, rel=1e-4)  # float64 round-off of the traces


# --------------------------------------------------------------------------- loaders without weights


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setattr(network, "reachable", lambda *a, **k: False)
    monkeypatch.delenv(evaluation.ENV_FID_WEIGHTS, raising=False)
    monkeypatch.setenv(evaluation.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path


def test_inception2015_without_weights_is_unavailable_with_a_clear_message(offline):
    with pytest.raises(evaluation.FIDUnavailableError) as info:
        evaluation.fid_network("inception2015")
    cached = offline / "cache" / "inception-2015-12-05" / "classify_image_graph_def.pb"
    assert info.value.message == (
        "no weights for the 2015 Inception network: pass --fid-weights PATH or set EVAE_FID_WEIGHTS "
        "(PATH: classify_image_graph_def.pb, inception-2015-12-05.tgz or TF-Hub's "
        "tfgan/eval/inception/1 SavedModel)")
    assert info.value.hint == ("download.tensorflow.org is unreachable here; with internet access the "
                               f"graph is fetched once into {cached}")
    assert str(info.value) == f"{info.value.message} ({info.value.hint})"


def test_keras_inception_without_weights_is_unavailable_with_a_clear_message(offline):
    with pytest.raises(evaluation.FIDUnavailableError,
                       match=r"no weights for keras.applications.InceptionV3: pass --fid-weights .*"
                             r"storage.googleapis.com is unreachable") as info:
        evaluation.fid_network("keras_inception")
    assert info.value.message == ("no weights for keras.applications.InceptionV3: pass --fid-weights "
                                  f"PATH or put the file in {offline / 'keras' / 'models'}")
    assert info.value.hint == ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5; "
                               "storage.googleapis.com is unreachable here")


def test_missing_or_wrong_weights_files_are_named(offline):
    with pytest.raises(evaluation.FIDUnavailableError, match=r"nowhere.pb \(--fid-weights"):
        evaluation.fid_network("inception2015", weights=offline / "nowhere.pb")
    junk = offline / "junk.pb"
    junk.write_bytes(b"\x00not a graph")
    with pytest.raises(evaluation.FIDUnavailableError, match="junk.pb"):
        evaluation.fid_network("inception2015", weights=junk)
    with pytest.raises(ValueError, match="Unknown FID network 'fid9'"):
        evaluation.fid_network("fid9")


# --------------------------------------------------------------------------- a fake 2015 graph

FAKE_DIM = 8


def fake_inception_graph_def(seed=0):
    """A frozen graph with the 2015 graph's tensor names and its old batch-norm op.

    DecodeJpeg → Cast → ExpandDims → ResizeBilinear(299) → Sub(128) → Mul(1/128) →
    conv/Conv2D → conv/batchnorm (BatchNormWithGlobalNormalization, GraphDef version 8)
    → conv (ReLU) → pool_3 (average pool to [B, 1, 1, 8]) → pool_3/_reshape ([1, 8]).
    """
    rng = np.random.default_rng(seed)
    params = {
        "filter": rng.normal(size=(3, 3, 3, FAKE_DIM)).astype(np.float32) * 0.3,
        "mean": rng.normal(size=FAKE_DIM).astype(np.float32),
        "var": rng.uniform(0.5, 2, FAKE_DIM).astype(np.float32),
        "beta": rng.normal(size=FAKE_DIM).astype(np.float32),
        "gamma": rng.uniform(0.5, 2, FAKE_DIM).astype(np.float32),
    }
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        image = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        x = tf.expand_dims(tf.cast(image, tf.float32, name="Cast"), 0, name="ExpandDims")
        x = tf.compat.v1.image.resize_bilinear(x, [299, 299], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(x, 128.0, name="Sub"), 1 / 128, name="Mul")
        x = tf.nn.conv2d(x, tf.constant(params["filter"]), strides=8, padding="VALID", name="conv/Conv2D")
        for key in ("mean", "var", "beta", "gamma"):
            tf.constant(params[key], name=f"conv/{key}")
        x = tf.nn.relu(tf.identity(x, name="conv/batchnorm"), name="conv")
        pool = tf.nn.avg_pool2d(x, 38, 1, "VALID", name="pool_3")
        tf.reshape(pool, [1, FAKE_DIM], name="pool_3/_reshape")
    graph_def = graph.as_graph_def()
    bn = next(n for n in graph_def.node if n.name == "conv/batchnorm")
    bn.op = "BatchNormWithGlobalNormalization"
    del bn.input[:]
    bn.input.extend(["conv/Conv2D", "conv/mean", "conv/var", "conv/beta", "conv/gamma"])
    bn.attr["variance_epsilon"].f = 1e-3
    bn.attr["scale_after_normalization"].b = True
    graph_def.versions.producer = 8
    return graph_def, params


def fake_inception_reference(images, params):
    x = tf.round(tf.constant(images) * 255.0)
    x = tf.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    x = (tf.compat.v1.image.resize_bilinear(x, [299, 299]) - 128.0) / 128.0
    x = tf.nn.conv2d(x, params["filter"], strides=8, padding="VALID")
    x = (x - params["mean"]) * tf.math.rsqrt(params["var"] + 1e-3) * params["gamma"] + params["beta"]
    return tf.reduce_mean(tf.nn.relu(x), axis=[1, 2]).numpy()


@pytest.fixture(scope="module")
def fake_graph(tmp_path_factory):
    graph_def, params = fake_inception_graph_def()
    path = tmp_path_factory.mktemp("inception") / "classify_image_graph_def.pb"
    path.write_bytes(graph_def.SerializeToString())
    return path, params


def test_frozen_graph_loader_feeds_expanddims_like_ttur(fake_graph, offline):
    path, params = fake_graph
    network = evaluation.fid_network("inception2015", weights=path)
    assert network.name == "inception2015" and network.input_name == "ExpandDims:0"
    rng = np.random.default_rng(5)
    gray = rng.uniform(size=(3, 32, 32, 1)).astype(np.float32)  # batches of any size and channels
    np.testing.assert_allclose(network(gray), fake_inception_reference(gray, params), rtol=1e-4, atol=1e-5)
    rgb = rng.uniform(size=(2, 20, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(network(rgb), fake_inception_reference(rgb, params), rtol=1e-4, atol=1e-5)
    result = evaluation.fid(batches_of(gray, 2), batches_of(gray, 3), network)
    assert result["network"] == "inception2015" and result["num_images"] == 3


def test_frozen_graph_is_found_in_the_tgz_a_directory_the_env_and_the_cache(fake_graph, offline, monkeypatch):
    path, _ = fake_graph
    archive = offline / "inception-2015-12-05.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(path, arcname="classify_image_graph_def.pb")
    x = np.full((1, 8, 8, 1), 0.5, np.float32)
    expected = evaluation.inception2015(path)(x)
    np.testing.assert_allclose(evaluation.inception2015(archive)(x), expected, rtol=1e-6)
    np.testing.assert_allclose(evaluation.inception2015(path.parent)(x), expected, rtol=1e-6)
    monkeypatch.setenv(evaluation.ENV_FID_WEIGHTS, str(archive))
    np.testing.assert_allclose(evaluation.inception2015()(x), expected, rtol=1e-6)
    monkeypatch.delenv(evaluation.ENV_FID_WEIGHTS)
    cached = offline / "cache" / "inception-2015-12-05" / "classify_image_graph_def.pb"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    np.testing.assert_allclose(evaluation.inception2015()(x), expected, rtol=1e-6)


def test_the_2015_graph_is_downloaded_once_into_the_cache(fake_graph, offline, monkeypatch):
    path, params = fake_graph
    archive = offline / "served" / "inception-2015-12-05.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(path, arcname="classify_image_graph_def.pb")
    monkeypatch.setattr(features, "INCEPTION2015_URL", archive.as_uri())
    monkeypatch.setattr(network, "reachable", lambda *a, **k: True)
    downloaded = evaluation.fid_network("inception2015")
    cached = offline / "cache" / "inception-2015-12-05" / "classify_image_graph_def.pb"
    assert downloaded.path == cached and cached.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == ["classify_image_graph_def.pb"]
    x = np.full((2, 8, 8, 1), 0.25, np.float32)
    np.testing.assert_allclose(downloaded(x), fake_inception_reference(x, params), rtol=1e-4, atol=1e-5)
    # An archive without the graph is refused, and nothing is left in the cache.
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(archive.parent, arcname="empty", recursive=False)
    with pytest.raises(evaluation.FIDUnavailableError, match="no classify_image_graph_def.pb in the archive"):
        features._fetch_inception2015(offline / "other" / "classify_image_graph_def.pb", archive.as_uri())
    assert list((offline / "other").iterdir()) == []


def test_a_graph_without_pool_3_is_refused(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        tf.identity(tf.compat.v1.placeholder(tf.float32, [None, 4], name="ExpandDims"), name="logits")
    path = tmp_path / "other.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(evaluation.FIDUnavailableError, match="has no node 'pool_3'"):
        evaluation.inception2015(path)


def test_savedmodel_loader_feeds_299_pixels_in_minus_one_one(tmp_path):
    class Fake(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
        def __call__(self, images):
            return {"pool_3": tf.reduce_mean(images, axis=[1, 2]),
                    "logits": tf.reduce_max(images, axis=[1, 2])}

    tf.saved_model.save(Fake(), str(tmp_path / "inception"))
    network = evaluation.inception2015(tmp_path / "inception")
    x = np.stack([np.full((32, 32, 1), 0.0), np.full((32, 32, 1), 1.0)]).astype(np.float32)
    np.testing.assert_allclose(network(x), [[-1.0] * 3, [127 / 128] * 3], atol=1e-6)
    assert network.name == "inception2015"


# --------------------------------------------------------------------------- the domain network


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_dir(directory, n_train=64, n_test=32)
    return directory


def test_load_labelled_reads_the_label_files_beside_the_images(idx_dir):
    batches = list(labels.load_labelled("fashion_mnist", "holdout", batch_size=10, data_dir=idx_dir))
    images = np.concatenate([b[0].numpy() for b in batches])
    got = np.concatenate([b[1].numpy() for b in batches])
    expected = data.read_idx(idx_dir / data.IDX_FILES["test"][1])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(images, data.load_arrays("fashion_mnist", "holdout", data_dir=idx_dir))
    ds = labels.load_labelled("fashion_mnist", "train", batch_size=10, data_dir=idx_dir, shuffle=True)
    assert ds.options().autotune.enabled is False  # as data.load: see data.pipeline_options
    with pytest.raises(ValueError, match="celeb_a has no class labels"):
        labels.load_labelled("celeb_a", "train", batch_size=4)


def test_domain_classifier_trains_once_and_is_cached(idx_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    network = evaluation.fid_network("domain", dataset="fashion_mnist", data_dir=idx_dir, cache_dir=cache)
    assert (cache / "domain_fid" / "fashion_mnist.keras").is_file()
    info = json.loads((cache / "domain_fid" / "fashion_mnist.json").read_text())
    assert info["num_train"] == 64 and info["epochs"] == evaluation.DOMAIN_EPOCHS
    assert network.name == "domain" and "fashion_mnist's labels" in network.description
    x = data.load_arrays("fashion_mnist", "holdout", data_dir=idx_dir)
    feats = network(x)
    assert feats.shape == (32, 128)
    # The recorded accuracy is the cached classifier's on the hold-out labels; the features
    # are its penultimate layer (after a ReLU: non-negative).
    model = keras.models.load_model(cache / "domain_fid" / "fashion_mnist.keras")
    holdout_labels = data.read_idx(idx_dir / data.IDX_FILES["test"][1])
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == holdout_labels)
    assert info["holdout_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    np.testing.assert_allclose(feats, classifier.feature_model(model).predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert feats.min() >= 0.0

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier must be reused")

    monkeypatch.setattr(labels, "load_labelled", no_training)
    again = evaluation.fid_network("domain", dataset="fashion_mnist", data_dir=idx_dir, cache_dir=cache)
    np.testing.assert_allclose(again(x), feats, rtol=1e-5, atol=1e-6)
    assert not list((cache / "domain_fid").glob(".tmp-*"))
    # Data of another size (here: a bigger copy) is not measured with the cached classifier.
    bigger = tmp_path / "bigger"
    write_mnist_dir(bigger, n_train=80, n_test=32)
    with pytest.raises(AssertionError, match="must be reused"):
        evaluation.fid_network("domain", dataset="fashion_mnist", data_dir=bigger, cache_dir=cache)


def test_domain_network_for_unlabelled_data_is_unavailable(tmp_path):
    with pytest.raises(evaluation.FIDUnavailableError, match="no domain classifier for celeb_a: celeb_a has no class labels"):
        evaluation.fid_network("domain", dataset="celeb_a", cache_dir=tmp_path)
