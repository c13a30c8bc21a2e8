"""Golden shapes of the Appendix-B networks (docs/math.md, 'Networks (Appendix B)')."""

import keras
import numpy as np
import pytest

from evae_tf.models import networks

# image shape -> (encoder feature map before the heads, first decoder map, decoder maps)
GOLDEN = {
    (32, 32, 1): ((2, 2, 256), (1, 1, 256), [(4, 4, 128), (8, 8, 64), (16, 16, 32), (32, 32, 1)]),
    (32, 32, 3): ((2, 2, 256), (1, 1, 256), [(4, 4, 128), (8, 8, 64), (16, 16, 32), (32, 32, 3)]),
    (64, 64, 3): ((4, 4, 512), (8, 8, 512), [(8, 8, 256), (16, 16, 128), (32, 32, 64), (64, 64, 3)]),
}


@pytest.mark.parametrize("image_shape", list(GOLDEN))
def test_encoder_golden_shapes(image_shape):
    feature_map, _, _ = GOLDEN[image_shape]
    enc = networks.build_encoder(image_shape, 8, heads=("loc", "raw_spread", "raw_support"))
    assert enc.get_layer("conv3").output.shape[1:] == feature_map
    arch = networks.architecture(image_shape)
    assert enc.get_layer("conv0").kernel_size == (arch.kernel_size,) * 2
    pooled = "pool" if arch.global_pool else "flatten"
    expected_features = feature_map[-1] if arch.global_pool else int(np.prod(feature_map))
    assert enc.get_layer(pooled).output.shape[1:] == (expected_features,)
    out = enc(np.zeros((3, *image_shape), np.float32))
    assert sorted(out) == ["loc", "raw_spread", "raw_support"]
    assert all(v.shape == (3, 8) for v in out.values())


@pytest.mark.parametrize("image_shape", list(GOLDEN))
def test_decoder_golden_shapes(image_shape):
    _, start, maps = GOLDEN[image_shape]
    dec = networks.build_decoder(image_shape, 8)
    assert dec.get_layer("reshape").output.shape[1:] == start
    got = [dec.get_layer(f"deconv{i}").output.shape[1:] for i in range(3)]
    got.append(dec.get_layer("logits").output.shape[1:])
    assert got == maps
    images = dec(np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)).numpy()
    assert images.shape == (2, *image_shape)
    assert ((images > 0) & (images < 1)).all()


def test_mnist_decoder_uses_batchnorm_relu_on_all_but_the_last_deconv():
    dec = networks.build_decoder((32, 32, 1), 4)
    kinds = [type(layer).__name__ for layer in dec.layers]
    assert kinds.count("Conv2DTranspose") == 4
    assert kinds.count("BatchNormalization") == 3
    assert kinds[-2:] == ["Conv2DTranspose", "Activation"]


def test_heads_and_output_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    enc = networks.build_encoder((32, 32, 1), 4, heads=("loc", "log_var"))
    dec = networks.build_decoder((32, 32, 1), 4)
    assert enc.get_layer("conv0").compute_dtype == "float16"
    out = enc(np.zeros((1, 32, 32, 1), np.float32))
    assert {v.dtype.name for v in out.values()} == {"float32"}
    assert dec(np.zeros((1, 4), np.float32)).dtype.name == "float32"


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=(28, 28, 1), latent_dim=8), r"image_shape=\(28, 28, 1\); allowed"),
    (dict(image_shape=(32, 32, 1), latent_dim=0), r"latent_dim=0"),
    (dict(image_shape=(32, 32, 1), latent_dim=2.5), r"latent_dim=2.5"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        networks.build_decoder(**kwargs)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_fused_batchnorm_matches_keras_batchnorm(policy):
    """networks.BatchNormalization (TF's fused kernel) computes what Keras' layer does:
    outputs, input and weight gradients, moving statistics, inference outputs."""
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    x = tf.constant(np.random.default_rng(1).normal(1.0, 2.0, size=(6, 5, 4, 3)), tf.float32)
    x = tf.cast(x, keras.mixed_precision.global_policy().compute_dtype)
    fused = networks.BatchNormalization(momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.set_weights([np.linspace(0.5, 1.5, 3), np.linspace(-1, 1, 3), np.full(3, 0.2), np.full(3, 3.0)])
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.range(72.0, dtype=tf.float32)[:y.shape[-1]])
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False)])
    tol = 1e-5 if policy == "float32" else 2e-2
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)), np.asarray(tf.cast(want, tf.float32)),
                                   rtol=tol, atol=tol)
    assert results[0][0].dtype == results[1][0].dtype


