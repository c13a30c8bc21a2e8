"""evae_tf.runtime: oneDNN on by default for entry points, the user's setting kept,
results unchanged within float tolerance, and a quiet start-up."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evae_tf import runtime

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=True)


PROBE = "import trainers; from evae_tf import runtime; print(runtime.onednn_enabled())"


@pytest.mark.parametrize("user_value, expected", [(None, "True"), ("1", "True"), ("0", "False")])
def test_entry_points_turn_onednn_on_unless_the_user_chose(user_value, expected):
    out = _run(PROBE, TF_ENABLE_ONEDNN_OPTS=user_value)
    assert out.stdout.strip() == expected


# A small network's forward pass and gradient, on fixed inputs and weights, as numbers.
FORWARD = """
import sys
from evae_tf import runtime
runtime.configure(onednn=False)
import numpy as np, keras, tensorflow as tf
from evae_tf.models import networks
keras.utils.set_random_seed(0)
enc = networks.build_encoder((32, 32, 1), 4, heads=("loc", "log_var"))
dec = networks.build_decoder((32, 32, 1), 4)
x = np.random.default_rng(0).uniform(size=(8, 32, 32, 1)).astype("float32")
with tf.GradientTape() as tape:
    y = dec(enc(x)["loc"])
    loss = tf.reduce_sum(y)
grads = tape.gradient(loss, enc.trainable_variables)
np.save(sys.argv[1], np.concatenate([y.numpy().ravel(), grads[0].numpy().ravel()]))
"""


def test_onednn_changes_results_only_by_float_round_off(tmp_path):
    outputs = {}
    for value in ("0", "1"):
        path = tmp_path / f"out{value}.npy"
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        env.update(TF_ENABLE_ONEDNN_OPTS=value, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-c", FORWARD, str(path)], env=env, cwd=ROOT, check=True,
                       capture_output=True, timeout=180)
        outputs[value] = np.load(path)
    off, on = outputs["0"], outputs["1"]
    scale = np.abs(off).max()
    # float32 sums over at most a few thousand terms: relative round-off well below 1e-4.
    np.testing.assert_allclose(on, off, rtol=0, atol=1e-4 * scale)
    assert not np.array_equal(on[:10], np.zeros(10))


def test_help_and_startup_are_clean():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-m", "trainers.fit", "--help"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0
    assert out.stdout.startswith("usage: python -m trainers.fit")
    assert out.stderr == ""


def test_filtered_stderr_drops_only_noise(capfd):
    with runtime.filtered_stderr(("noise-marker",)):
        os.write(2, b"a noise-marker line\n")
        os.write(2, b"a real warning\n")
        os.write(2, b"more noise-marker\n")
    assert capfd.readouterr().err == "a real warning\n"


def test_noise_patterns_keep_cuinit_errors_on_gpu_machines(monkeypatch):
    monkeypatch.setattr(runtime, "has_nvidia_device", lambda: True)
    assert not any("cuInit" in p for p in runtime.noise_patterns())
    monkeypatch.setattr(runtime, "has_nvidia_device", lambda: False)
    assert any("cuInit" in p for p in runtime.noise_patterns())
