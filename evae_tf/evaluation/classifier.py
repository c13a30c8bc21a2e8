"""The domain classifier: a small CNN trained on a dataset's labels, whose penultimate
layer is the feature network of the domain FID (:func:`evae_tf.evaluation.features.domain_network`).

Trained once with ``keras.Model.fit`` and cached as ``<directory>/<dataset>.keras`` beside
``<dataset>.json`` (what it learned from and its hold-out accuracy).

    model, info = domain_classifier("fashion_mnist", Path("~/.cache/evae_tf/domain_fid"))
    feature_model(model)(images)  # [B, 128]
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import keras

from evae_tf import data
from evae_tf.data import labels
from evae_tf.files import replace_atomic, write_json_atomic

logger = logging.getLogger(__name__)

DOMAIN_EPOCHS = 5
DOMAIN_FEATURES = "features"  # the penultimate layer, whose output the domain FID uses


def build_domain_classifier(image_shape, num_classes: int, seed: int = 0) -> keras.Model:
    """A small CNN classifier; its penultimate ``features`` layer (128-d) feeds the domain FID."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input(tuple(image_shape), name="images")
    x = inputs
    for i, filters in enumerate((32, 64, 128)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                                kernel_initializer=init(seed + i), name=f"conv{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(128, activation="relu", kernel_initializer=init(seed + 3),
                           name=DOMAIN_FEATURES)(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init(seed + 4), name="logits")(x)
    return keras.Model(inputs, outputs, name="domain_classifier")


def feature_model(classifier: keras.Model) -> keras.Model:
    """The classifier up to its penultimate ``features`` layer."""
    return keras.Model(classifier.inputs, classifier.get_layer(DOMAIN_FEATURES).output)


def _train(dataset: str, *, data_dir, epochs: int, batch_size: int, seed: int
           ) -> tuple[keras.Model, dict[str, Any]]:
    """Fits a new classifier on the training split; the accuracy is on the hold-out split."""
    train = labels.load_labelled(dataset, "train", batch_size=batch_size, shuffle=True, seed=seed,
                                 data_dir=data_dir)
    holdout = labels.load_labelled(dataset, "holdout", batch_size=batch_size, data_dir=data_dir)
    model = build_domain_classifier(data.image_shape(dataset), data.num_classes(dataset), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(train, epochs=epochs, verbose=0, shuffle=False)
    _, accuracy = model.evaluate(holdout, verbose=0)
    return model, {
        "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "train_accuracy": float(history.history["accuracy"][-1]),
        "holdout_accuracy": float(accuracy), "feature_layer": DOMAIN_FEATURES,
        "feature_dim": int(model.get_layer(DOMAIN_FEATURES).units),
    }


def domain_classifier(dataset: str, directory: str | os.PathLike[str], *,
                      data_dir: str | os.PathLike[str] | None = None, epochs: int = DOMAIN_EPOCHS,
                      batch_size: int = 128, seed: int = 0) -> tuple[keras.Model, dict[str, Any]]:
    """The domain classifier of ``dataset`` and facts about it, trained once and cached.

    Cached at ``<directory>/<dataset>.keras`` (beside it ``<dataset>.json``: epochs,
    training images, hold-out accuracy), both written atomically and reused by later
    calls, unless the training split found now has a different size from the one the
    cached classifier learned from (a classifier trained on a small test copy of the data
    is not reused for the real data). Trained with Adam on the training split's labels
    (:func:`evae_tf.data.load_labelled`).

    Raises:
      ValueError: the dataset has no class labels.
      DataNotFoundError: its data cannot be found.
    """
    directory = Path(directory).expanduser()
    model_path, info_path = directory / f"{dataset}.keras", directory / f"{dataset}.json"
    data.num_classes(dataset)  # a dataset without labels fails before anything is read
    num_train = int(data.num_examples(dataset, "train", data_dir))
    if model_path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("num_train") == num_train:
            return keras.models.load_model(model_path), info
        logger.warning("The cached %s domain classifier learned from %s training images, the data "
                       "found now has %d: training it again.", dataset, info.get("num_train"), num_train)
    logger.info("Training the %s domain classifier for FID (%d epochs); cached at %s",
                dataset, epochs, model_path)
    model, info = _train(dataset, data_dir=data_dir, epochs=epochs, batch_size=batch_size, seed=seed)
    info["num_train"] = num_train
    replace_atomic(model_path, model.save)
    write_json_atomic(info_path, info)
    return model, info
