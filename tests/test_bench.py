"""The benchmark suite's structure (bench/): no timing assertions, only shapes of results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import flops, run, timing

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_json_and_prints_the_table(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--only", "sampler", "--repeats", "1",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"meta", "figures", "targets"}
    assert results["meta"]["quick"] is True and results["meta"]["figures"] == ["sampler"]
    sampler = results["figures"]["sampler"]
    for key in ("posterior_sample_us", "train_step_ms", "share_of_train_step"):
        assert set(sampler[key]) >= {"median", "q1", "q3", "min", "max", "n"}
    assert set(sampler["methods"]) == {"train_batch", "large"}
    assert sampler["methods"]["train_batch"]["shape"] == [100, 64]
    assert len(results["targets"]) == len(run.TARGETS)
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert isinstance(met["sampling share of a training step"], bool)
    assert met["50-epoch Fashion-MNIST run"] is None  # not run: no verdict
    assert "sampling share of a train step" in proc.stdout
    assert "Targets (this machine):" in proc.stdout
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic write left no temporary file


def test_unknown_figure_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--only", "nope", "--out",
                           str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_analytic_flops_of_the_fashion_mnist_network():
    from evae_tf import models

    model = models.build("evae", (32, 32, 1), 64, seed=0)
    counted = flops.train_step_flops(model, batch_size=100)
    def conv(h_out, w_out, c_in, c_out, k=4):  # from the output side
        return 2 * h_out * w_out * k * k * c_in * c_out

    def deconv(h_in, w_in, c_in, c_out, k=4):  # from the input side
        return 2 * h_in * w_in * k * k * c_in * c_out

    encoder = conv(16, 16, 1, 32) + conv(8, 8, 32, 64) + conv(4, 4, 64, 128) + conv(2, 2, 128, 256)
    heads = 3 * 2 * (2 * 2 * 256) * 64  # loc, raw_spread, raw_support
    decoder = (2 * 64 * 256 + deconv(1, 1, 256, 128) + deconv(4, 4, 128, 64) + deconv(8, 8, 64, 32)
               + deconv(16, 16, 32, 1))
    per_image = encoder + heads + decoder
    assert counted["forward_per_image"] == per_image == 22_970_368
    assert counted["train_step_exact"] == 100 * (3 * per_image - conv(16, 16, 1, 32))
    assert counted["train_step_rule_of_three"] == 300 * per_image
    assert [row["layer"] for row in counted["layers"]][:2] == ["encoder/conv0", "encoder/conv1"]


def test_train_step_gemms_are_the_step_flops_as_matrix_products():
    from evae_tf import models

    model = models.build("evae", (32, 32, 1), 64, seed=0)
    products = flops.train_step_gemms(model, batch_size=100)
    assert sum(p["flops"] for p in products) == flops.train_step_flops(model, 100)["train_step_exact"]
    for p in products:  # each product is a valid [M, K] @ [K, N]
        assert p["a"][1] == p["b"][0] and p["flops"] == 2 * p["a"][0] * p["a"][1] * p["b"][1]
    kinds = {(p["layer"], p["product"]) for p in products}
    assert ("encoder/conv0", "input_gradient") not in kinds  # the images need no gradient
    assert ("decoder/logits", "input_gradient") in kinds
    conv3 = [p for p in products if p["layer"] == "encoder/conv3" and p["product"] == "forward"]
    assert conv3[0]["a"] == (100 * 2 * 2, 4 * 4 * 128) and conv3[0]["b"] == (4 * 4 * 128, 256)
    deconv1 = [p for p in products if p["layer"] == "decoder/deconv1" and p["product"] == "forward"]
    assert deconv1[0]["a"] == (100 * 4 * 4, 128) and deconv1[0]["b"] == (128, 4 * 4 * 64)


def test_timing_helpers():
    s = timing.summary([3.0, 1.0, 2.0, 4.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 4.0, 4)
    inv = timing.inverted(s, 100.0)
    assert inv["median"] == 40.0 and inv["max"] == 100.0 and inv["min"] == 25.0
    assert timing.paired_ratio([2.0, 4.0], [1.0, 2.0])["median"] == 2.0
    calls: list[str] = []
    out = timing.interleave({"a": lambda: calls.append("a") or 1.0,
                             "b": lambda: calls.append("b") or 2.0}, repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}


def test_targets_and_table_report_errors_and_skips():
    figures = {
        "train": {"default": {"evae_over_vae": {"median": 1.02}}},
        "pipeline": {"skipped": "no Fashion-MNIST data"},
        "serving": {"error": "Traceback ...\nRuntimeError: boom\n"},
    }
    targets = run.evaluate_targets(figures)
    by_name = {t["target"]: t for t in targets}
    assert by_name["EVAE step / VAE step (library default)"]["met"] is True
    assert by_name["input pipeline rate / step consumption"]["met"] is None
    table = run.format_table({"figures": {k: v for k, v in figures.items() if k != "train"},
                              "targets": targets})
    assert "skipped" in table and "no Fashion-MNIST data" in table
    assert "RuntimeError: boom" in table
    assert "MET     EVAE step / VAE step" in table


@pytest.mark.parametrize("name", ["train", "flops", "sampler", "pipeline", "teardown", "serving", "epoch",
                                  "ablations", "threads", "profile"])
def test_every_figure_is_registered(name):
    from bench.figures import FIGURES

    assert callable(FIGURES[name])
