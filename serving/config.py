"""``--model_config_file``: TF Serving's ``ModelServerConfig`` text proto, read with
protobuf's ``text_format`` into the ``tensorflow_serving.config`` messages the registry
uses as they are (``docs/serving.md``)::

    configs = read_model_config_file("serving/models.config")
    configs[0].name, configs[0].base_path  # ('evae', '/models/evae')

Relative ``base_path`` values resolve against the file's directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from evae_tf.errors import ModelConfigError

ModelConfig = model_server_config_pb2.ModelConfig
DEFAULT_MAX_BATCH_SIZE = 1024  # requests for more rows are refused before the model runs


def single_model_config(name: str, base_path: str | os.PathLike) -> ModelConfig:
    """The config of ``--model_name`` / ``--model_base_path`` (latest version only)."""
    return ModelConfig(name=name, base_path=str(Path(base_path).resolve()),
                       model_platform="tensorflow")


def select_versions(config: ModelConfig, available: list[int]) -> set[int]:
    """The versions ``config``'s version policy serves among the ``available`` ones."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available)
    if kind == "specific":
        return set(available) & set(policy.specific.versions)
    num = policy.latest.num_versions if kind == "latest" else 1
    return set(sorted(available, reverse=True)[: max(num, 1)])


def _problem(config: ModelConfig) -> str | None:
    """What is wrong with one model's config, or None."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if not config.name:
        return "a model config has no name"
    if not config.base_path:
        return f"model {config.name!r} has no base_path"
    if config.model_platform != "tensorflow":
        return (f"model {config.name!r}: model_platform must be 'tensorflow', "
                f"got {config.model_platform!r}")
    if kind == "latest" and policy.latest.num_versions < 1:
        return f"model {config.name!r}: num_versions must be >= 1"
    if kind == "specific" and not policy.specific.versions:
        return f"model {config.name!r}: the specific version policy lists no versions"
    return None


def parse_model_config(text: str, base_dir: str | os.PathLike = ".",
                       source: str = "<config>") -> list[ModelConfig]:
    """The ``ModelConfig`` messages of a ``ModelServerConfig`` text proto; a
    ``ModelConfigError`` says ``source:line:column : problem`` or ``source: problem``."""
    server_config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, server_config)
    except text_format.ParseError as e:
        raise ModelConfigError(f"{source}:{e}") from None
    if server_config.WhichOneof("config") == "custom_model_config":
        raise ModelConfigError(f"{source}: custom_model_config is not supported")
    configs = list(server_config.model_config_list.config)
    names = [config.name for config in configs]
    for config in configs:
        problem = _problem(config)
        if problem is None and names.count(config.name) > 1:
            problem = f"Illegal to list model {config.name} multiple times in config list"
        if problem:
            raise ModelConfigError(f"{source}: {problem}")
        config.base_path = str(Path(base_dir) / config.base_path)  # an absolute one stays
    return configs


def read_model_config_file(path: str | os.PathLike) -> list[ModelConfig]:
    """Read ``path`` (errors name it); relative base paths resolve against its directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelConfigError(f"{path}: cannot read: {e}") from None
    return parse_model_config(text, base_dir=path.resolve().parent, source=str(path))
