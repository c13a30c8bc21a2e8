"""``python -m trainers.reproduce`` end to end on a tiny grid, and its resumption."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import tensorflow as tf
from idx_fixtures import write_mnist_dir

from evae_tf import experiments, training
from evae_tf.data import network
from evae_tf.errors import NonFiniteLossError
from evae_tf.experiments import figures
from evae_tf.runs import RunDir
from trainers import reproduce as reproduce_cli

DIMS = (2, 4)
CELLS = [f"fashion_mnist-{m}-d{d}-s0" for d in DIMS for m in ("evae", "vae")]


def grid_flags(data_dir, out, cache):
    return ["--dataset", "fashion_mnist", "--latent-dims", *map(str, DIMS), "--models", "evae", "vae",
            "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16", "--fid", "domain",
            "--data-dir", str(data_dir), "--out", str(out), "--cache-dir", str(cache), "--verbose", "0"]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    data_dir = root / "fashion-mnist"
    write_mnist_dir(data_dir, n_train=48, n_test=24)
    flags = grid_flags(data_dir, root / "report", root / "cache")
    code = reproduce_cli.main(flags)
    return root / "report", flags, code


def test_the_grid_is_trained_evaluated_and_reported(grid_run, capsys):
    out, _, code = grid_run
    assert code == 0
    for name in CELLS:
        workdir = out / "runs" / name
        assert (workdir / "model.keras").is_file() and (workdir / "timing.json").is_file()
        m = json.loads((workdir / "metrics.json").read_text())
        assert m["fid"]["reconstruction"]["network"] == "domain" and m["num_images"] == 24

    report = (out / "report.md").read_text()
    assert "reproduction of the paper's Table 1" in report
    header = ("| d_z | VAE FID [domain] ours | VAE FID paper | VAE sharpness ours | VAE sharpness paper "
              "| EVAE FID [domain] ours | EVAE FID paper | EVAE sharpness ours | EVAE sharpness paper |")
    assert header in report
    rows = [line for line in report.splitlines() if line.startswith(("| 2 | ", "| 4 | "))]
    table_rows = [r for r in rows if r.count("|") == 10]
    assert len(table_rows) == 2 and all(r.count("—") == 4 for r in table_rows)  # no paper values at d_z 2, 4
    # The paper's Table 1 for Fashion-MNIST, copied as printed.
    assert "| 64 | 39.49 | 0.0163 | 11.87 | 0.0276 |" in report
    assert "| 8 | 41.33 | 0.0154 | 34.77 | 0.0186 |" in report
    assert "FID network: `domain` — domain FID" in report and "fewer than 10,000 images" in report
    for section in ("### Samples, per latent sampler", "### The EVAE's support B", "### Cells and run time"):
        assert section in report
    assert "| 4 | 0 | learned | " in report  # B's distribution for the d_z = 4 EVAE
    assert "| fashion_mnist-vae-d4-s0 | complete | 1 | " in report

    with open(out / "results.csv") as f:
        results = list(csv.DictReader(f))
    assert [(r["model"], r["latent_dim"]) for r in results] == [("evae", "2"), ("vae", "2"),
                                                                ("evae", "4"), ("vae", "4")]
    assert all(r["fid_network"] == "domain" and float(r["fid_reconstruction"]) >= -1e-6 for r in results)
    assert all(float(r["fid_expost_samples"]) >= -1e-6 and float(r["sharpness_expost_samples"]) > 0
               for r in results)
    assert results[0]["support_prior_mean"] and not results[1]["support_prior_mean"]
    with open(out / "validation_curves.csv") as f:
        assert len(list(csv.DictReader(f))) == 4  # one epoch per cell

    for name in ("reconstructions", "prior_samples", "expost_samples", "validation_reconstruction"):
        png = out / "figures" / f"{name}.png"
        assert f"](figures/{name}.png)" in report
        image = tf.io.decode_png(png.read_bytes())
        assert image.shape[0] > 50 and image.shape[1] > 100 and image.shape[2] == 3


def test_rerunning_skips_finished_cells(grid_run, monkeypatch, capsys):
    out, flags, _ = grid_run
    before = {n: (out / "runs" / n / "metrics.json").stat().st_mtime_ns for n in CELLS}

    def no_training(*args, **kwargs):
        raise AssertionError("finished cells must not be trained again")

    monkeypatch.setattr(training, "train", no_training)
    assert reproduce_cli.main(flags) == 0
    assert "(0 trained now, 0 evaluated now, 0 failed)" in capsys.readouterr().out
    after = {n: (out / "runs" / n / "metrics.json").stat().st_mtime_ns for n in CELLS}
    assert after == before

    # A newer model.keras (e.g. training continued) makes exactly that cell be evaluated again.
    model = out / "runs" / CELLS[1] / "model.keras"
    newer = before[CELLS[1]] + 10**9
    os.utime(model, ns=(newer, newer))
    assert reproduce_cli.main(flags) == 0
    assert "(0 trained now, 1 evaluated now, 0 failed)" in capsys.readouterr().out
    changed = [n for n in CELLS if (out / "runs" / n / "metrics.json").stat().st_mtime_ns != before[n]]
    assert changed == [CELLS[1]]


def test_a_failing_cell_is_reported_and_the_exit_code_says_so(tmp_path, monkeypatch, capsys):
    def diverge(config, **kwargs):
        raise NonFiniteLossError("Training stopped: non-finite reconstruction at epoch 1, step 1.")

    monkeypatch.setattr(training, "train", diverge)
    monkeypatch.setattr(network, "reachable", lambda *a, **k: False)
    code = reproduce_cli.main(["--dataset", "fashion_mnist", "--latent-dims", "2", "--models", "vae",
                               "--epochs", "1", "--fid", "none", "--out", str(tmp_path / "out")])
    assert code == reproduce_cli.EXIT_FAILURE
    out = capsys.readouterr().out
    assert "1 failed" in out and "fashion_mnist-vae-d2-s0: Training stopped: non-finite" in out
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**fashion_mnist-vae-d2-s0 failed**: Training stopped" in report
    assert "| fashion_mnist-vae-d2-s0 | failed |" in report


def test_validation_curve_keeps_the_last_value_of_a_repeated_epoch(tmp_path):
    logdir = tmp_path / "run" / "logs" / "validation"
    for values in ([3.0, 2.0], [2.5, 1.5]):  # a run resumed after epoch 1 writes epoch 2 again
        writer = tf.summary.create_file_writer(str(logdir))
        with writer.as_default():
            for step, value in enumerate(values):
                tf.summary.scalar(experiments.VALIDATION_TAG, value, step=step)
        writer.close()
    epochs, values = experiments.validation_curve(tmp_path / "run")
    assert epochs == [1, 2] and values == pytest.approx([2.5, 1.5])


def test_needs_evaluation_rules(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    assert experiments.needs_evaluation(run, "domain", None, True)
    metrics_path = RunDir(run).metrics_file
    metrics_path.write_text(json.dumps({"fid_requested": "domain", "num_images": 10,
                                        "fid": {"reconstruction": {"fid": 1.0}}}))
    t = (run / "model.keras").stat().st_mtime_ns + 10**9
    os.utime(metrics_path, ns=(t, t))
    assert not experiments.needs_evaluation(run, "domain", None, True)
    assert experiments.needs_evaluation(run, "inception2015", None, True)
    assert experiments.needs_evaluation(run, "domain", 20, True)
    metrics_path.write_text(json.dumps({"fid_requested": "inception2015",
                                        "fid": {"reconstruction": {"fid": None, "skipped": "no weights"}}}))
    os.utime(metrics_path, ns=(t, t))
    assert not experiments.needs_evaluation(run, "inception2015", None, False)
    assert experiments.needs_evaluation(run, "inception2015", None, True)  # weights now available


def test_line_chart_and_panels_draw(tmp_path):
    import numpy as np

    chart = figures.line_chart([("EVAE", [1, 2, 3], [3.0, 2.0, 1.5], figures.color_for("evae")),
                                ("VAE", [1, 2, 3], [3.1, 2.4, 2.0], figures.color_for("vae"))],
                               "title", "epoch", "loss")
    panels = figures.image_panels([("a", np.zeros((3, 8, 8, 1))), ("b", np.ones((5, 8, 8, 3)))], ncols=4)
    assert chart.shape == (440, 720, 3) and chart.dtype == np.uint8  # the default size in pixels
    evae_red = np.array([0xD6, 0x27, 0x28])
    assert np.any(np.all(chart == evae_red, axis=-1))  # the EVAE curve is drawn in its colour
    assert np.all(panels == 0, axis=-1).sum() >= 3 * (8 * 2) ** 2  # the 3 black images, each pixel 2 x 2
    for image, name in ((chart, "chart.png"), (panels, "panels.png")):
        decoded = tf.io.decode_png(figures.save_png(image, tmp_path / name).read_bytes())
        np.testing.assert_array_equal(decoded.numpy(), image)  # the PNG is the drawn image
    assert not list(Path(tmp_path).glob(".tmp-*"))
