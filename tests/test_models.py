"""EVAE and VAE models: loss terms, training steps, shapes, saving, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from evae_tf import models
from evae_tf.config import DEFAULT_STEP
from evae_tf.distributions import EVAEPosterior

IMAGE_SHAPE = (32, 32, 1)
LATENT = 4


def images(n=8, shape=IMAGE_SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype(np.float32)


def constant_encoder(heads: dict, latent=LATENT, shape=IMAGE_SHAPE):
    """An encoder whose heads ignore the input: zero kernels, constant biases."""
    inputs = keras.Input(shape)
    flat = keras.layers.Flatten()(inputs)
    outputs = {
        name: keras.layers.Dense(
            latent, kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(value), name=name,
        )(flat)
        for name, value in heads.items()
    }
    return keras.Model(inputs, outputs)


def constant_decoder(p: float, latent=LATENT, shape=IMAGE_SHAPE):
    """A decoder whose output is the constant probability ``p`` whatever z is."""
    inputs = keras.Input((latent,))
    h = keras.layers.Dense(int(np.prod(shape)), kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(np.log(p / (1 - p))))(inputs)
    h = keras.layers.Reshape(shape)(h)
    return keras.Model(inputs, keras.layers.Activation("sigmoid")(h))


def softplus(x):
    return np.log1p(np.exp(x))


def expected_bce(x, p):
    return float(np.mean(-(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(-1)))


# --- loss terms by hand --------------------------------------------------------------------


def test_evae_loss_terms_equal_hand_computed_values():
    raw_r, raw_b, p = -1.0, 0.5, 0.3
    model = models.EVAE(
        constant_encoder({"loc": 0.2, "raw_spread": raw_r, "raw_support": raw_b}),
        constant_decoder(p), spread_floor=1e-3, support_floor=1e-3, seed=1,
    )
    x = images(8)
    terms = model.compute_terms(x, training=False)
    r = softplus(raw_r) + 1e-3
    b = softplus(raw_b) + 1e-3
    penalty = LATENT * 3 * b / (5 * 8 * r)  # n = batch size by default
    rec = expected_bce(x, p)
    np.testing.assert_allclose(float(terms["penalty"]), penalty, rtol=1e-5)
    np.testing.assert_allclose(float(terms["reconstruction"]), rec, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), rec + penalty, rtol=1e-5)


def test_evae_kernel_n_and_fixed_support_enter_the_penalty():
    model = models.EVAE(
        constant_encoder({"loc": 0.0, "raw_spread": 0.0}), constant_decoder(0.5),
        support=0.1, kernel_n=1000, spread_floor=0.01,
    )
    terms = model.compute_terms(images(8), training=False)
    r = np.log(2.0) + 0.01
    np.testing.assert_allclose(float(terms["penalty"]), LATENT * 3 * 0.1 / (5 * 1000 * r), rtol=1e-5)


def test_vae_loss_terms_equal_hand_computed_values():
    mu, log_var, p = 0.3, -0.4, 0.6
    model = models.VAE(constant_encoder({"loc": mu, "log_var": log_var}), constant_decoder(p))
    x = images(5)
    terms = model.compute_terms(x, training=False)
    kl = LATENT * 0.5 * (np.exp(log_var) + mu**2 - 1 - log_var)
    np.testing.assert_allclose(float(terms["penalty"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(terms["reconstruction"]), expected_bce(x, p), rtol=1e-5)


def test_evae_latent_sample_is_the_posterior_of_spec_section_2():
    model = models.EVAE(
        constant_encoder({"loc": 1.0, "raw_spread": 0.0, "raw_support": 1.0}), constant_decoder(0.5)
    )
    params = model.encode(images(2))
    z = model.sample_posterior(params, seed=3)
    q = EVAEPosterior(step=DEFAULT_STEP, **params)
    lo = DEFAULT_STEP * (1.0 - params["spread"]) - params["support"] / 2
    hi = DEFAULT_STEP * (1.0 + params["spread"]) + params["support"] / 2
    assert bool(tf.reduce_all((z >= lo) & (z <= hi)))
    assert np.isfinite(q.log_prob(z).numpy()).all()
    np.testing.assert_array_equal(z.numpy(), model.sample_posterior(params, seed=3).numpy())


def test_penalty_gradient_flows_to_spread_and_support_heads():
    raw_r, raw_b = 0.3, -0.2
    model = models.EVAE(
        constant_encoder({"loc": 0.0, "raw_spread": raw_r, "raw_support": raw_b}), constant_decoder(0.5),
        spread_floor=1e-3, support_floor=1e-3,
    )
    x = images(4)
    spread_bias = model.encoder.get_layer("raw_spread").bias
    support_bias = model.encoder.get_layer("raw_support").bias
    with tf.GradientTape() as tape:
        penalty = model.compute_terms(x)["penalty"]
    g_r, g_b = tape.gradient(penalty, [spread_bias, support_bias])
    r, b, n = softplus(raw_r) + 1e-3, softplus(raw_b) + 1e-3, 4
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731  d softplus / dx
    np.testing.assert_allclose(g_r.numpy(), -3 * b / (5 * n * r**2) * sig(raw_r), rtol=1e-4)
    np.testing.assert_allclose(g_b.numpy(), 3 / (5 * n * r) * sig(raw_b), rtol=1e-4)


# --- training and evaluation steps --------------------------------------------------------


@pytest.fixture(params=["evae", "vae"])
def compiled(request):
    model = models.build(request.param, IMAGE_SHAPE, LATENT, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def test_train_step_changes_weights_and_test_step_does_not(compiled):
    x = tf.constant(images(8))
    before = _weights(compiled)
    compiled.test_on_batch(x)
    after_test = _weights(compiled)
    for a, b in zip(before, after_test, strict=True):
        np.testing.assert_array_equal(a, b)
    logs = compiled.train_on_batch(x, return_dict=True)
    trainable = {id(v) for v in compiled.trainable_weights}
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(before, compiled.weights, strict=True)
               if id(w) in trainable]
    assert all(changed)
    penalty = "kernel" if isinstance(compiled, models.EVAE) else "kl"
    assert set(logs) == {"loss", "reconstruction", penalty}
    np.testing.assert_allclose(logs["loss"], logs["reconstruction"] + logs[penalty], rtol=1e-5)


def test_fit_and_evaluate_log_each_term(compiled):
    x = images(16)
    history = compiled.fit(x, batch_size=8, epochs=2, validation_data=(images(8, seed=1),), verbose=0)
    penalty = compiled.penalty_name
    for key in ("loss", "reconstruction", penalty, "val_loss", "val_reconstruction", f"val_{penalty}"):
        assert len(history.history[key]) == 2 and np.isfinite(history.history[key]).all()
    result = compiled.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert set(result) == {"loss", "reconstruction", penalty}


def test_learned_support_tracks_the_running_mean_of_b():
    model = models.build("evae", IMAGE_SHAPE, LATENT, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(8)
    np.testing.assert_array_equal(model.prior_support().numpy(), np.ones(LATENT))
    expected = tf.reduce_mean(model.encode(x, training=True)["support"], 0).numpy()
    model.train_on_batch(x)
    # The first update takes the batch mean (computed before the weights moved).
    np.testing.assert_allclose(model.prior_support().numpy(), expected, rtol=1e-5)
    assert float(model.support_updates.numpy()) == 1.0
    second = tf.reduce_mean(model.encode(x, training=True)["support"], 0).numpy()
    model.train_on_batch(x)
    blended = models.SUPPORT_MOMENTUM * expected + (1 - models.SUPPORT_MOMENTUM) * second
    np.testing.assert_allclose(model.prior_support().numpy(), blended, rtol=1e-4)


def test_fixed_support_prior_samples_stay_in_the_support():
    model = models.build("evae", IMAGE_SHAPE, LATENT, support=0.1)
    assert "raw_support" not in model.encoder.output
    z = model.sample_prior(2000, seed=0).numpy()
    assert np.abs(z).max() <= 0.05
    # Uniform on [-B/2, B/2]: variance B^2 / 12 within 5 standard errors.
    var = z.var()
    se = np.sqrt((0.1**4 / 80 - (0.1**2 / 12) ** 2) / z.size)
    assert abs(var - 0.1**2 / 12) < 5 * se


@pytest.mark.parametrize("kind", ["evae", "vae"])
def test_generate_is_deterministic_given_a_seed(kind):
    model = models.build(kind, IMAGE_SHAPE, LATENT)
    a, b = model.generate(3, seed=5).numpy(), model.generate(3, seed=5).numpy()
    c = model.generate(3, seed=6).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- shapes for every architecture -------------------------------------------------------


@pytest.mark.parametrize("kind", ["evae", "vae"])
@pytest.mark.parametrize("image_shape", [(32, 32, 1), (32, 32, 3), (64, 64, 3)])
def test_shapes_for_all_three_architectures(kind, image_shape):
    model = models.build(kind, image_shape, 8)
    x = images(2, image_shape)
    params = model.encode(x)
    assert all(v.shape == (2, 8) and v.dtype == tf.float32 for v in params.values())
    assert model.reconstruct(x).shape == (2, *image_shape)
    assert model(x, training=True).shape == (2, *image_shape)
    assert model.generate(3, seed=0).shape == (3, *image_shape)
    assert model.posterior(x).batch_shape == (2, 8)


# --- saving --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, options", [("evae", {}), ("evae", {"support": 0.5}), ("vae", {})])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind, options):
    model = models.build(kind, IMAGE_SHAPE, LATENT, seed=3, **options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(8)
    model.fit(x, batch_size=4, epochs=1, verbose=0)  # moves BatchNorm statistics and B's mean
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.reconstruct(x).numpy(), model.reconstruct(x).numpy())
    np.testing.assert_array_equal(loaded.generate(4, seed=1).numpy(), model.generate(4, seed=1).numpy())
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.get_config()["seed"] == 3
    if kind == "evae":
        assert loaded.support == model.support


# --- precision -----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("kind", ["evae", "vae"])
def test_one_step_per_precision_policy_is_finite(policy, kind):
    keras.mixed_precision.set_global_policy(policy)
    model = models.build(kind, IMAGE_SHAPE, LATENT, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = images(8)
    logs = model.train_on_batch(x, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    assert model.decoder(tf.zeros((1, LATENT))).dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in model.encode(x).values())


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("args, options, match", [
    (("gan", IMAGE_SHAPE, 4), {}, r"Unknown model kind 'gan'; expected one of: evae, vae"),
    (("vae", IMAGE_SHAPE, 4), {"support": 1.0}, r"Unknown option\(s\) \['support'\] for kind='vae'"),
    (("evae", IMAGE_SHAPE, 4), {"support": "wide"}, r"support='wide'"),
    (("evae", IMAGE_SHAPE, 4), {"support": -1.0}, r"support=-1.0"),
    (("evae", IMAGE_SHAPE, 4), {"spread_floor": 0}, r"spread_floor=0"),
    (("evae", IMAGE_SHAPE, 4), {"kernel_n": 0}, r"kernel_n=0"),
    (("evae", IMAGE_SHAPE, 0), {}, r"latent_dim=0"),
])
def test_build_rejects_bad_arguments(args, options, match):
    with pytest.raises(ValueError, match=match):
        models.build(*args, **options)


def test_encoder_without_the_needed_heads_is_rejected():
    with pytest.raises(ValueError, match=r"missing \['raw_support'\]"):
        models.EVAE(constant_encoder({"loc": 0.0, "raw_spread": 0.0}), constant_decoder(0.5))


def test_reloaded_model_keeps_its_optimizer_state(tmp_path):
    model = models.build("evae", IMAGE_SHAPE, LATENT, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.train_on_batch(images(8))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables) > 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
