"""The grid's report: ``results.csv``, ``validation_curves.csv`` and ``report.md``
(ours beside the paper's numbers, in the layout of its Table 1 or 2)."""

from __future__ import annotations

import csv
import datetime
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evae_tf import evaluation
from evae_tf.experiments.cells import CellResult
from evae_tf.experiments.events import validation_curve
from evae_tf.experiments.figures import report_figures
from evae_tf.experiments.tables import (
    MODEL_TITLES,
    PAPER_RESULTS,
    TABLE_MODELS,
    dataset_title,
    paper_value,
    table_name,
)
from evae_tf.files import write_text_atomic

CSV_COLUMNS = (
    "dataset", "model", "latent_dim", "seed", "status", "epochs", "num_images",
    "holdout_loss", "holdout_reconstruction", "holdout_penalty", "penalty_name",
    "sharpness_reconstruction", "sharpness_prior_samples", "sharpness_expost_samples", "sharpness_holdout",
    "fid_network", "fid_reconstruction", "fid_prior_samples", "fid_expost_samples", "fid_skipped",
    "support_prior_mean", "support_posterior_median", "train_seconds", "evaluation_seconds",
    "workdir",
)
CURVE_COLUMNS = ("model", "latent_dim", "seed", "epoch", "reconstruction")

# A CSV column → its place in metrics.json (see evae_tf.evaluation.evaluate_run).
_METRIC_PATHS = {
    "epochs": ("epochs",), "num_images": ("num_images",),
    "holdout_loss": ("holdout", "loss"), "holdout_reconstruction": ("holdout", "reconstruction"),
    "holdout_penalty": ("holdout", "penalty"), "penalty_name": ("holdout", "penalty_name"),
    "sharpness_reconstruction": ("sharpness", "reconstruction"),
    "sharpness_prior_samples": ("sharpness", "prior_samples"),
    "sharpness_expost_samples": ("sharpness", "expost_samples"),
    "sharpness_holdout": ("sharpness", "holdout"),
    "fid_network": ("fid", "network"), "fid_reconstruction": ("fid", "reconstruction", "fid"),
    "fid_prior_samples": ("fid", "prior_samples", "fid"),
    "fid_expost_samples": ("fid", "expost_samples", "fid"),
    "fid_skipped": ("fid", "reconstruction", "skipped"),
    "support_prior_mean": ("support", "prior", "mean"),
    "support_posterior_median": ("support", "posterior_holdout", "q50"),
    "evaluation_seconds": ("evaluation_seconds",),
}

FIGURE_CAPTIONS = {
    "reconstructions": "Hold-out images (top) and their reconstructions at the largest d_z "
                       "(the paper's Figures S2-S5).",
    "prior_samples": "Samples from the paper's prior of each model at the largest d_z.",
    "expost_samples": "Samples from each model's ex-post sampler (a Gaussian mixture fitted to the "
                      "training latents) at the largest d_z, same seed.",
    "validation_reconstruction": "Validation reconstruction loss per epoch at the largest d_z "
                                 "(the paper's Appendix E; EVAE red, VAE orange). Data: "
                                 "`validation_curves.csv`.",
}


def _get(metrics: dict | None, *keys):
    """``metrics[k1][k2]...``; None when any level is missing."""
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _mean_sd(values: Sequence[float | None], digits: int) -> str:
    """``mean ± sd`` of the finite values (the value alone for one, ``—`` for none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


class _Table:
    """The evaluated cells of a grid, looked up by (model, d_z)."""

    def __init__(self, results: list[CellResult]):
        self.results = results
        self.dims = sorted({r.cell.latent_dim for r in results})
        self.by_cell: dict[tuple[str, int], list[CellResult]] = {}
        for r in results:
            self.by_cell.setdefault((r.cell.model, r.cell.latent_dim), []).append(r)
        self.evaluated = [r.metrics for r in results if r.metrics]

    def mean_sd(self, model: str, dz: int, digits: int, *keys) -> str:
        return _mean_sd([_get(r.metrics, *keys) for r in self.by_cell.get((model, dz), []) if r.metrics],
                        digits)

    def cells(self) -> list[tuple[int, str]]:
        """``(d_z, model)`` of every cell the grid has, in the paper's order."""
        return [(dz, m) for dz in self.dims for m in TABLE_MODELS if (m, dz) in self.by_cell]


