"""The command lines' shared parts (evae_tf.cli): a clean and light --help, defaults from
one source, the exit contract, ``--verbose auto`` and the console scripts."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import re
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from idx_fixtures import write_mnist_dir

from evae_tf import errors
from evae_tf.cli import EXIT_FAILURE, EXIT_INTERRUPTED, HelpFormatter, fail, resolve_verbose
from evae_tf.config import MODEL_DEFAULTS, TRAIN_DEFAULTS, ModelConfig, TrainConfig
from export import cleanup, saved_model
from trainers import evaluate, fit, fit_sampler
from trainers import reproduce as reproduce_cli

ROOT = Path(__file__).resolve().parents[1]
# Every command line, as `python -m <module>` and as its console script (pyproject.toml).
COMMANDS = {
    "trainers.fit": "evae-fit", "trainers.fit_sampler": "evae-fit-sampler",
    "trainers.evaluate": "evae-evaluate", "trainers.reproduce": "evae-reproduce",
    "export.saved_model": "evae-export", "export.cleanup": "evae-export-cleanup",
    "serving.server": "evae-serve", "serving.client": "evae-client",
}
HEAVY = ("tensorflow", "keras", "tensorflow_probability", "tf_keras")

PARSERS = {"trainers.fit": fit.build_parser, "trainers.evaluate": evaluate.build_parser,
           "trainers.reproduce": reproduce_cli.build_parser, "export.saved_model": saved_model.build_parser}


def _entries(help_text: str) -> list[str]:
    """The help of each flag on one line (argparse wraps them over several)."""
    flat = " ".join(help_text.split())
    return re.split(r" (?=--[a-z])", flat.split("options:", 1)[1])


@pytest.mark.parametrize("name", PARSERS)
def test_help_names_each_default_once_and_never_none(name):
    help_text = PARSERS[name]().format_help()
    assert "(default: None)" not in " ".join(help_text.split())
    doubled = [e for e in _entries(help_text) if e.count("(default") > 1]
    assert doubled == []


def test_help_shows_the_defaults_of_the_config_dataclasses():
    entries = _entries(fit.build_parser().format_help())
    expected = {"--epochs": "50", "--batch-size": "100", "--learning-rate": "0.0001",
                "--latent-dim": "64", "--support": "learned", "--spread-floor": "0.001"}
    for flag, shown in expected.items():
        entry = next(e for e in entries if e.startswith(flag + " "))
        assert entry.endswith(f"(default: {shown})"), entry
    assert any("(default: 8 16 32 64)" in e for e in _entries(reproduce_cli.build_parser().format_help()))


def test_the_command_lines_take_their_defaults_from_the_dataclasses():
    args = fit.build_parser().parse_args(["--dataset", "mnist"])
    config = fit.config_from_args(args)
    model_fields = {k: v for k, v in MODEL_DEFAULTS.items() if k not in ("image_shape", "seed")}
    assert {k: getattr(config.model, k) for k in model_fields} == model_fields
    train_fields = {k: v for k, v in TRAIN_DEFAULTS.items() if k not in ("workdir", "data_dir")}
    assert {k: getattr(config, k) for k in train_fields} == train_fields
    assert TrainConfig(dataset="mnist").epochs == TRAIN_DEFAULTS["epochs"] == 50
    assert ModelConfig().latent_dim == MODEL_DEFAULTS["latent_dim"] == 64
    grid = reproduce_cli.build_parser().parse_args(["--dataset", "mnist"])
    assert (grid.epochs, grid.batch_size, grid.learning_rate) == (
        TRAIN_DEFAULTS["epochs"], TRAIN_DEFAULTS["batch_size"], TRAIN_DEFAULTS["learning_rate"])


def test_the_formatter_leaves_helps_that_name_their_default_alone():
    p = argparse.ArgumentParser(prog="p", formatter_class=HelpFormatter)
    p.add_argument("--a", type=int, default=3, help="alpha")
    p.add_argument("--b", default=None, help="beta (default: computed)")
    p.add_argument("--c", type=float, default=0.5, help="gamma (default: %(default)s)")
    p.add_argument("--d", action="store_true", help="delta")
    p.add_argument("--e", default="5%", help="epsilon")
    entries = _entries(p.format_help())
    assert [e for e in entries if e.startswith("--") and not e.startswith("--help")] == [
        "--a A alpha (default: 3)", "--b B beta (default: computed)", "--c C gamma (default: 0.5)",
        "--d delta", "--e E epsilon (default: 5%)"]


def test_fail_prints_one_error_line_and_returns_1(capsys):
    error = errors.DataNotFoundError("no copy of mnist", hint="pass --data-dir")
    assert fail(error) == EXIT_FAILURE == 1
    assert capsys.readouterr().err == "error: no copy of mnist (pass --data-dir)\n"
    assert fail(OSError("disk\nfull")) == 1
    assert capsys.readouterr().err == "error: disk full\n"


# --- --help imports no TensorFlow ----------------------------------------------------------


@pytest.mark.parametrize("program", COMMANDS)
def test_help_exits_0_without_importing_tensorflow(program):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", program, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"usage: python -m {program} ")
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert {program.split(".")[0], "evae_tf.cli"} <= imported  # the importtime report was read
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []


# --- the exit contract: one error line (1), interrupted (130) -------------------------------


def _cli_cases(tmp_path: Path) -> dict[str, tuple]:
    """Each command line's main, what it calls in the library, and flags that parse."""
    run = tmp_path / "run"
    run.mkdir()
    return {
        "trainers.fit": (fit.main, "evae_tf.training.train",
                         ["--dataset", "mnist", "--workdir", str(run)]),
        "trainers.fit_sampler": (fit_sampler.main, "evae_tf.runs.load_model", ["--workdir", str(run)]),
        "trainers.evaluate": (evaluate.main, "evae_tf.evaluation.evaluate_run", ["--workdir", str(run)]),
        "trainers.reproduce": (reproduce_cli.main, "evae_tf.experiments.reproduce",
                               ["--dataset", "mnist", "--out", str(tmp_path / "report")]),
        "export.saved_model": (saved_model.main, "export.saved_model.export_run",
                               ["--workdir", str(run), "--model-base-path", str(tmp_path / "m")]),
    }


