"""Evaluation of a trained run: the library function behind ``python -m trainers.evaluate``.

``evaluate_run(workdir)`` loads the run's final model (:func:`evae_tf.runs.load_model`)
and measures, over the hold-out split of the run's dataset (docs/math.md, 'Metrics:
sharpness and FID'):

- the loss terms (``compute_terms``): reconstruction (BCE sum), penalty, loss, each a
  mean over images;
- the sharpness of the reconstructions, of as many samples from each latent sampler
  (``prior_samples``: the paper's prior; ``expost_samples``: the run's ex-post sampler,
  fitted first when the run has none), and of the hold-out images (for scale);
- the FID of the reconstructions and of each sampler's samples against the hold-out
  images, with a named feature network (:mod:`evae_tf.evaluation.features`), or why it
  was skipped;
- for an EVAE, the distribution of the support B (the prior's ``B_prior`` and the
  encoder's B over the hold-out images).

Everything is streamed batch by batch in one pass, and the result is written
atomically to ``<workdir>/metrics.json``, with image grids of the first hold-out batch's
reconstructions and of each sampler's samples in ``<workdir>/grids/``.

    metrics = evaluate_run("runs/fashion_mnist-evae-d64", fid="inception2015",
                           fid_weights="classify_image_graph_def.pb")
    metrics["fid"]["reconstruction"]  # {"fid": 11.9, "network": "inception2015", ...}
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from evae_tf import data as data_lib
from evae_tf import models, runs
from evae_tf.config import DEFAULT_FID, FID_CHOICES, FID_NETWORKS, TrainConfig
from evae_tf.errors import EvaluationError, FIDUnavailableError
from evae_tf.evaluation.features import fid_network
from evae_tf.evaluation.frechet import FIDNetwork, GaussianStats, fid_from_stats
from evae_tf.evaluation.sharpness import sharpness_per_image
from evae_tf.files import write_bytes_atomic, write_json_atomic
from evae_tf.images import encode_png, grid
from evae_tf.runs import RunDir

log = logging.getLogger(__name__)

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# The latent samplers evaluated, by their key in the metrics: the paper's prior, and the
# run's ex-post sampler (None: the one attached to the model).
SAMPLERS = {"prior_samples": "prior", "expost_samples": None}
GRID_IMAGES = 64  # images in each grid of <workdir>/grids/


def epochs_trained(workdir: str | os.PathLike[str]) -> int | None:
    """Epochs in the run's last checkpoint (``checkpoints/state.json``), if any."""
    return RunDir(workdir).epochs_done()


def resolve_fid_network(fid: str | FIDNetwork | None, *, weights=None, dataset=None,
                        data_dir=None, cache_dir=None) -> tuple[FIDNetwork | None, str, str | None]:
    """``(network or None, name, reason it is skipped or None)`` for an ``--fid`` choice."""
    if fid is None or fid == "none":
        return None, "none", "disabled (--fid none)"
    if not isinstance(fid, str):
        return fid, fid.name, None
    if fid not in FID_NETWORKS:
        raise ValueError(f"Unknown FID network {fid!r}; expected one of: {', '.join(FID_CHOICES)}.")
    try:
        network = fid_network(fid, weights=weights, dataset=dataset, data_dir=data_dir,
                              cache_dir=cache_dir)
    except FIDUnavailableError as e:
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


@dataclasses.dataclass
class _Sums:
    """Sums over the hold-out images of one evaluation pass."""

    terms: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"loss": 0.0, "reconstruction": 0.0, "penalty": 0.0})
    sharpness: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(("reconstruction", *SAMPLERS, "holdout"), 0.0))
    supports: list[np.ndarray] = dataclasses.field(default_factory=list)
    count: int = 0