# --------------------------------------------------------------------------- CSV


def _csv_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row[k] for k in columns} for row in rows)
    return buffer.getvalue()


def _csv_row(r: CellResult) -> dict[str, Any]:
    row = {"dataset": r.cell.dataset, "model": r.cell.model, "latent_dim": r.cell.latent_dim,
           "seed": r.cell.seed, "status": r.status if r.error is None else f"failed: {r.error}",
           "train_seconds": r.train_seconds, "workdir": str(r.workdir)}
    row.update({column: _get(r.metrics, *path) for column, path in _METRIC_PATHS.items()})
    return row


def write_csvs(out: Path, results: list[CellResult]) -> None:
    """``results.csv`` (one row per cell) and ``validation_curves.csv`` (one per cell and epoch)."""
    write_text_atomic(out / "results.csv", _csv_text([_csv_row(r) for r in results], CSV_COLUMNS))
    curves = [{"model": r.cell.model, "latent_dim": r.cell.latent_dim, "seed": r.cell.seed,
               "epoch": epoch, "reconstruction": value}
              for r in results for epoch, value in zip(*validation_curve(r.workdir), strict=True)]
    write_text_atomic(out / "validation_curves.csv", _csv_text(curves, CURVE_COLUMNS))


# --------------------------------------------------------------------------- Markdown


def _fid_lines(num_images: list[int], fid_network: str, fid_description: str | None,
               fid_skipped: str | None) -> list[str]:
    """The FID network and its caveats."""
    if fid_skipped:
        return [f"- **FID skipped**: {fid_skipped}."]
    lines = [f"- FID network: `{fid_network}` — {fid_description}."]
    recommended = evaluation.RECOMMENDED_FID_IMAGES
    if num_images and min(num_images) < recommended:
        lines.append(f"- **Warning**: FIDs from fewer than {recommended:,} images "
                     "per side are biased upwards and not comparable with published FIDs.")
    if fid_network != "inception2015":
        lines.append(f"- Our FIDs use `{fid_network}`, not the paper's Inception-v3 features: compare "
                     "them between VAE and EVAE, not with the paper's FID column.")
    return lines


def _intro_lines(dataset: str, table: _Table, *, epochs: int, seeds: int, fid_network: str,
                 fid_description: str | None, fid_skipped: str | None, command: str | None) -> list[str]:
    """The title and the settings: grid, images, FID network and its caveats, failures."""
    results = table.results
    num_images = sorted({m["num_images"] for m in table.evaluated})
    models_run = [MODEL_TITLES[m] for m in TABLE_MODELS if any(r.cell.model == m for r in results)]
    lines = [
        f"# EVAE vs VAE on {dataset_title(dataset)}: reproduction of the paper's "
        f"{table_name(dataset) or 'experiments'}",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')}"
        + (f" by `{command}`" if command else "") + ".",
        "",
        f"- Grid: d_z ∈ {{{', '.join(map(str, table.dims))}}}, models {', '.join(models_run)}, "
        f"{seeds} seed(s) (0..{seeds - 1}), {epochs} epoch(s) each; the paper: 50 epochs, batch 100, "
        "Adam 1e-4.",
        f"- Hold-out images per evaluation: {', '.join(map(str, num_images)) or 'none'}.",
    ]
    lines += _fid_lines(num_images, fid_network, fid_description, fid_skipped)
    lines += [f"- **{r.cell.name} failed**: {r.error}" for r in results if r.status == "failed"]
    lines.append("- Ours: mean ± sd over seeds (sd omitted for one seed). Sharpness: variance of the "
                 "Laplace-filtered grayscale image, averaged over images (larger is sharper).")
    return lines


