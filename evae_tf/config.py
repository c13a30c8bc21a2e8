"""Typed configuration: one dataclass for the model, one for training.

Both round-trip through JSON (``to_dict`` / ``from_dict``), and a run directory's
``config.json`` holds a ``TrainConfig`` whose ``model`` field is enough to rebuild
the model (``evae_tf.models.build(**config.model.build_kwargs())``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from evae_tf import checks, defaults
from evae_tf.files import write_json_atomic

DEFAULT_STEP = defaults.STEP
MODEL_KINDS = defaults.MODEL_KINDS
COVARIANCE_TYPES = defaults.COVARIANCE_TYPES
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
# The FID feature networks (evae_tf.evaluation.features) and the --fid choices of the command lines.
FID_NETWORKS = ("inception2015", "keras_inception", "domain")
FID_CHOICES = (*FID_NETWORKS, "none")
DEFAULT_FID = "inception2015"  # the paper's (and the published FIDs') network


def parse_support(value: Any) -> str | float:
    """Parses an EVAE ``support`` given as text or a number: ``"learned"`` (any case, any
    surrounding space) or a positive number (fixed B); the rule is :func:`checks.support`."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "learned":
            return "learned"
        try:
            value = float(text)
        except ValueError:
            return checks.support(value)  # raises, naming what was received
    return checks.support(value)


@dataclasses.dataclass
class ModelConfig:
    """What ``evae_tf.models.build`` needs to rebuild a model."""

    kind: str = "evae"
    image_shape: tuple[int, int, int] = (32, 32, 1)
    latent_dim: int = defaults.LATENT_DIM
    # EVAE only (docs/math.md, 'Parameterisation and floors', 'The EVAE loss and its sign'):
    support: str | float = defaults.SUPPORT
    step: float = defaults.STEP
    spread_floor: float = defaults.SPREAD_FLOOR
    support_floor: float = defaults.SUPPORT_FLOOR
    kernel_n: int | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"Unknown model kind {self.kind!r}; expected one of: {', '.join(MODEL_KINDS)}.")
        self.image_shape = tuple(int(s) for s in self.image_shape)
        checks.positive_int("latent_dim", self.latent_dim)
        self.support = parse_support(self.support)
        self.step = checks.positive_number("step", self.step)
        self.spread_floor = checks.positive_number("spread_floor", self.spread_floor)
        self.support_floor = checks.positive_number("support_floor", self.support_floor)
        checks.positive_int("kernel_n", self.kernel_n, allow_none=True)

    def build_kwargs(self) -> dict[str, Any]:
        """Arguments for ``evae_tf.models.build``."""
        kwargs: dict[str, Any] = dict(
            kind=self.kind, image_shape=self.image_shape, latent_dim=self.latent_dim, seed=self.seed
        )
        if self.kind == "evae":
            kwargs.update(
                support=self.support,
                step=self.step,
                spread_floor=self.spread_floor,
                support_floor=self.support_floor,
                kernel_n=self.kernel_n,
            )
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**_known_fields(cls, d))




@dataclasses.dataclass
class SamplerConfig:
    """The ex-post latent sampler fitted when training ends (docs/math.md, 'Ex-post
    sampling: how images are generated'): a Gaussian mixture of ``components``
    components with ``covariance_type`` covariances (scikit-learn's names)."""

    components: int = defaults.SAMPLER_COMPONENTS
    covariance_type: str = defaults.COVARIANCE_TYPE

    def __post_init__(self):
        checks.positive_int("components", self.components)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"Unknown covariance_type {self.covariance_type!r}; expected one of: "
                             f"{', '.join(COVARIANCE_TYPES)}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerConfig:
        return cls(**_known_fields(cls, d))


@dataclasses.dataclass
class TrainConfig:
    """A training run (Appendix C defaults)."""

    dataset: str
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    epochs: int = defaults.EPOCHS
    batch_size: int = defaults.BATCH_SIZE
    learning_rate: float = defaults.LEARNING_RATE
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    precision: str = "auto"
    strategy: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    workdir: str | None = None
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        if isinstance(self.sampler, dict):
            self.sampler = SamplerConfig.from_dict(self.sampler)
        checks.positive_int("epochs", self.epochs)
        checks.positive_int("batch_size", self.batch_size)
        self.learning_rate = checks.positive_number("learning_rate", self.learning_rate)
        checks.positive_int("steps_per_epoch", self.steps_per_epoch, allow_none=True)
        checks.positive_int("validation_steps", self.validation_steps, allow_none=True)
        if self.precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {self.precision!r}; expected one of: {', '.join(PRECISIONS)}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}; expected one of: {', '.join(STRATEGIES)}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**_known_fields(cls, d))

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str) -> TrainConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))


def field_defaults(cls) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass, for the fields that have a plain default.

    The one source of the defaults: the command lines and library signatures read them
    from here instead of repeating the numbers.
    """
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


MODEL_DEFAULTS: dict[str, Any] = field_defaults(ModelConfig)
TRAIN_DEFAULTS: dict[str, Any] = field_defaults(TrainConfig)


def _known_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} field(s) {unknown}; allowed: {sorted(names)}.")
    return dict(d)