@pytest.mark.parametrize("program", ["trainers.fit", "trainers.fit_sampler", "trainers.evaluate",
                                     "trainers.reproduce", "export.saved_model"])
@pytest.mark.parametrize("raised, code, line", [
    (errors.RunDirError("run is damaged", hint="rerun trainers.fit"), 1,
     "error: run is damaged (rerun trainers.fit)"),
    (errors.DataNotFoundError("no copy of mnist"), 1, "error: no copy of mnist"),
    (errors.SamplerError("too few\nlatents"), 1, "error: too few latents"),
    (OSError(28, "No space left on device"), 1, "error: [Errno 28] No space left on device"),
    (KeyboardInterrupt(), 130, None),
])
def test_library_errors_exit_1_with_one_line_and_ctrl_c_130(program, raised, code, line, tmp_path,
                                                            monkeypatch, capsys):
    main, target, argv = _cli_cases(tmp_path)[program]

    def raise_it(*args, **kwargs):
        raise raised

    monkeypatch.setattr(target, raise_it)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == EXIT_INTERRUPTED:
        assert err.startswith("Interrupted") and len(err.strip().splitlines()) == 1
    elif program == "export.saved_model" and isinstance(raised, OSError):  # not an EvaeError
        assert err == f"error: export failed: OSError: {line.removeprefix('error: ')}\n"
    else:
        assert err.strip().splitlines()[-1] == line


# --- --verbose auto -------------------------------------------------------------------------


def test_verbose_auto_is_a_bar_on_a_terminal_and_one_line_per_epoch_elsewhere(tmp_path):
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal, open(tmp_path / "log", "w") as log:
            assert resolve_verbose("auto", terminal) == 1
            assert resolve_verbose("auto", log) == 2
            r, w = os.pipe()
            with open(w, "w") as pipe:
                assert resolve_verbose("auto", pipe) == 2
            os.close(r)
            for explicit in (0, 1, 2):
                assert resolve_verbose(explicit, terminal) == resolve_verbose(explicit, log) == explicit
    finally:
        os.close(leader)
        os.close(follower)
    parser = fit.build_parser()
    assert parser.parse_args(["--dataset", "mnist"]).verbose == "auto"
    assert [parser.parse_args(["--dataset", "mnist", "--verbose", v]).verbose
            for v in ("auto", "0", "1", "2")] == ["auto", 0, 1, 2]


def test_fit_into_a_pipe_writes_one_line_per_epoch_and_no_progress_bar(tmp_path):
    write_mnist_dir(tmp_path / "data", n_train=48, n_test=32)
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.fit", "--dataset", "fashion_mnist", "--data-dir",
         str(tmp_path / "data"), "--workdir", str(tmp_path / "run"), "--latent-dim", "4",
         "--batch-size", "16", "--epochs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b[" not in stream and "━" not in stream and "\r" not in stream
    epoch_lines = [line for line in proc.stdout.splitlines() if re.match(r"3/3 - \d+s - .*loss: ", line)]
    assert len(epoch_lines) == 2, proc.stdout
    assert "Training finished: epochs 0 -> 2 of 2" in proc.stdout


# --- console scripts ------------------------------------------------------------------------


def test_each_console_script_is_a_command_lines_main():
    scripts = {script: f"{module}:main" for module, script in COMMANDS.items()}
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert sorted(line for line in section.splitlines()[1:] if line.strip()) == sorted(
        f'{script} = "{target}"' for script, target in scripts.items())
    installed = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")
                 if ep.name in scripts}
    assert {name: ep.value for name, ep in installed.items()} == scripts, "reinstall: pip install -e ."
    for ep in installed.values():
        assert ep.load() is importlib.import_module(ep.module).main


def test_console_scripts_run_and_return_exit_codes(tmp_path):
    bin_dir = Path(sysconfig.get_path("scripts"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([bin_dir / "evae-fit", "--help"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0 and "--dataset" in proc.stdout and "--verbose" in proc.stdout
    proc = subprocess.run([bin_dir / "evae-export-cleanup", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        proc = subprocess.run([bin_dir / "evae-client", "--url", url, "--out", str(tmp_path / "g.png")],
                              capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: cannot reach {url}: connection refused"
    assert cleanup.main([str(tmp_path)]) == 0  # main returns the exit code the script exits with
