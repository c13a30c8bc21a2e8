"""Evaluation of a trained run: the library function behind ``python -m trainers.evaluate``.

``evaluate_run(workdir)`` loads ``<workdir>/model.keras`` and measures, over the
hold-out split of the run's dataset (spec §8):

- the loss terms (``compute_terms``): reconstruction (BCE sum), penalty, loss, each a
  mean over images;
- the sharpness of the reconstructions, of as many prior samples, and of the hold-out
  images themselves (for scale);
- the FID of the reconstructions and of the prior samples against the hold-out images,
  with a named feature network (:mod:`evae_tf.metrics`), or why it was skipped;
- for an EVAE, the distribution of the support B (the prior's ``B_prior`` and the
  encoder's B over the hold-out images).

Everything is streamed batch by batch in one pass, and the result is written
atomically to ``<workdir>/metrics.json``.

    metrics = evaluate_run("runs/fashion_mnist-evae-d64", fid="inception2015",
                           fid_weights="classify_image_graph_def.pb")
    metrics["fid"]["reconstruction"]  # {"fid": 11.9, "network": "inception2015", ...}
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from evae_tf import data as data_lib
from evae_tf import metrics, models
from evae_tf.config import TrainConfig, write_json_atomic

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
STATE_FILE = os.path.join("checkpoints", "state.json")
FID_CHOICES: tuple[str, ...] = (*metrics.FID_NETWORKS, "none")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class EvaluationError(RuntimeError):
    """A run that cannot be evaluated; the message says why and what to do."""


def load_run(workdir: str | os.PathLike[str]) -> tuple[TrainConfig, models.LatentVariableModel]:
    """The ``TrainConfig`` and final model of a run directory."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise EvaluationError(f"Run directory {str(workdir)!r} does not exist.")
    config_path, model_path = workdir / CONFIG_FILE, workdir / MODEL_FILE
    if not config_path.is_file():
        raise EvaluationError(f"{str(workdir)!r} is not a run directory (no {CONFIG_FILE}).")
    if not model_path.is_file():
        raise EvaluationError(
            f"{str(workdir)!r} has no {MODEL_FILE}: its training has not finished; "
            f"resume it with `python -m trainers.fit --workdir {workdir} ...`."
        )
    try:
        config = TrainConfig.load(str(config_path))
    except (OSError, ValueError, TypeError) as e:
        raise EvaluationError(f"Cannot read {str(config_path)!r}: {e}") from None
    try:
        model = keras.models.load_model(model_path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise EvaluationError(f"Cannot load {str(model_path)!r}: {e}") from None
    if not isinstance(model, models.LatentVariableModel):
        raise EvaluationError(f"{str(model_path)!r} holds a {type(model).__name__}, not an EVAE or VAE.")
    return config, model


def epochs_trained(workdir: str | os.PathLike[str]) -> int | None:
    """Epochs in the run's last checkpoint (``checkpoints/state.json``), if any."""
    try:
        return int(json.loads((Path(workdir) / STATE_FILE).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_fid_network(fid: str | metrics.FIDNetwork | None, *, weights=None, dataset=None,
                        data_dir=None, cache_dir=None) -> tuple[metrics.FIDNetwork | None, str, str | None]:
    """``(network or None, name, reason it is skipped or None)`` for an ``--fid`` choice."""
    if fid is None or fid == "none":
        return None, "none", "disabled (--fid none)"
    if not isinstance(fid, str):
        return fid, fid.name, None
    if fid not in metrics.FID_NETWORKS:
        raise ValueError(f"Unknown FID network {fid!r}; expected one of: {', '.join(FID_CHOICES)}.")
    try:
        network = metrics.fid_network(fid, weights=weights, dataset=dataset, data_dir=data_dir,
                                      cache_dir=cache_dir)
    except metrics.FIDUnavailableError as e:
        log.info("FID skipped: %s", e)
        return None, fid, str(e)
    return network, network.name, None


def _summary_stats(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, np.float64).ravel()
    out = {"mean": float(values.mean()), "sd": float(values.std()), "min": float(values.min()),
           "max": float(values.max())}
    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True):
        out[f"q{round(q * 100):02d}"] = float(v)
    return out


def _sample_seed(seed: int, batch: int) -> int:
    return (seed * 100_003 + batch) % (2**31 - 1)


def evaluate_run(
    workdir: str | os.PathLike[str],
    *,
    fid: str | metrics.FIDNetwork | None = "inception2015",
    fid_weights: str | os.PathLike[str] | None = None,
    num_images: int | None = None,
    batch_size: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    stats_cache: dict | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluates the run in ``workdir`` on its hold-out split (see the module docstring).

    Args:
      workdir: a run directory written by ``evae_tf.training.train``.
      fid: ``"inception2015"``, ``"keras_inception"``, ``"domain"``, ``"none"`` (or
        ``None``), or a ready :class:`~evae_tf.metrics.FIDNetwork`. A network whose
        weights are missing is skipped, with the reason in the result.
      fid_weights: weights of the FID network (``--fid-weights``).
      num_images: use only the first ``num_images`` hold-out images (default: all).
      batch_size: images per batch (default: the run's batch size, so that the EVAE
        penalty's ``n`` matches training).
      data_dir: where the data is (default: the run's ``data_dir``, then discovery).
      cache_dir: the cache of FID weights and domain classifiers (default
        ``$EVAE_CACHE_DIR`` or ``~/.cache/evae_tf``).
      seed: seeds the prior samples (default: the run's seed).
      stats_cache: a dict in which the hold-out images' feature statistics are kept
        between calls (the reproduction grid evaluates many runs against one hold-out set).
      write: write ``<workdir>/metrics.json``.

    Returns:
      The metrics as written to ``metrics.json``.

    Raises:
      EvaluationError: not a finished run directory, or an empty hold-out set.
      evae_tf.data.DataNotFoundError: the dataset cannot be found.
    """
    start = time.monotonic()
    workdir = Path(workdir)
    config, model = load_run(workdir)
    dataset = config.dataset
    data_dir = data_dir if data_dir is not None else config.data_dir
    batch_size = batch_size or config.batch_size
    seed = config.seed if seed is None else seed
    if num_images is not None and num_images < 1:
        raise ValueError(f"num_images must be positive. Received: num_images={num_images}")

    network, network_name, skipped = resolve_fid_network(
        fid, weights=fid_weights, dataset=dataset, data_dir=data_dir, cache_dir=cache_dir)
    cache_key = (dataset, str(data_dir), num_images, id(network))
    real_stats = (stats_cache or {}).get(cache_key) if network is not None else None
    compute_real = network is not None and real_stats is None
    if compute_real:
        real_stats = metrics.GaussianStats()
    recon_stats, prior_stats = metrics.GaussianStats(), metrics.GaussianStats()

    holdout = data_lib.load(dataset, "holdout", batch_size=batch_size, data_dir=data_dir,
                            take=num_images, cache=False)
    keras.utils.set_random_seed(seed)
    totals = {"loss": 0.0, "reconstruction": 0.0, "penalty": 0.0}
    sharp = {"reconstruction": 0.0, "prior_samples": 0.0, "holdout": 0.0}
    supports: list[np.ndarray] = []
    count = 0
    for i, x in enumerate(holdout):
        n = int(x.shape[0])
        terms = model.compute_terms(x)
        for key in totals:
            totals[key] += float(terms[key]) * n
        recon = model.reconstruct(x)
        samples = model.generate(n, seed=_sample_seed(seed, i))
        sharp["reconstruction"] += float(np.sum(metrics.sharpness_per_image(recon)))
        sharp["prior_samples"] += float(np.sum(metrics.sharpness_per_image(samples)))
        sharp["holdout"] += float(np.sum(metrics.sharpness_per_image(x)))
        if isinstance(model, models.EVAE):
            supports.append(terms["params"]["support"].numpy())
        if network is not None:
            if compute_real:
                real_stats.update(network(x))
            recon_stats.update(network(recon))
            prior_stats.update(network(samples))
        count += n
    if count == 0:
        raise EvaluationError(f"The hold-out split of {dataset} is empty.")
    if compute_real and stats_cache is not None:
        stats_cache[cache_key] = real_stats

    fid_results: dict[str, Any] = {"network": network_name}
    if network is not None:
        fid_results["description"] = network.description
        for key, fake in (("reconstruction", recon_stats), ("prior_samples", prior_stats)):
            fid_results[key] = metrics.fid_from_stats(real_stats, fake, network)
    else:
        for key in ("reconstruction", "prior_samples"):
            fid_results[key] = {"fid": None, "network": network_name, "skipped": skipped}

    result: dict[str, Any] = {
        "workdir": str(workdir),
        "dataset": dataset,
        "model": config.model.kind,
        "latent_dim": config.model.latent_dim,
        "seed": config.seed,
        "epochs": epochs_trained(workdir),
        "num_images": count,
        "batch_size": batch_size,
        "sample_seed": seed,
        "holdout": {**{k: v / count for k, v in totals.items()}, "penalty_name": model.penalty_name},
        "sharpness": {k: v / count for k, v in sharp.items()},
        "fid_requested": fid if isinstance(fid, str) or fid is None else network_name,
        "fid": fid_results,
        "support": None,
    }
    if isinstance(model, models.EVAE):
        result["support"] = {
            "mode": model.support,
            "prior": _summary_stats(model.prior_support().numpy()),
            "posterior_holdout": _summary_stats(np.concatenate(supports)),
        }
    result["evaluation_seconds"] = time.monotonic() - start
    result["evaluated_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    if write:
        write_json_atomic(str(workdir / METRICS_FILE), result)
    return result


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def format_fid(entry: dict[str, Any]) -> str:
    """``"12.34"`` or ``"skipped (<reason>)"`` for one FID entry of the metrics."""
    if entry.get("fid") is None:
        return f"skipped ({entry.get('skipped', 'unknown reason')})"
    return f"{entry['fid']:.2f}"


def summary(result: dict[str, Any]) -> str:
    """A short human summary of :func:`evaluate_run`'s result."""
    h, s, f = result["holdout"], result["sharpness"], result["fid"]
    lines = [
        f"Evaluated {result['workdir']} ({result['model']}, {result['dataset']}, "
        f"d_z={result['latent_dim']}) on {result['num_images']} hold-out images:",
        f"  hold-out loss : {h['loss']:.3f} (reconstruction {h['reconstruction']:.3f} + "
        f"{h['penalty_name']} {h['penalty']:.3f}; means per image)",
        f"  sharpness     : reconstructions {_number(s['reconstruction'])}, prior samples "
        f"{_number(s['prior_samples'])}, hold-out images {_number(s['holdout'])}",
    ]
    if f["reconstruction"].get("fid") is None:
        lines.append(f"  FID           : skipped: {f['reconstruction'].get('skipped')}")
    else:
        lines.append(f"  FID [{f['network']}] : reconstructions {format_fid(f['reconstruction'])}, "
                     f"prior samples {format_fid(f['prior_samples'])}")
        if "warning" in f["reconstruction"]:
            lines.append(f"  warning       : {f['reconstruction']['warning']}")
    if result.get("support"):
        prior, post = result["support"]["prior"], result["support"]["posterior_holdout"]
        lines.append(f"  EVAE support B: prior mean {prior['mean']:.4g}; hold-out posterior median "
                     f"{post['q50']:.4g} (5%-95%: {post['q05']:.4g}-{post['q95']:.4g})")
    lines.append(f"  metrics       : {Path(result['workdir']) / METRICS_FILE}")
    return "\n".join(lines)
