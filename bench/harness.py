"""What every benchmark figure shares: the :class:`Context`, the paper's Fashion-MNIST
network as a timed training step (:class:`Stepper`), and small timing helpers.

Every figure takes a :class:`Context` (``quick`` mode, ``repeats``, a log function and a
scratch directory). Absolute numbers are medians over repeats with quartiles and range;
every comparison is a ratio of measurements interleaved in the same process.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import scaled

BATCH = 100
IMAGE_SHAPE = (32, 32, 1)  # Fashion-MNIST as delivered to the paper's network
LATENT_DIM = 64  # the paper's Fashion-MNIST sharpness runs use d_z = 64
DATASET = "fashion_mnist"
ROOT = Path(__file__).resolve().parent.parent  # where ``python -m bench.<tool>`` runs


class Skip(Exception):
    """A figure that cannot run on this machine (the message says why)."""


@dataclasses.dataclass
class Context:
    """A run's settings and what its figures share (a scratch directory, built steppers)."""

    quick: bool = False
    repeats: int = 7
    log: Callable[[str], None] = print
    workdir: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="evae-bench-")))
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def steps(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# --------------------------------------------------------------------------- models and steps


def train_config(kind: str = "evae", precision: str = "float32", **overrides):
    """The library's TrainConfig for the paper's Fashion-MNIST network (batch 100, d_z 64)."""
    from evae_tf.config import ModelConfig, TrainConfig

    model = ModelConfig(kind=kind, image_shape=IMAGE_SHAPE, latent_dim=LATENT_DIM, seed=0)
    return TrainConfig(dataset=DATASET, model=model, batch_size=BATCH, precision=precision,
                       **overrides)


def build_model(kind: str, precision: str = "float32", jit_compile: bool | None = None):
    """A compiled model exactly as ``evae_tf.training`` builds it (``runs.build_model``).

    ``jit_compile=None`` keeps the library's choice; True / False force XLA on or off.
    """
    import keras

    from evae_tf import runs

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = runs.build_model(train_config(kind, precision))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if jit_compile is not None:
        model.jit_compile = jit_compile
    model.make_train_function(force=True)
    return model


def synthetic_batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((BATCH, *IMAGE_SHAPE), dtype=np.float32)


class Stepper:
    """Calls a model's compiled ``train_function`` (what ``fit`` calls each step) on a
    fixed in-memory batch, so that only the training step is timed."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        batch = synthetic_batch()
        self.iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
        start = time.perf_counter()
        self.run(1)
        self.first_call_s = time.perf_counter() - start  # tracing (and XLA compilation)
        self.run(2)

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        logs = None
        for _ in range(steps):
            logs = self.model.train_function(self.iterator)
        float(logs["loss"])  # the value exists on the host: the steps have finished
        return (time.perf_counter() - start) / steps


def library_stepper(ctx: Context, kind: str = "evae") -> Stepper:
    """One shared float32 stepper per kind with the library's settings."""
    key = f"stepper/{kind}"
    if key not in ctx.cache:
        ctx.cache[key] = Stepper(build_model(kind))
    return ctx.cache[key]


def training_pipeline():
    """The training batches exactly as ``evae_tf.training`` reads them (real Fashion-MNIST)."""
    from evae_tf import training

    return training.datasets(train_config("evae"))[0]


def find_data(ctx: Context):
    """The Fashion-MNIST source; raises :class:`Skip` when this machine has none."""
    if "source" not in ctx.cache:
        from evae_tf import data

        try:
            ctx.cache["source"] = data.find_source(DATASET, None)
        except Exception as e:  # noqa: BLE001 - reported in the figure
            ctx.cache["source"] = e
    source = ctx.cache["source"]
    if isinstance(source, Exception):
        raise Skip(f"no Fashion-MNIST data: {source}")
    return source


# --------------------------------------------------------------------------- timing helpers


def ms(s):
    """A seconds summary in milliseconds."""
    return scaled(s, 1000.0)


def matmul_block(n: int = 2048, calls: int = 5) -> Callable[[], float]:
    """Seconds per call of an ``n`` × ``n`` float32 matmul (the in-run matmul peak)."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[:1, :1]))
    float(matmul(a, b))

    def block() -> float:
        start = time.perf_counter()
        out = None
        for _ in range(calls):
            out = matmul(a, b)
        float(out)
        return (time.perf_counter() - start) / calls

    return block


def timed(fn) -> float:
    """Seconds of ``fn()``, until its (tensor) result is on the host."""
    import tensorflow as tf

    start = time.perf_counter()
    out = fn()
    float(tf.reduce_sum(out))
    return time.perf_counter() - start


def timed_py(fn) -> float:
    """Seconds of ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
