"""Image-quality metrics and the evaluation of a trained run.

| module         | concept                                                                 |
|----------------|-------------------------------------------------------------------------|
| ``sharpness``  | the variance of the Laplace-filter response                             |
| ``frechet``    | the Fréchet distance, streaming feature statistics, FID                 |
| ``features``   | the named FID feature networks and their weights                        |
| ``classifier`` | the domain classifier behind the domain FID                             |
| ``evaluate``   | a run's ``metrics.json``, per-sampler sample metrics and image grids    |

    from evae_tf import evaluation
    evaluation.sharpness(images)
    evaluation.evaluate_run("runs/fashion_mnist-evae-d64", fid="domain")
"""

from evae_tf.config import FID_NETWORKS
from evae_tf.errors import EvaluationError, FIDUnavailableError
from evae_tf.evaluation.classifier import (
    DOMAIN_EPOCHS,
    DOMAIN_FEATURES,
    build_domain_classifier,
    domain_classifier,
)
from evae_tf.evaluation.evaluate import (
    GRID_IMAGES,
    SAMPLERS,
    epochs_trained,
    evaluate_run,
    format_fid,
    resolve_fid_network,
    summary,
    write_grids,
)
from evae_tf.evaluation.features import (
    ENV_CACHE_DIR,
    ENV_FID_WEIGHTS,
    INCEPTION2015_GRAPH,
    INCEPTION2015_URL,
    KERAS_INCEPTION_WEIGHTS,
    Inception2015Graph,
    Inception2015SavedModel,
    KerasFeatures,
    default_cache_dir,
    domain_network,
    fid_network,
    inception2015,
    keras_inception,
    to_rgb,
)
from evae_tf.evaluation.frechet import (
    RECOMMENDED_FID_IMAGES,
    FIDNetwork,
    GaussianStats,
    feature_stats,
    fid,
    fid_from_stats,
    frechet_distance,
)

# Imported last, so that the name `sharpness` is the function, not its submodule.
from evae_tf.evaluation.sharpness import (
    LAPLACE_FILTER,
    LUMA_WEIGHTS,
    sharpness,
    sharpness_per_image,
)

__all__ = [
    "DOMAIN_EPOCHS",
    "DOMAIN_FEATURES",
    "ENV_CACHE_DIR",
    "ENV_FID_WEIGHTS",
    "EvaluationError",
    "FIDNetwork",
    "FIDUnavailableError",
    "FID_NETWORKS",
    "GRID_IMAGES",
    "GaussianStats",
    "INCEPTION2015_GRAPH",
    "INCEPTION2015_URL",
    "Inception2015Graph",
    "Inception2015SavedModel",
    "KERAS_INCEPTION_WEIGHTS",
    "KerasFeatures",
    "LAPLACE_FILTER",
    "LUMA_WEIGHTS",
    "RECOMMENDED_FID_IMAGES",
    "SAMPLERS",
    "build_domain_classifier",
    "default_cache_dir",
    "domain_classifier",
    "domain_network",
    "epochs_trained",
    "evaluate_run",
    "feature_stats",
    "fid",
    "fid_from_stats",
    "fid_network",
    "format_fid",
    "frechet_distance",
    "inception2015",
    "keras_inception",
    "resolve_fid_network",
    "sharpness",
    "sharpness_per_image",
    "summary",
    "to_rgb",
    "write_grids",
]
