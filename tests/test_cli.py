"""The command lines' shared parts (evae_tf.cli): a clean --help, defaults from one source."""

from __future__ import annotations

import argparse
import re

import pytest

from evae_tf.cli import HelpFormatter
from evae_tf.config import MODEL_DEFAULTS, TRAIN_DEFAULTS, ModelConfig, TrainConfig
from export import saved_model
from trainers import evaluate, fit
from trainers import reproduce as reproduce_cli

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
