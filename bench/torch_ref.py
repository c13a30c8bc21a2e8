"""A same-network PyTorch reference for the training step (optional: ``pip install '.[bench]'``).

The paper's 32×32×1 networks as ``evae_tf.models.networks`` builds them, in PyTorch:

* encoder: four ``Conv 4×4, stride 2, same`` (32, 64, 128, 256 filters; "same" is a padding
  of 1 at these sizes) each with BatchNorm and ReLU, flatten, one dense head per posterior
  parameter (EVAE: ``loc``, ``raw_spread``, ``raw_support``; VAE: ``loc``, ``log_var``);
* decoder: dense to 256 (a 1×1×256 map), ``ConvTranspose 4×4 valid`` to 4×4×128, then
  ``ConvTranspose 4×4 stride 2`` to 8×8×64, 16×16×32 and 32×32×1, BatchNorm and ReLU after
  each but the last, a sigmoid at the end;

and the same loss as ``evae_tf.models`` / ``evae_tf.models.losses``: ``r = softplus + 1e-3``,
``B = softplus + 1e-3``, ``z = b (mu + r K) + B (V - 1/2)`` with ``K`` the median of three
``Unif[-1, 1]`` draws, binary cross-entropy summed over pixels (probabilities clipped to
``[1e-7, 1 - 1e-7]``) plus ``sum_d 3 B / (5 n r)``, averaged over the batch; the running mean
of B is updated after each step. The VAE: ``z = mu + exp(log_var / 2) eps`` and the analytic
KL. Adam (learning rate 1e-4, Keras' epsilon 1e-7), BatchNorm with Keras' momentum and
epsilon. Batch 100, float32, one fixed in-memory batch (as the TF figures' ``Stepper``).

Only the speed is compared: weights are PyTorch's default initialisation, not Keras'.
"""

from __future__ import annotations

import time
from typing import Any

BATCH = 100
LATENT_DIM = 64
STEP_SIZE = 100.0 ** (-2.0 / 9.0)  # evae_tf.config.DEFAULT_STEP
FLOOR = 1e-3
BCE_EPSILON = 1e-7
KERAS_BN = {"momentum": 0.01, "eps": 1e-3}  # Keras' momentum 0.99 is PyTorch's 0.01
ENCODER_FILTERS = (32, 64, 128, 256)
DECODER_FILTERS = (128, 64, 32)


def available() -> str | None:
    """None when torch imports, else the one-line reason the reference is skipped."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"PyTorch is not installed ({e.name}); pip install '.[bench]' for the reference"
    return None


def build(kind: str = "evae", latent_dim: int = LATENT_DIM, seed: int = 0):
    """``(encoder, decoder, heads)``: the 32×32×1 networks as PyTorch modules."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 1
    for filters in ENCODER_FILTERS:
        layers += [nn.Conv2d(channels, filters, 4, stride=2, padding=1),
                   nn.BatchNorm2d(filters, **KERAS_BN), nn.ReLU()]
        channels = filters
    encoder = nn.Sequential(*layers, nn.Flatten())
    names = ("loc", "raw_spread", "raw_support") if kind == "evae" else ("loc", "log_var")
    heads = nn.ModuleDict({name: nn.Linear(2 * 2 * 256, latent_dim) for name in names})
    layers = [nn.Linear(latent_dim, 256), nn.Unflatten(1, (256, 1, 1))]
    channels = 256
    for i, filters in enumerate(DECODER_FILTERS):
        stride, padding = (1, 0) if i == 0 else (2, 1)
        layers += [nn.ConvTranspose2d(channels, filters, 4, stride=stride, padding=padding),
                   nn.BatchNorm2d(filters, **KERAS_BN), nn.ReLU()]
        channels = filters
    layers += [nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1), nn.Sigmoid()]
    decoder = nn.Sequential(*layers)
    return encoder, decoder, heads


def _bce_sum(x, x_hat):
    import torch

    p = torch.clamp(x_hat, BCE_EPSILON, 1.0 - BCE_EPSILON)
    return -(x * torch.log(p) + (1.0 - x) * torch.log1p(-p)).flatten(1).sum(1)


def loss_terms(kind: str, encoder, decoder, heads, x, support_mean=None):
    """``(loss, params)`` of one batch: the EVAE or VAE objective, batch mean."""
    import torch
    import torch.nn.functional as F

    h = encoder(x)
    out = {name: head(h) for name, head in heads.items()}
    loc = out["loc"]
    if kind == "evae":
        spread = F.softplus(out["raw_spread"]) + FLOOR
        support = F.softplus(out["raw_support"]) + FLOOR
        k = torch.median(torch.rand(3, *loc.shape) * 2.0 - 1.0, dim=0).values
        z = STEP_SIZE * (loc + spread * k) + support * (torch.rand_like(loc) - 0.5)
        penalty = (3.0 * support / (5.0 * x.shape[0] * spread)).sum(1)
        params = {"support": support}
    else:
        log_var = out["log_var"]
        z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
        penalty = 0.5 * (torch.exp(log_var) + loc * loc - 1.0 - log_var).sum(1)
        params = {}
    x_hat = decoder(z)
    return (_bce_sum(x, x_hat) + penalty).mean(), params


class TorchStepper:
    """The PyTorch training step on a fixed batch; ``run(steps)`` gives seconds per step."""

    def __init__(self, kind: str = "evae", seed: int = 0):
        import numpy as np
        import torch

        self.kind = kind
        self.encoder, self.decoder, self.heads = build(kind, seed=seed)
        self.parameters = [*self.encoder.parameters(), *self.heads.parameters(),
                           *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(self.parameters, lr=1e-4, eps=1e-7)
        batch = np.random.default_rng(seed).random((BATCH, 32, 32, 1), dtype=np.float32)
        self.x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()  # NCHW
        self.support_mean = torch.ones(LATENT_DIM)
        for m in (self.encoder, self.decoder, self.heads):
            m.train()
        self.run(3)  # warm-up: allocator and oneDNN primitive caches

    def step(self):
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        loss, params = loss_terms(self.kind, self.encoder, self.decoder, self.heads, self.x)
        loss.backward()
        self.optimizer.step()
        if "support" in params:
            with torch.no_grad():
                self.support_mean.mul_(0.99).add_(0.01 * params["support"].mean(0))
        return loss.detach()

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps (PyTorch on CPU is synchronous)."""
        start = time.perf_counter()
        loss = None
        for _ in range(steps):
            loss = self.step()
        loss.item()
        return (time.perf_counter() - start) / steps


def parameter_count(kind: str = "evae") -> int:
    encoder, decoder, heads = build(kind)
    return sum(p.numel() for m in (encoder, decoder, heads) for p in m.parameters())


def runtime() -> dict[str, Any]:
    """PyTorch's version and threading, for the record."""
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
