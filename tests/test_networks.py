"""Golden shapes of the Appendix-B networks (spec §6)."""

import keras
import numpy as np
import pytest

from evae_tf import networks

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