def test_fused_batchnorm_serialises_and_keeps_keras_weights_layout():
    dec = networks.build_decoder((32, 32, 1), 4)
    bn = dec.get_layer("bn0")
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert [w.path.split("/")[-1] for w in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    clone = keras.models.model_from_json(dec.to_json())
    assert type(clone.get_layer("bn0")) is networks.BatchNormalization
    clone.set_weights(dec.get_weights())
    z = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(clone(z).numpy(), dec(z).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_relu_keeps_nan_visible_in_graphs(training):
    """A NaN entering BatchNorm → ReLU comes out as NaN in a tf.function too (grappler's
    fused oneDNN batchnorm+ReLU would turn it into 0 and hide a diverged run)."""
    import tensorflow as tf

    bn = networks.BatchNormalization()
    relu = keras.layers.ReLU()
    # (oneDNN fuses only for enough channels: 8 does, 2 does not)
    x = np.random.default_rng(0).normal(size=(16, 4, 4, 8)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    bn.build(x.shape)
    step = tf.function(lambda x: relu(bn(x, training=training)))
    out = step(tf.constant(x)).numpy()
    assert np.isnan(out[0, 0, 0, 0])
    assert np.isnan(out[..., 0]).all() == training  # NaN statistics: the whole channel
    assert np.isfinite(out[..., 1]).all()


def _assert_layers_agree(fast, plain, x, weights, loss_weights, tol):
    """``fast`` and ``plain`` built with the same ``weights`` give the same outputs and the
    same gradients of ``sum(y * loss_weights)`` for input, kernel and bias; returns ``fast(x)``."""
    import tensorflow as tf

    results = []
    for layer in (fast, plain):
        layer.build(x.shape)
        layer.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * loss_weights)
        results.append([y, *tape.gradient(loss, [x, layer.kernel, layer.bias])])
    assert results[0][0].dtype == results[1][0].dtype
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)), np.asarray(tf.cast(want, tf.float32)),
                                   rtol=tol, atol=tol)
    return results[0][0]


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_matmul_transposed_conv_matches_keras(policy):
    """networks.Conv2DTranspose on a 1×1 input (a matmul) computes what Keras' layer does,
    outputs and gradients; other inputs take Keras' path."""
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    fast = networks.Conv2DTranspose(6, 4, padding="valid", activation="relu")
    plain = keras.layers.Conv2DTranspose(6, 4, padding="valid", activation="relu")
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 1, 1, 5)), tf.float32)
    weights = [np.random.default_rng(3).normal(size=(4, 4, 6, 5)), np.linspace(-1, 1, 6)]
    y = _assert_layers_agree(fast, plain, x, weights, tf.range(6.0), 1e-5 if policy == "float32" else 1e-2)
    assert fast._is_matmul(x)
    assert y.shape == (3, 4, 4, 6)
    assert not fast._is_matmul(tf.zeros((1, 2, 2, 5)))


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize(("filters", "kernel", "stride", "size"),
                         [(1, 4, 2, 8), (3, 5, 2, 6), (2, 3, 2, 5), (1, 4, 4, 3), (4, 5, 3, 4)])
def test_subpixel_transposed_conv_matches_keras(policy, filters, kernel, stride, size):
    """networks.Conv2DTranspose with few filters, stride > 1 and "same" padding (a
    stride-1 conv over s² phases, then depth_to_space) computes what Keras' layer does,
    outputs and gradients, for even and odd kernels and strides; other shapes take Keras' path."""
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    fast = networks.Conv2DTranspose(filters, kernel, strides=stride, padding="same", activation="sigmoid")
    plain = keras.layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same", activation="sigmoid")
    x = tf.constant(np.random.default_rng(2).normal(size=(2, size, size + 1, 5)), tf.float32)
    weights = [np.random.default_rng(3).normal(size=(kernel, kernel, filters, 5)) / kernel,
               np.linspace(-1, 1, filters)]
    output_shape = (2, size * stride, (size + 1) * stride, filters)
    loss_weights = tf.constant(np.random.default_rng(4).normal(size=output_shape), tf.float32)
    y = _assert_layers_agree(fast, plain, x, weights, loss_weights, 1e-5 if policy == "float32" else 2e-2)
    assert fast._is_subpixel(x)
    assert y.shape == output_shape
    wide = networks.Conv2DTranspose(networks.SUBPIXEL_MAX_FILTERS + 1, kernel, strides=stride, padding="same")
    valid = networks.Conv2DTranspose(filters, kernel, strides=stride, padding="valid")
    assert not wide._is_subpixel(x) and not valid._is_subpixel(x)


def test_phase_taps_cover_every_kernel_tap_once():
    """Each of the k² kernel taps feeds exactly one (offset, phase) pair: the sub-pixel
    conv uses every weight once, as the transposed conv does."""
    for k, s in [(4, 2), (5, 2), (3, 2), (4, 4), (5, 3), (2, 2)]:
        taps, lo, hi = networks._phase_taps(k, s)
        used = taps[taps < k * k]
        assert sorted(used.tolist()) == list(range(k * k)), (k, s)
        assert taps.shape == (hi - lo + 1, hi - lo + 1, s, s)


def test_mnist_decoder_first_deconv_takes_the_matmul_path():
    dec = networks.build_decoder((32, 32, 1), 4)
    first = dec.get_layer("deconv0")
    assert isinstance(first, networks.Conv2DTranspose)
    assert first._is_matmul(dec.get_layer("reshape").output)
    assert not dec.get_layer("deconv1")._is_matmul(dec.get_layer("relu0").output)
    assert dec.get_layer("logits")._is_subpixel(dec.get_layer("relu2").output)
    assert not dec.get_layer("deconv2")._is_subpixel(dec.get_layer("relu1").output)
