"""The benchmark suite's structure (bench/): no timing assertions, only shapes of results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import flops, run, timing
from bench.table import num

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
    by_target = {t["target"]: t for t in results["targets"]}
    share = by_target["sampling share of a training step"]
    assert share["value"] == sampler["share_of_train_step"]["median"]
    assert share["met"] is (share["value"] <= 0.02)  # the target's verdict on the measured value
    assert by_target["50-epoch Fashion-MNIST run"]["met"] is None  # not run: no verdict
    share_line = next(line for line in proc.stdout.splitlines() if "sampling share of a train step" in line)
    assert num(share["value"]) in share_line  # the table prints the measured median
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


def test_interleave_records_cpu_seconds_per_unit(monkeypatch):
    import types

    clock = {"wall": 0.0, "cpu": 0.0}
    fake = types.SimpleNamespace(perf_counter=lambda: clock["wall"], process_time=lambda: clock["cpu"])
    monkeypatch.setattr(timing, "time", fake)

    def block(wall, cpu, value):
        def run():
            clock["wall"] += wall
            clock["cpu"] += cpu
            return value
        return run

    cpu: dict[str, list[float]] = {}
    out = timing.interleave({"busy": block(2.0, 4.0, 0.5),  # two threads busy: 2 CPU-s per wall-s
                             "idle": block(1.0, 0.25, 0.1)}, repeats=2, cpu=cpu)
    assert out == {"busy": [0.5, 0.5], "idle": [0.1, 0.1]}
    assert cpu == {"busy": [1.0, 1.0], "idle": [0.025, 0.025]}


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
    assert "MET     EVAE step / VAE step" in table and "under load" not in table
    figures["train"]["load_average"] = {"before": [99.0, 1, 1], "after": [0.5, 1, 1]}
    loaded = run.evaluate_targets(figures)
    assert loaded[0]["met"] is True and loaded[0]["loaded"] is True
    assert "[measured under load: not a verdict for this CPU]" in run.format_table(
        {"figures": {}, "targets": loaded})


FIGURE_NAMES = ["train", "flops", "torch", "sampler", "pipeline", "teardown", "serving", "epoch",
                "ablations", "threads", "profile"]


def recorded_results() -> dict:
    """Every figure's result as full runs recorded them (the JSON files in bench/)."""
    recorded = {}
    for name in ("results-2026-11-21.json", "results.json"):  # the later file wins
        recorded.update(json.loads((ROOT / "bench" / name).read_text())["figures"])
    return recorded


def test_the_registry_is_every_documented_figure_in_order():
    from bench.figures import FIGURES

    assert list(FIGURES) == FIGURE_NAMES
    assert all(f"* ``{name}``" in run.__doc__ for name in FIGURE_NAMES)


@pytest.mark.parametrize("name", FIGURE_NAMES)
def test_every_figure_measures_with_its_module_and_formats_a_recorded_result(name):
    import importlib

    from bench.figures import FIGURES

    module = importlib.import_module(f"bench.fig_{name}")
    assert FIGURES[name].run is module.measure and FIGURES[name].rows is module.rows
    result = recorded_results()[name]
    rows = FIGURES[name].rows(result)
    assert rows and all(len(row) == 4 and row[0] and row[1] not in ("", "-") for row in rows)
    table = run.format_table({"figures": {name: result}, "targets": []})
    printed = [line for line in table.splitlines() if line.startswith(f"{name} ")]
    for metric, median, _, _ in rows:  # each row is printed under its figure, with its median
        assert any(f" {metric} " in line and f" {median} " in line for line in printed), metric


