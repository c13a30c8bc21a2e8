"""The dataset table: the four EVAE datasets, their shapes, splits and classes.

Each dataset is delivered at the size the networks expect (docs/math.md, 'Networks (Appendix B)'):

| name          | stored as        | delivered as | preprocessing                          |
|---------------|------------------|--------------|----------------------------------------|
| mnist         | 28×28×1 uint8    | 32×32×1      | bilinear resize                        |
| fashion_mnist | 28×28×1 uint8    | 32×32×1      | bilinear resize                        |
| cifar10       | 32×32×3 uint8    | 32×32×3      | none                                   |
| celeb_a       | 218×178×3 uint8  | 64×64×3      | centre crop 140×140, bilinear resize   |

Splits are the datasets' standard train / test splits; CelebA's official "validation"
split is its hold-out set (docs/math.md, 'Training defaults (Appendix C)').
``split="holdout"`` picks the right one (:func:`resolve_split`).
"""

from __future__ import annotations

__all__ = [
    "CROP_SIZES",
    "DATASETS",
    "HOLDOUT_SPLIT",
    "IMAGE_SHAPES",
    "KNOWN_NUM_EXAMPLES",
    "MNIST_STYLE",
    "NUM_CLASSES",
    "RAW_SHAPES",
    "check_name",
    "image_shape",
    "num_classes",
    "resolve_split",
]

DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "celeb_a")

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (32, 32, 1),
    "fashion_mnist": (32, 32, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (64, 64, 3),
}

HOLDOUT_SPLIT: dict[str, str] = {
    "mnist": "test",
    "fashion_mnist": "test",
    "cifar10": "test",
    "celeb_a": "validation",
}

# Shape of one stored image, and the centre crop applied before resizing (if any).
RAW_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (218, 178, 3),
}
CROP_SIZES: dict[str, int] = {"celeb_a": 140}
# Datasets with class labels (CelebA has 40 binary attributes instead).
NUM_CLASSES: dict[str, int] = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10}
MNIST_STYLE: tuple[str, ...] = ("mnist", "fashion_mnist")  # may come as IDX files

# Split sizes of the TFDS versions, used when TFDS does not know them yet (before a download).
KNOWN_NUM_EXAMPLES: dict[tuple[str, str], int] = {
    ("mnist", "train"): 60_000,
    ("mnist", "test"): 10_000,
    ("fashion_mnist", "train"): 60_000,
    ("fashion_mnist", "test"): 10_000,
    ("cifar10", "train"): 50_000,
    ("cifar10", "test"): 10_000,
    ("celeb_a", "train"): 162_770,
    ("celeb_a", "validation"): 19_867,
    ("celeb_a", "test"): 19_962,
}


def check_name(name: str) -> None:
    """A ValueError unless ``name`` is one of :data:`DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}.")


def image_shape(name: str) -> tuple[int, int, int]:
    """Shape ``(H, W, C)`` of one image of ``name`` as delivered by :func:`~evae_tf.data.load`."""
    check_name(name)
    return IMAGE_SHAPES[name]


def num_classes(name: str) -> int:
    """Number of classes of ``name``; a ValueError for datasets without class labels."""
    check_name(name)
    if name not in NUM_CLASSES:
        raise ValueError(f"{name} has no class labels (supported: {', '.join(NUM_CLASSES)}).")
    return NUM_CLASSES[name]


def resolve_split(name: str, split: str) -> str:
    """The split name behind ``"holdout"`` (:data:`HOLDOUT_SPLIT`); others unchanged."""
    return HOLDOUT_SPLIT[name] if split == "holdout" else split