class _FeatureStats:
    """The FID's feature statistics of the hold-out images, their reconstructions and the
    prior samples. The hold-out images' statistics are taken from ``stats_cache`` when
    it has them for ``key``, and stored in it otherwise."""

    def __init__(self, network: FIDNetwork | None, stats_cache: dict | None, key):
        self.network, self.cache, self.key = network, stats_cache, key
        self.real = (stats_cache or {}).get(key) if network is not None else None
        self.compute_real = network is not None and self.real is None
        if self.compute_real:
            self.real = GaussianStats()
        self.fakes = {key: GaussianStats() for key in ("reconstruction", *SAMPLERS)}

    def update(self, x, generated: dict[str, Any]) -> None:
        """``generated`` maps ``reconstruction`` and each sampler key to images."""
        if self.network is None:
            return
        if self.compute_real:
            self.real.update(self.network(x))
        for key, images in generated.items():
            self.fakes[key].update(self.network(images))

    def results(self, name: str, skipped: str | None) -> dict[str, Any]:
        """The ``fid`` entry of the metrics; keeps the hold-out statistics in the cache."""
        if self.compute_real and self.cache is not None:
            self.cache[self.key] = self.real
        out: dict[str, Any] = {"network": name}
        if self.network is None:
            return {**out, **{key: {"fid": None, "network": name, "skipped": skipped} for key in self.fakes}}
        out["description"] = self.network.description
        for key, fake in self.fakes.items():
            out[key] = fid_from_stats(self.real, fake, self.network)
        return out


def _measure(model: models.LatentVariableModel, holdout, seed: int, features: _FeatureStats) -> _Sums:
    """One pass over the hold-out batches: loss terms, sharpness, supports, features."""
    sums = _Sums()
    for i, x in enumerate(holdout):
        n = int(x.shape[0])
        terms = model.compute_terms(x)
        for key in sums.terms:
            sums.terms[key] += float(terms[key]) * n
        generated = {"reconstruction": model.reconstruct(x)}
        for key, sampler in SAMPLERS.items():  # the same seeds for every sampler
            generated[key] = model.generate(n, seed=_sample_seed(seed, i), sampler=sampler or model.latent_sampler)
        for key, images in (*generated.items(), ("holdout", x)):
            sums.sharpness[key] += float(np.sum(sharpness_per_image(images)))
        if isinstance(model, models.EVAE):
            sums.supports.append(terms["params"]["support"].numpy())
        features.update(x, generated)
        sums.count += n
    return sums


def _support(model: models.LatentVariableModel, sums: _Sums) -> dict[str, Any] | None:
    if not isinstance(model, models.EVAE):
        return None
    return {
        "mode": model.support,
        "prior": _summary_stats(model.prior_support().numpy()),
        "posterior_holdout": _summary_stats(np.concatenate(sums.supports)),
    }


def _result(workdir, config: TrainConfig, model: models.LatentVariableModel, sums: _Sums, *,
            batch_size: int, sample_seed: int, fid_requested: str | None, fid: dict[str, Any]
            ) -> dict[str, Any]:
    """The metrics of one evaluation pass, as ``metrics.json`` holds them."""
    return {
        "workdir": str(Path(workdir)), "dataset": config.dataset, "model": config.model.kind,
        "latent_dim": config.model.latent_dim, "seed": config.seed, "epochs": epochs_trained(workdir),
        "num_images": sums.count, "batch_size": batch_size, "sample_seed": sample_seed,
        "holdout": {**{k: v / sums.count for k, v in sums.terms.items()}, "penalty_name": model.penalty_name},
        "sharpness": {k: v / sums.count for k, v in sums.sharpness.items()},
        "fid_requested": fid_requested,
        "fid": fid,
        "samplers": {"prior_samples": {"kind": "prior", **model.prior_spec()},
                     "expost_samples": model.latent_sampler.spec()},
        "support": _support(model, sums),
    }


