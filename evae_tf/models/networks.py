"""The paper's encoder and decoder (Appendix B), from one builder.

The table and the paper's typos: docs/math.md, 'Networks (Appendix B)'.

One code path serves every input shape: the architecture is read off a small
table keyed by image size (32×32 grayscale, 32×32 RGB, 64×64 RGB), never a
per-dataset copy of the network.

Encoder: ``Conv(k×k, stride 2, same) → BatchNorm → ReLU`` per filter count,
then flatten (MNIST-style) or global average pooling (CIFAR-10, CelebA), and one
float32 ``Dense(latent_dim)`` head per posterior parameter.

Decoder: ``Dense`` to the starting feature map, a stride-1 transposed conv,
then stride-2 transposed convs up to the image size; every transposed conv but
the last is followed by ``BatchNorm → ReLU``; the last by a float32 sigmoid.

>>> enc = build_encoder((32, 32, 1), 16, heads=("loc", "raw_spread"))
>>> sorted(enc.output)
['loc', 'raw_spread']
>>> build_decoder((32, 32, 1), 16).output_shape
(None, 32, 32, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
from keras import layers

PACKAGE = "evae_tf"  # the Keras registration package of the models and layers
# Transposed convs with at most this many filters (the output layer) run as sub-pixel
# convolutions: oneDNN's deconvolution is slow for few output channels (bench/NOTES.md).
SUBPIXEL_MAX_FILTERS = 4


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The Appendix-B hyperparameters of one input shape."""

    kernel_size: int
    encoder_filters: tuple[int, ...]
    global_pool: bool
    decoder_start: tuple[int, int, int]  # feature map the Dense layer produces
    first_padding: str  # padding of the stride-1 transposed conv
    decoder_filters: tuple[int, ...]  # transposed convs before the output one


