"""evae_tf.samplers: the ex-post Gaussian mixture and the paper's prior as latent samplers.

Tolerances are multiples of the standard error that the sample size implies.
"""

import numpy as np
import pytest
import tensorflow as tf

from evae_tf import models, samplers
from evae_tf.samplers import GaussianMixtureSampler, SamplerError

# A known 3-component mixture in 2 dimensions, well separated.
WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[0.0, 0.0], [6.0, 1.0], [-3.0, 7.0]])
COVS = np.array([[[1.0, 0.3], [0.3, 0.5]],
                 [[0.4, -0.1], [-0.1, 0.8]],
                 [[2.0, 0.0], [0.0, 0.3]]])
Z_SCORE = 5.0  # |estimate - truth| <= 5 standard errors: fails by chance with p < 1e-6


def draw_known(n, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.choice(3, size=n, p=WEIGHTS)
    eps = rng.standard_normal((n, 2))
    return MEANS[k] + np.einsum("nij,nj->ni", np.linalg.cholesky(COVS)[k], eps)


def test_fit_recovers_a_known_mixture():
    n = 30_000
    fitted = samplers.fit_gaussian_mixture(draw_known(n), n_components=3, seed=0)
    order = [int(np.argmin(np.linalg.norm(fitted.means - m, axis=1))) for m in MEANS]
    assert sorted(order) == [0, 1, 2]
    for k, j in enumerate(order):
        n_k = n * WEIGHTS[k]
        # Weight: binomial proportion, SE sqrt(w (1 - w) / n).
        assert abs(fitted.weights[j] - WEIGHTS[k]) <= Z_SCORE * np.sqrt(WEIGHTS[k] * (1 - WEIGHTS[k]) / n)
        # Mean: SE sqrt(S_ii / n_k).
        np.testing.assert_array_less(np.abs(fitted.means[j] - MEANS[k]), Z_SCORE * np.sqrt(np.diag(COVS[k]) / n_k))
        # Covariance entry of a Gaussian: SE sqrt((S_ii S_jj + S_ij^2) / n_k).
        var = np.diag(COVS[k])
        se = np.sqrt((np.outer(var, var) + COVS[k] ** 2) / n_k)
        np.testing.assert_array_less(np.abs(fitted.covariances[j] - COVS[k]), Z_SCORE * se)
    assert fitted.fit_info["converged"] and fitted.fit_info["n_examples"] == n


def test_tensorflow_sampling_matches_the_mixture_moments():
    sampler = GaussianMixtureSampler(WEIGHTS, MEANS, COVS)
    n = 200_000
    z = sampler.sample(n, seed=3).numpy().astype(np.float64)
    mean, cov = sampler.moments()
    np.testing.assert_array_less(np.abs(z.mean(0) - mean), Z_SCORE * np.sqrt(np.diag(cov) / n))
    centred = z - mean
    products = np.einsum("ni,nj->nij", centred, centred)  # each entry's SE from its own spread
    se = products.std(axis=0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(products.mean(0) - cov), Z_SCORE * se)
    # The moments themselves: the closed form against a direct mixture average.
    assert np.allclose(mean, WEIGHTS @ MEANS)


def test_component_frequencies_follow_the_weights():
    # Well-separated components: the nearest mean identifies the component of a draw.
    n = 50_000
    z = GaussianMixtureSampler(WEIGHTS, MEANS, COVS * 0.01).sample(n, seed=1).numpy()
    counts = np.bincount(np.argmin(((z[:, None] - MEANS[None]) ** 2).sum(-1), axis=1), minlength=3)
    np.testing.assert_array_less(np.abs(counts / n - WEIGHTS), Z_SCORE * np.sqrt(WEIGHTS * (1 - WEIGHTS) / n))


def test_same_seed_same_draws_and_a_file_round_trip(tmp_path):
    sampler = GaussianMixtureSampler(WEIGHTS, MEANS, COVS, fit_info={"covariance_type": "full"})
    a, b, c = sampler.sample(64, seed=7), sampler.sample(64, seed=7), sampler.sample(64, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(sampler.draw(64, tf.constant([7, 0], tf.int32)), a)
    path = tmp_path / "sampler.npz"
    sampler.save(path)
    loaded = GaussianMixtureSampler.load(path)
    np.testing.assert_array_equal(loaded.sample(64, seed=7), a)
    assert loaded.fit_info == {"covariance_type": "full"}
    assert [p.name for p in tmp_path.iterdir()] == ["sampler.npz"]  # no temporary left


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_other_covariance_types_give_full_positive_definite_matrices(covariance_type):
    z = draw_known(3000)
    fitted = samplers.fit_gaussian_mixture(z, n_components=3, covariance_type=covariance_type)
    assert fitted.covariances.shape == (3, 2, 2)
    assert np.all(np.linalg.eigvalsh(fitted.covariances) > 0)
    if covariance_type != "tied":
        off_diagonal = fitted.covariances[:, 0, 1]
        np.testing.assert_array_equal(off_diagonal, 0.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_components=11), "cannot fit 11 components to 10 latents"),
    (dict(n_components=0), "components must be a positive integer; received 0"),
    (dict(covariance_type="banana"), "covariance type must be one of full, tied, diag, spherical; received 'banana'"),
])
def test_bad_fit_arguments_get_one_clear_line(kwargs, message):
    with pytest.raises(SamplerError, match=message) as info:
        samplers.fit_gaussian_mixture(np.random.default_rng(0).normal(size=(10, 2)), **kwargs)
    assert "\n" not in str(info.value)


