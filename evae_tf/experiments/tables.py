"""The paper's published numbers (Tables 1 and 2) and the names the report prints."""

from __future__ import annotations

DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                  "celeb_a": "CelebA"}
MODEL_TITLES = {"vae": "VAE", "evae": "EVAE"}
TABLE_MODELS = ("vae", "evae")  # the paper's column order

# The paper's Tables 1 and 2, copied as printed: d_z → model → (FID, sharpness) of hold-out
# reconstructions.
PAPER_RESULTS: dict[str, tuple[str, dict[int, dict[str, tuple[str, str]]]]] = {
    "mnist": ("Table 1", {
        8: {"vae": ("16.39", "0.0217"), "evae": ("14.20", "0.0245")},
        16: {"vae": ("12.66", "0.0244"), "evae": ("10.52", "0.0314")},
        32: {"vae": ("12.57", "0.0252"), "evae": ("8.13", "0.0340")},
        64: {"vae": ("12.53", "0.0245"), "evae": ("5.67", "0.0359")},
    }),
    "fashion_mnist": ("Table 1", {
        8: {"vae": ("41.33", "0.0154"), "evae": ("34.77", "0.0186")},
        16: {"vae": ("39.01", "0.0166"), "evae": ("25.05", "0.0222")},
        32: {"vae": ("37.66", "0.0166"), "evae": ("17.98", "0.0250")},
        64: {"vae": ("39.49", "0.0163"), "evae": ("11.87", "0.0276")},
    }),
    "cifar10": ("Table 2", {
        8: {"vae": ("229.2", "0.0354"), "evae": ("217.0", "0.0343")},
        16: {"vae": ("182.9", "0.0349"), "evae": ("163.9", "0.0346")},
        32: {"vae": ("147.2", "0.0353"), "evae": ("117.9", "0.0358")},
        64: {"vae": ("146.6", "0.0356"), "evae": ("79.78", "0.0360")},
    }),
    "celeb_a": ("Table 2", {
        8: {"vae": ("189.4", "0.0149"), "evae": ("193.2", "0.0145")},
        16: {"vae": ("145.2", "0.0153"), "evae": ("139.8", "0.0159")},
        32: {"vae": ("100.8", "0.0162"), "evae": ("94.40", "0.0160")},
        64: {"vae": ("76.48", "0.0165"), "evae": ("58.84", "0.0168")},
    }),
}

_COLUMNS = {"fid": 0, "sharpness": 1}


def dataset_title(dataset: str) -> str:
    """The dataset's name as the paper prints it (the key itself when the paper has none)."""
    return DATASET_TITLES.get(dataset, dataset)


def table_name(dataset: str) -> str:
    """``"Table 1"`` or ``"Table 2"``; ``""`` for a dataset the paper does not report."""
    return PAPER_RESULTS.get(dataset, ("", {}))[0]


def paper_value(dataset: str, dz: int, model: str, column: str) -> str:
    """The paper's ``"fid"`` or ``"sharpness"`` of a cell, as printed; ``"—"`` when it has none."""
    table = PAPER_RESULTS.get(dataset, ("", {}))[1]
    if dz not in table or model not in table[dz]:
        return "—"
    return table[dz][model][_COLUMNS[column]]