# Keyed by (height, width, channels) of the network input.
ARCHITECTURES: dict[tuple[int, int, int], Architecture] = {
    (32, 32, 1): Architecture(4, (32, 64, 128, 256), False, (1, 1, 256), "valid", (128, 64, 32)),
    (32, 32, 3): Architecture(4, (32, 64, 128, 256), True, (1, 1, 256), "valid", (128, 64, 32)),
    (64, 64, 3): Architecture(5, (64, 128, 256, 512), True, (8, 8, 512), "same", (256, 128, 64)),
}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(layers.BatchNormalization):
    """Keras' ``BatchNormalization`` computed by TensorFlow's fused kernel.

    Keras 3 normalises with separate ops (``moments``, then ``batch_normalization``) and
    differentiates through each of them; on CPU that is about a fifth of the training
    step of these networks (bench/NOTES.md). With the TensorFlow backend and a 4-D,
    channels-last input this layer calls ``FusedBatchNormV3`` (and its fused gradient)
    instead: the same function, the same weights and moving-statistics update (the biased
    batch variance, as Keras), in float32 whatever the compute dtype, as Keras does.
    Other cases (masks, renorm, synchronized statistics across replicas, other ranks or
    axes, other backends) use Keras' own computation.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.epsilon > 1.001e-5  # the fused kernel's lower bound
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            # The fused kernel returns the unbiased batch variance; Keras keeps the
            # moving average of the biased one (the variance it normalises with).
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = variance * tf.maximum(count - 1.0, 0.0) / count
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        else:
            mean = tf.cast(self.moving_mean, tf.float32)
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=mean, variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, is_training=False,
            )
        # NaN must stay visible (the training NaN guard relies on it). On CPU, grappler
        # fuses FusedBatchNorm + Relu into oneDNN's batchnorm with a ReLU post-op, whose
        # max(x, 0) turns NaN into 0; an elementwise term between the two keeps them
        # apart. It also carries a NaN of the statistics into every output of the channel,
        # as Keras' unfused computation does. Zero otherwise, and without a gradient.
        y = y + tf.stop_gradient(0.0 * mean)
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2DTranspose(layers.Conv2DTranspose):
    """Keras' ``Conv2DTranspose``: a matmul for a 1×1 input, a sub-pixel conv for few filters.

    With a 1×1 input, stride 1 and "valid" padding (the MNIST-style decoder's first
    transposed conv, 1×1×256 → 4×4×128) every output pixel is a linear map of the input
    vector: ``out[b, i, j, c] = sum_k x[b, k] · kernel[i, j, c, k] (+ bias)``. A matmul
    computes exactly that, and on CPU it is much cheaper than the deconvolution kernel
    (bench/NOTES.md: about a tenth of the training step).

    With at most ``SUBPIXEL_MAX_FILTERS`` filters, a stride above 1 and "same" padding (the
    decoders' output layers) it runs as one stride-1 conv over the s² output phases, then
    ``depth_to_space`` (``_subpixel``; docs/math.md, 'Networks (Appendix B)'): oneDNN's deconvolution
    is slow with so few output channels. Same weights, same outputs; any other
    configuration uses Keras' own computation.
    """

    def _is_matmul(self, inputs) -> bool:
        return (
            self.data_format == "channels_last"
            and tuple(inputs.shape[1:3]) == (1, 1)
            and tuple(self.strides) == (1, 1)
            and self.padding == "valid"
            and tuple(self.dilation_rate) == (1, 1)
            and self.output_padding is None
        )

    def _is_subpixel(self, inputs) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and self.data_format == "channels_last"
            and self.filters <= SUBPIXEL_MAX_FILTERS
            and self.strides[0] == self.strides[1] > 1
            and self.kernel_size[0] == self.kernel_size[1] >= self.strides[0]
            and self.padding == "same"
            and tuple(self.dilation_rate) == (1, 1)
            and self.output_padding is None
            and None not in inputs.shape[1:3]
        )

    def call(self, inputs):
        if self._is_subpixel(inputs):
            return self._activate(self._subpixel(inputs))
        if not self._is_matmul(inputs):
            return super().call(inputs)
        ops = keras.ops
        kh, kw = self.kernel_size
        channels = inputs.shape[-1]
        # kernel: (kh, kw, filters, in) -> (in, kh * kw * filters), row-major as the output.
        # Reshaped first: a 2-D transpose that grappler folds into the MatMul (transpose_b)
        # instead of copying the kernel on every call.
        kernel = ops.transpose(ops.reshape(self.kernel, (kh * kw * self.filters, channels)))
        outputs = ops.reshape(ops.matmul(ops.reshape(inputs, (-1, channels)), kernel), (-1, kh, kw, self.filters))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        return self._activate(outputs)

    def _activate(self, outputs):
        return outputs if self.activation is None else self.activation(outputs)

    def _subpixel(self, inputs):
        """The stride-s transposed conv as a stride-1 conv with s² phases, then depth_to_space.

        Keras' "same" transposed conv is the input gradient of a stride-s conv padded
        ``p = (k - s) // 2`` before: ``out[s·m + a] = sum_t x[i] · kernel[t]`` over taps
        with ``s·i + t - p = s·m + a``, i.e. ``t = a + p - s·(i - m)``. Output phase ``a``
        (one of s) thus reads inputs at offsets ``d = i - m`` in a small window, each with
        one tap, and all s² phases together are one ordinary convolution over that window
        whose output channels are ``(phase_row, phase_col, filter)``; ``depth_to_space``
        interleaves the phases into the image. Same weights, same sums.
        """
        import tensorflow as tf

        s, k = self.strides[0], self.kernel_size[0]
        taps, lo, hi = _phase_taps(k, s)
        kernel = tf.cast(self.kernel, self.compute_dtype)  # (k, k, filters, in)
        flat = tf.reshape(kernel, (k * k, self.filters, inputs.shape[-1]))
        flat = tf.concat([flat, tf.zeros_like(flat[:1])], 0)  # index k*k: no tap
        grid = tf.gather(flat, taps)  # (window, window, s, s, filters, in)
        grid = tf.transpose(grid, (0, 1, 5, 2, 3, 4))
        grid = tf.reshape(grid, (hi - lo + 1, hi - lo + 1, inputs.shape[-1], s * s * self.filters))
        padded = tf.pad(inputs, [[0, 0], [-lo, hi], [-lo, hi], [0, 0]])
        phases = tf.nn.conv2d(padded, grid, 1, "VALID")
        if self.use_bias:
            phases = phases + tf.tile(tf.cast(self.bias, self.compute_dtype), [s * s])
        return tf.nn.depth_to_space(phases, s)


def _phase_taps(k: int, s: int):
    """For a "same" transposed conv (kernel k, stride s): ``(taps, lo, hi)`` where input
    offsets ``d`` in ``[lo, hi]`` feed some output phase and ``taps[dy - lo, dx - lo, a, b]``
    is the flat kernel index ``ty·k + tx`` that carries input ``(m + dy, n + dx)`` to output
    ``(s·m + a, s·n + b)``, or ``k·k`` (a zero) if none does. See ``Conv2DTranspose._subpixel``."""
    import numpy as np

    p = (k - s) // 2
    tap = {(a, d): a + p - s * d for a in range(s) for d in range(-k, k + 1) if 0 <= a + p - s * d < k}
    lo, hi = min(d for _, d in tap), max(d for _, d in tap)
    n = hi - lo + 1
    taps = np.full((n, n, s, s), k * k, np.int32)
    for (a, dy), ty in tap.items():
        for (b, dx), tx in tap.items():
            taps[dy - lo, dx - lo, a, b] = ty * k + tx
    return taps, lo, hi


def architecture(image_shape: Sequence[int]) -> Architecture:
    """Returns the Appendix-B architecture for ``image_shape`` (H, W, C)."""
    key = tuple(int(s) for s in image_shape)
    if key not in ARCHITECTURES:
        allowed = ", ".join(str(k) for k in ARCHITECTURES)
        raise ValueError(
            f"No Appendix-B architecture for image_shape={key}; allowed: {allowed}."
        )
    return ARCHITECTURES[key]


def _check_latent_dim(latent_dim) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim <= 0:
        raise ValueError(f"`latent_dim` must be a positive integer. Received: latent_dim={latent_dim!r}")
    return latent_dim


def build_encoder(
    image_shape: Sequence[int],
    latent_dim: int,
    heads: Sequence[str],
    name: str = "encoder",
    sync_batchnorm: bool = False,
) -> keras.Model:
    """Builds the encoder: a functional model from images to a dict of heads.

    Args:
      image_shape: (H, W, C) of the input images, one of ``ARCHITECTURES``.
      latent_dim: size of each head.
      heads: names of the unconstrained outputs, e.g. ``("loc", "log_var")``.
        Heads are float32 ``Dense`` layers whatever the dtype policy.
      name: model name.
      sync_batchnorm: BatchNorm with global batch statistics across replicas
        (use under a multi-replica ``tf.distribute`` strategy).

    Returns:
      A ``keras.Model`` mapping ``[batch, H, W, C]`` to
      ``{head: [batch, latent_dim]}``.
    """
    arch = architecture(image_shape)
    _check_latent_dim(latent_dim)
    if not heads or len(set(heads)) != len(heads):
        raise ValueError(f"`heads` must be non-empty and distinct. Received: heads={heads!r}")
    inputs = keras.Input(shape=tuple(image_shape), name="images")
    h = inputs
    for i, filters in enumerate(arch.encoder_filters):
        h = layers.Conv2D(filters, arch.kernel_size, strides=2, padding="same", name=f"conv{i}")(h)
        h = BatchNormalization(synchronized=sync_batchnorm, name=f"bn{i}")(h)
        h = layers.ReLU(name=f"relu{i}")(h)
    h = layers.GlobalAveragePooling2D(name="pool")(h) if arch.global_pool else layers.Flatten(name="flatten")(h)
    outputs = {head: layers.Dense(latent_dim, dtype="float32", name=head)(h) for head in heads}
    return keras.Model(inputs, outputs, name=name)


def build_decoder(
    image_shape: Sequence[int], latent_dim: int, name: str = "decoder", sync_batchnorm: bool = False
) -> keras.Model:
    """Builds the decoder: a functional model from ``[batch, latent_dim]`` latents
    to ``[batch, H, W, C]`` float32 Bernoulli means in (0, 1)."""
    arch = architecture(image_shape)
    _check_latent_dim(latent_dim)
    channels = int(image_shape[-1])
    inputs = keras.Input(shape=(latent_dim,), name="z")
    h = layers.Dense(arch.decoder_start[0] * arch.decoder_start[1] * arch.decoder_start[2], name="fc")(inputs)
    h = layers.Reshape(arch.decoder_start, name="reshape")(h)
    for i, filters in enumerate(arch.decoder_filters):
        stride, padding = (1, arch.first_padding) if i == 0 else (2, "same")
        h = Conv2DTranspose(
            filters, arch.kernel_size, strides=stride, padding=padding, name=f"deconv{i}"
        )(h)
        h = BatchNormalization(synchronized=sync_batchnorm, name=f"bn{i}")(h)
        h = layers.ReLU(name=f"relu{i}")(h)
    h = Conv2DTranspose(channels, arch.kernel_size, strides=2, padding="same", name="logits")(h)
    outputs = layers.Activation("sigmoid", dtype="float32", name="images")(h)
    return keras.Model(inputs, outputs, name=name)