def _reconstruction_lines(dataset: str, table: _Table, fid_label: str) -> list[str]:
    """Ours beside the paper's numbers, in the layout of the paper's table."""
    lines = [
        "",
        f"## Hold-out reconstructions ({table_name(dataset) or 'paper'} layout)",
        "",
        f"FID of hold-out reconstructions against the hold-out images (ours: {fid_label}; "
        "paper: Inception-v3) and the sharpness of the reconstructions.",
        "",
    ]
    header = ["d_z"]
    for m in TABLE_MODELS:
        t = MODEL_TITLES[m]
        header += [f"{t} {fid_label} ours", f"{t} FID paper", f"{t} sharpness ours", f"{t} sharpness paper"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dz in table.dims:
        row = [str(dz)]
        for m in TABLE_MODELS:
            row += [table.mean_sd(m, dz, 2, "fid", "reconstruction", "fid"), paper_value(dataset, dz, m, "fid"),
                    table.mean_sd(m, dz, 4, "sharpness", "reconstruction"),
                    paper_value(dataset, dz, m, "sharpness")]
        lines.append("| " + " | ".join(row) + " |")
    holdout_sharpness = sorted({_get(m, "sharpness", "holdout") for m in table.evaluated} - {None})
    return lines + ["", f"For scale: the sharpness of the real hold-out images is "
                    f"{', '.join(f'{v:.4f}' for v in holdout_sharpness) or 'n/a'}.", ""]


def _paper_lines(dataset: str) -> list[str]:
    """The paper's table for the dataset, as printed (none for datasets it does not report)."""
    name, paper = PAPER_RESULTS.get(dataset, ("", {}))
    if not paper:
        return []
    lines = [f"## The paper's {name} ({dataset_title(dataset)}), for reference", "",
             "FID (Inception-v3) and sharpness of hold-out reconstructions after 50 epochs.", "",
             "| d_z | VAE FID | VAE sharpness | EVAE FID | EVAE sharpness |", "|---|---|---|---|---|"]
    for dz, cells in sorted(paper.items()):
        v, e = cells["vae"], cells["evae"]
        lines.append(f"| {dz} | {v[0]} | {v[1]} | {e[0]} | {e[1]} |")
    return lines + [""]


def _beyond_lines(table: _Table, fid_label: str) -> list[str]:
    """Samples per sampler and the hold-out loss, which the paper does not tabulate."""
    lines = ["## Beyond the paper", "",
             "### Samples, per latent sampler", "",
             "Unconditional samples, as many as hold-out images, from the paper's prior (VAE: "
             "z ~ N(0, I); EVAE: z ~ Unif[-B_prior/2, B_prior/2]^d) and from the run's ex-post "
             "sampler (a Gaussian mixture fitted to the training set's posterior draws). The paper "
             "reports reconstructions only.", "",
             f"| d_z | model | {fid_label} prior samples | sharpness prior samples | "
             f"{fid_label} ex-post samples | sharpness ex-post samples |", "|---|---|---|---|---|---|"]
    for dz, m in table.cells():
        lines.append(f"| {dz} | {MODEL_TITLES[m]} | "
                     f"{table.mean_sd(m, dz, 2, 'fid', 'prior_samples', 'fid')} | "
                     f"{table.mean_sd(m, dz, 4, 'sharpness', 'prior_samples')} | "
                     f"{table.mean_sd(m, dz, 2, 'fid', 'expost_samples', 'fid')} | "
                     f"{table.mean_sd(m, dz, 4, 'sharpness', 'expost_samples')} |")
    lines += ["", "### Hold-out loss", "",
              "Means per image over the hold-out set: reconstruction = BCE summed over pixels; "
              "penalty = EVAE kernel term 3B/(5nr) summed over d_z, or VAE KL.", "",
              "| d_z | model | loss | reconstruction | penalty |", "|---|---|---|---|---|"]
    for dz, m in table.cells():
        lines.append(f"| {dz} | {MODEL_TITLES[m]} | {table.mean_sd(m, dz, 2, 'holdout', 'loss')} | "
                     f"{table.mean_sd(m, dz, 2, 'holdout', 'reconstruction')} | "
                     f"{table.mean_sd(m, dz, 3, 'holdout', 'penalty')} |")
    return lines


def _support_lines(results: list[CellResult]) -> list[str]:
    """The EVAE's learned support: the prior's B and the posterior's B per cell."""
    lines = ["", "### The EVAE's support B", "",
             "B_prior: the prior's support length per latent dimension (the running mean of the "
             "learned B, or the fixed B). Posterior B: the encoder's B over the hold-out images "
             "(all images and dimensions). The penalty is smallest as B → its floor, so learned B "
             "tends to shrink.", "",
             "| d_z | seed | mode | B_prior mean [min, max] | posterior B median [5%, 95%] |",
             "|---|---|---|---|---|"]
    for r in results:
        support = _get(r.metrics, "support")
        if r.cell.model == "evae" and support:
            p, q = support["prior"], support["posterior_holdout"]
            lines.append(f"| {r.cell.latent_dim} | {r.cell.seed} | {support['mode']} | "
                         f"{p['mean']:.4g} [{p['min']:.4g}, {p['max']:.4g}] | "
                         f"{q['q50']:.4g} [{q['q05']:.4g}, {q['q95']:.4g}] |")
    return lines


def _seconds(value: float | None) -> str:
    return f"{value:.0f} s" if value is not None else "n/a"


def _cells_lines(out: Path, results: list[CellResult]) -> list[str]:
    """One row per cell: its status, epochs, run time and run directory."""
    lines = ["", "### Cells and run time", "",
             "| cell | status | epochs | train time | evaluation time | run directory |",
             "|---|---|---|---|---|---|"]
    for r in results:
        status = r.status if r.error is None else "failed"
        where = r.workdir.relative_to(out) if r.workdir.is_relative_to(out) else r.workdir
        lines.append(f"| {r.cell.name} | {status} | {_get(r.metrics, 'epochs') or 'n/a'} | "
                     f"{_seconds(r.train_seconds)} | {_seconds(_get(r.metrics, 'evaluation_seconds'))} | "
                     f"`{where}` |")
    return lines


def _figure_lines(figure_paths: dict[str, str]) -> list[str]:
    if not figure_paths:
        return []
    lines = ["", "## Figures", ""]
    for name, path in figure_paths.items():
        lines += [f"![{name}]({path})", "", FIGURE_CAPTIONS[name], ""]
    return lines


def write_report(out: Path, dataset: str, results: list[CellResult], *, epochs: int, seeds: int,
                 fid_network: str, fid_description: str | None, fid_skipped: str | None,
                 data_dir=None, command: str | None = None) -> Path:
    """Writes ``results.csv``, ``validation_curves.csv``, the figures and ``report.md``."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    write_csvs(out, results)
    figure_paths = report_figures(out, dataset, results, data_dir)
    table = _Table(results)
    fid_label = f"FID [{fid_network}]"
    lines = _intro_lines(dataset, table, epochs=epochs, seeds=seeds, fid_network=fid_network,
                         fid_description=fid_description, fid_skipped=fid_skipped, command=command)
    lines += _reconstruction_lines(dataset, table, fid_label)
    lines += _paper_lines(dataset)
    lines += _beyond_lines(table, fid_label)
    lines += _support_lines(results)
    lines += _cells_lines(out, results)
    lines += _figure_lines(figure_paths)
    lines += ["", "Per-cell numbers: `results.csv`; each cell's `metrics.json` is in its run directory.", ""]
    report = out / "report.md"
    write_text_atomic(report, "\n".join(lines))
    return report