def test_a_degenerate_covariance_is_refused():
    bad = COVS.copy()
    bad[1] = [[1.0, 1.0], [1.0, 1.0]]  # rank one
    with pytest.raises(SamplerError, match="not positive definite"):
        GaussianMixtureSampler(WEIGHTS, MEANS, bad)
    with pytest.raises(SamplerError, match="sum to 1"):
        GaussianMixtureSampler(WEIGHTS * 2, MEANS, COVS)


def test_collapsed_latents_still_fit_thanks_to_the_regulariser():
    z = np.zeros((500, 4))
    z[:, 0] = np.random.default_rng(0).normal(size=500)  # three dimensions unused
    fitted = samplers.fit_gaussian_mixture(z, n_components=2)
    assert np.all(np.linalg.eigvalsh(fitted.covariances) > 0)


@pytest.mark.parametrize("content", [None, b"", b"not a zip file", "truncated", "wrong-format"])
def test_missing_or_corrupt_files_get_one_line(tmp_path, content):
    path = tmp_path / "sampler.npz"
    if content == "truncated":
        GaussianMixtureSampler(WEIGHTS, MEANS, COVS).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "wrong-format":
        np.savez(path, weights=WEIGHTS, means=MEANS, covariances=COVS, meta=np.array('{"format": "x"}'))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SamplerError) as info:
        GaussianMixtureSampler.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_aggregate_posterior_is_one_reproducible_draw_per_image():
    model = models.build("evae", image_shape=(32, 32, 1), latent_dim=4, seed=0)
    x = np.random.default_rng(0).uniform(size=(10, 32, 32, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
    z1 = samplers.aggregate_posterior(model, ds, seed=5, progress=False)
    z2 = samplers.aggregate_posterior(model, ds, seed=5, progress=False)
    assert z1.shape == (10, 4)
    np.testing.assert_array_equal(z1, z2)
    # Each draw lies in its posterior's support [b(mu - r) - B/2, b(mu + r) + B/2].
    params = {k: v.numpy() for k, v in model.encode(x).items()}
    b = model.step
    low = b * (params["loc"] - params["spread"]) - params["support"] / 2
    high = b * (params["loc"] + params["spread"]) + params["support"] / 2
    assert np.all(z1 >= low - 1e-5) and np.all(z1 <= high + 1e-5)
    assert not np.array_equal(z1, samplers.aggregate_posterior(model, ds, seed=6, progress=False))


def test_generate_uses_the_attached_sampler_and_the_prior_on_request():
    model = models.build("vae", image_shape=(32, 32, 1), latent_dim=2, seed=0)
    sampler = GaussianMixtureSampler(WEIGHTS, MEANS, COVS)
    prior = model.generate(4, seed=1)
    np.testing.assert_array_equal(prior, model.decode(model.sample_prior(4, seed=1)))
    model.latent_sampler = sampler
    np.testing.assert_array_equal(model.generate(4, seed=1), model.decode(sampler.sample(4, seed=1)))
    np.testing.assert_array_equal(model.generate(4, seed=1, sampler="prior"), prior)
    with pytest.raises(ValueError, match="Received: sampler='gmm'"):
        model.generate(4, seed=1, sampler="gmm")
