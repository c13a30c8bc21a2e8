"""The EVAE and the baseline VAE as Keras 3 subclassed models, with the paper's networks.

>>> model = build("evae", image_shape=(32, 32, 1), latent_dim=16)
>>> model.compile(optimizer=keras.optimizers.Adam(1e-4))
>>> model.fit(images, epochs=1)                    # images: [N, 32, 32, 1] in [0, 1]
>>> model.generate(8, seed=0).shape                 # TensorShape([8, 32, 32, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

from evae_tf import checks
from evae_tf.models import losses, networks
from evae_tf.models.base import LatentVariableModel
from evae_tf.models.evae import EVAE, SUPPORT_MOMENTUM, check_support
from evae_tf.models.vae import VAE

__all__ = [
    "EVAE",
    "MODELS",
    "SUPPORT_MOMENTUM",
    "VAE",
    "LatentVariableModel",
    "build",
    "kind_of",
    "losses",
    "networks",
]

MODELS = {"evae": EVAE, "vae": VAE}
_OPTIONS = {
    "evae": ("support", "step", "spread_floor", "support_floor", "kernel_n", "seed"),
    "vae": ("seed",),
}


def kind_of(model) -> str:
    """``"evae"`` or ``"vae"``: the kind of a model; ``TypeError`` for anything else."""
    for kind, cls in MODELS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"expected an EVAE or VAE (evae_tf.models), received {type(model).__name__}")


def build(
    kind: str, image_shape: Sequence[int], latent_dim: int, sync_batchnorm: bool = False, **options
) -> LatentVariableModel:
    """Builds an uncompiled EVAE (``"evae"``) or VAE (``"vae"``) with the paper's networks.

    Args:
      kind: ``"evae"`` or ``"vae"``.
      image_shape: (H, W, C), one of ``networks.ARCHITECTURES``.
      latent_dim: the latent dimension ``d_z``.
      sync_batchnorm: global BatchNorm statistics across replicas (multi-replica training).
      **options: EVAE: ``support``, ``step``, ``spread_floor``, ``support_floor``,
        ``kernel_n``, ``seed``; VAE: ``seed``.
    """
    if kind not in MODELS:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of: {', '.join(MODELS)}.")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for kind={kind!r}; allowed: {', '.join(_OPTIONS[kind])}.")
    checks.positive_int("latent_dim", latent_dim)
    if kind == "evae":
        heads = EVAE.heads_for(check_support(options.get("support", "learned")))
    else:
        heads = VAE.heads
    encoder = networks.build_encoder(image_shape, latent_dim, heads=heads, sync_batchnorm=sync_batchnorm)
    decoder = networks.build_decoder(image_shape, latent_dim, sync_batchnorm=sync_batchnorm)
    return MODELS[kind](encoder, decoder, name=kind, **options)