# --------------------------------------------------------------------------- the machine record

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 f16c
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2 f16c
"""


def test_cpu_info_reads_the_model_and_the_isa_flags():
    from bench import machine

    info = machine.cpu_info(CPUINFO)
    assert info["model"] == "AMD EPYC 7B13"
    assert info["isa"] == {"avx2": True, "fma": True, "avx512f": False, "avx512_vnni": False,
                           "avx512_bf16": False, "avx_vnni": False, "amx": False}
    amx = machine.cpu_info(CPUINFO.replace("f16c", "f16c avx512f avx512_vnni amx_tile"))["isa"]
    assert amx["avx512f"] and amx["avx512_vnni"] and amx["amx"] and not amx["avx512_bf16"]


def test_the_record_names_the_machine_and_the_onednn_state(monkeypatch):
    import tensorflow as tf

    from bench import machine

    record = machine.describe(tf)
    assert record["cpu"] and record["cores"] >= record["cores_usable"] >= 1
    assert record["tensorflow"] == tf.__version__
    # read from TensorFlow itself: what the variable chose, else TensorFlow's default for this CPU
    chosen = {"1": True, "0": False}.get(record["onednn"]["env"], record["onednn_default_on_this_cpu"])
    assert record["onednn"]["enabled"] is chosen
    assert set(record["isa"]) == set(machine.ISA_FLAGS.values())
    line = machine.one_line(record)
    assert record["cpu"] in line and "oneDNN" in line and tf.__version__ in line
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert machine.onednn_state()["env"] == "0" and machine.onednn_state()["enabled"] is None


def test_bench_run_turns_onednn_on_unless_the_user_chose(tmp_path):
    code = ("import os, sys; import bench.run; import tensorflow as tf; from bench import machine; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], machine.onednn_state(tf)['enabled'])")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    default = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
    chosen = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"}, timeout=120)
    assert default.stdout.split() == ["1", "True"], default.stderr[-2000:]
    assert chosen.stdout.split() == ["0", "False"], chosen.stderr[-2000:]


def test_the_table_names_the_machine_and_the_load():
    record = {"cpu": "Some CPU", "cores": 2, "cores_usable": 2, "isa": {"avx2": True},
              "onednn": {"env": "1", "enabled": True}, "tensorflow": "2.21.0",
              "load_average": [1.5, 1.0, 0.5]}
    results = {"meta": {"machine": record},
               "figures": {"pipeline": {"pipeline_images_per_s": {"median": 1.0, "q1": 1, "q3": 1,
                                                                   "min": 1, "max": 1, "n": 1},
                                        "pipeline_cpu_ms_per_batch": 2.0, "train_images_per_s": 3.0,
                                        "pipeline_over_consumption": 4.0,
                                        "load_average": {"before": [2.5, 1, 1], "after": [3.5, 1, 1]}}},
               "targets": []}
    table = run.format_table(results)
    assert table.splitlines()[0] == ("Measured on: Some CPU (2 of 2 cores usable), ISA avx2; oneDNN on "
                                     "(TF_ENABLE_ONEDNN_OPTS=1); TensorFlow 2.21.0; load average 1.50/1.00/0.50")
    assert "2.50 / 3.50" in table and "pipeline / consumption" in table


# --------------------------------------------------------------------------- PyTorch reference


def test_torch_reference_is_the_same_network():
    from bench import torch_ref

    if torch_ref.available():
        pytest.skip(torch_ref.available())
    import torch

    from evae_tf import models

    for kind in ("evae", "vae"):
        model = models.build(kind, (32, 32, 1), 64, seed=0)
        keras_count = sum(int(w.numpy().size) for w in model.encoder.trainable_weights
                          + model.decoder.trainable_weights)
        assert torch_ref.parameter_count(kind) == keras_count
    encoder, decoder, heads = torch_ref.build("evae")
    h = encoder(torch.zeros(2, 1, 32, 32))
    assert h.shape == (2, 1024) and set(heads) == {"loc", "raw_spread", "raw_support"}
    assert decoder(torch.zeros(2, 64)).shape == (2, 1, 32, 32)
    stepper = torch_ref.TorchStepper("evae")
    assert stepper.run(1) > 0 and torch.isfinite(stepper.step())


def test_torch_figure_skips_with_one_line_without_torch(monkeypatch):
    import builtins

    from bench import fig_torch, torch_ref
    from bench.harness import Context, Skip

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    reason = torch_ref.available()
    assert reason and "\n" not in reason and "pip install '.[bench]'" in reason
    with pytest.raises(Skip, match="PyTorch is not installed"):
        fig_torch.measure(Context(quick=True))


# --------------------------------------------------------------------------- bimodal probe


def test_threading_candidates_respect_the_users_variables(monkeypatch):
    from bench import threading_candidates as tc

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert tc.apply("omp_1") == {"OMP_NUM_THREADS": "4"}
    assert tc.environment("onednn_off") == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert tc.CANDIDATES["inter_op_1"].inter_op == 1


def test_bimodal_summary_counts_contended_chunks():
    from bench import bimodal

    def chunk(rate, others):
        return {"images_per_s": rate, "process_cores": 1.0, "others_cores": others,
                "busiest_thread_share": 0.5, "images_per_cpu_s": rate}

    results = [{"candidate": "default", "loop": "step", "chunks": [chunk(500, 0.0), chunk(900, 1.0)]},
               {"candidate": "default", "loop": "step", "chunks": [chunk(700, 0.1)]},
               {"candidate": "default", "loop": "step", "error": "boom"}]
    s = bimodal.summarise(results)["default@step"]
    assert (s["processes"], s["errors"], s["chunks"], s["chunks_contended"]) == (2, 1, 3, 1)
    assert s["process_median_images_per_s"]["median"] == 700.0
    assert s["quiet_chunk_images_per_s"]["max"] == 700.0
    table = bimodal.markdown(bimodal.summarise(results))
    assert "| `default@step` | 2 | 700 / 700 / 700 | 500 / 700 / 900 |" in table and "1 of 3 |" in table


def test_bimodal_thread_sampling_sees_this_process():
    from bench import bimodal

    threads = bimodal.thread_cpu()
    assert str(os.getpid()) in threads and all(cpu >= 0 for _, cpu in threads.values())
    busy, total = bimodal.machine_busy()
    assert 0 <= busy <= total


def test_no_bench_function_is_over_60_lines():
    import ast

    long = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name in ("load_test.py", "loadgen.py"):  # the serving tools, tested with serving
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long, long