def evaluate_run(
    workdir: str | os.PathLike[str], *, fid: str | FIDNetwork | None = DEFAULT_FID,
    fid_weights: str | os.PathLike[str] | None = None, num_images: int | None = None,
    batch_size: int | None = None, data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None, seed: int | None = None,
    stats_cache: dict | None = None, write: bool = True,
) -> dict[str, Any]:
    """Evaluates the run in ``workdir`` on its hold-out split (see the module docstring).

    Args:
      workdir: a run directory written by ``evae_tf.training.train``.
      fid: ``"inception2015"``, ``"keras_inception"``, ``"domain"``, ``"none"`` (or
        ``None``), or a ready :class:`~evae_tf.evaluation.FIDNetwork`. A network whose
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
      RunDirError: not a finished run, or an ex-post sampler that cannot be loaded or fitted.
      EvaluationError: an empty hold-out set.
      DataNotFoundError: the dataset cannot be found.
    """
    start = time.monotonic()
    model, config = runs.load_model(workdir, with_sampler=False)
    model.latent_sampler = runs.load_or_fit_sampler(workdir, model, config)
    data_dir = data_dir if data_dir is not None else config.data_dir
    batch_size = batch_size or config.batch_size
    seed = config.seed if seed is None else seed
    if num_images is not None and num_images < 1:
        raise ValueError(f"num_images must be positive. Received: num_images={num_images}")
    network, network_name, skipped = resolve_fid_network(
        fid, weights=fid_weights, dataset=config.dataset, data_dir=data_dir, cache_dir=cache_dir)
    features = _FeatureStats(network, stats_cache, (config.dataset, str(data_dir), num_images, id(network)))
    holdout = data_lib.load(config.dataset, "holdout", batch_size=batch_size, data_dir=data_dir,
                            take=num_images, cache=False)
    keras.utils.set_random_seed(seed)
    sums = _measure(model, holdout, seed, features)
    if sums.count == 0:
        raise EvaluationError(f"The hold-out split of {config.dataset} is empty.")
    result = _result(workdir, config, model, sums, batch_size=batch_size, sample_seed=seed,
                     fid_requested=fid if isinstance(fid, str) or fid is None else network_name,
                     fid=features.results(network_name, skipped))
    result["grids"] = write_grids(workdir, model, holdout, seed)
    result["evaluation_seconds"] = time.monotonic() - start
    result["evaluated_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    if write:
        write_json_atomic(RunDir(workdir).metrics_file, result)
    return result


def write_grids(workdir, model, holdout, seed: int, count: int = GRID_IMAGES) -> dict[str, str]:
    """PNG grids in ``<workdir>/grids/``: the first ``count`` hold-out images, their
    reconstructions and ``count`` samples of each sampler; returns the paths by key."""
    x = next(iter(holdout.unbatch().batch(count).take(1))).numpy()
    images = {"holdout": x, "reconstruction": model.reconstruct(x).numpy()}
    for key, sampler in SAMPLERS.items():
        images[key] = model.generate(count, seed=seed, sampler=sampler or model.latent_sampler).numpy()
    paths = {}
    for key, batch in images.items():
        path = RunDir(workdir) / "grids" / f"{key}.png"
        write_bytes_atomic(path, encode_png(grid(batch, ncols=8, padding=1, fill=1.0)))
        paths[key] = str(path)
    return paths


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
        f"{_number(s['prior_samples'])}, ex-post samples {_number(s['expost_samples'])}, "
        f"hold-out images {_number(s['holdout'])}",
    ]
    if f["reconstruction"].get("fid") is None:
        lines.append(f"  FID           : skipped: {f['reconstruction'].get('skipped')}")
    else:
        lines.append(f"  FID [{f['network']}] : reconstructions {format_fid(f['reconstruction'])}, "
                     f"prior samples {format_fid(f['prior_samples'])}, "
                     f"ex-post samples {format_fid(f['expost_samples'])}")
        if "warning" in f["reconstruction"]:
            lines.append(f"  warning       : {f['reconstruction']['warning']}")
    if result.get("support"):
        prior, post = result["support"]["prior"], result["support"]["posterior_holdout"]
        lines.append(f"  EVAE support B: prior mean {prior['mean']:.4g}; hold-out posterior median "
                     f"{post['q50']:.4g} (5%-95%: {post['q05']:.4g}-{post['q95']:.4g})")
    lines.append(f"  metrics       : {RunDir(result['workdir']).metrics_file}")
    if result.get("grids"):
        lines.append(f"  image grids   : {Path(result['grids']['holdout']).parent}/")
    return "\n".join(lines)
