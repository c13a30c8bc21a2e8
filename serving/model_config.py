"""TF Serving's ``--model_config_file``: a small parser for its protobuf text format.

Reads the subset of ``tensorflow_serving/config/model_server_config.proto`` that a
model server needs::

    model_config_list {
      config {
        name: 'evae'
        base_path: '/models/evae'        # relative paths: against the file's directory
        model_platform: 'tensorflow'
        model_version_policy { all {} }  # or latest { num_versions: 2 } /
                                         #    specific { versions: 1 versions: 3 }
        version_labels { key: 'stable' value: 1 }
      }
      config { name: "vae" base_path: "/models/vae" model_platform: "tensorflow" }
    }

Text-format rules handled: ``#`` comments, single or double quotes with C escapes,
adjacent string literals concatenated, optional ``:`` before a message, ``{}`` or
``<>`` message delimiters, optional ``,``/``;`` separators, repeated fields written
repeatedly or as a ``[a, b]`` list.

    configs = parse_model_config_file("models.config")
    configs[0].name, configs[0].base_path  # ('evae', '/models/evae')
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any


class ModelConfigError(ValueError):
    """A model config file that cannot be parsed or is not valid."""


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which version directories to serve: ``latest`` N, ``all``, or ``specific`` ones.

    TF Serving's default is ``latest`` with ``num_versions=1``.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"Unknown version policy. Received: kind={self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(
                f"latest policy needs num_versions >= 1. Received: num_versions={self.num_versions}"
            )

    def select(self, available: list[int]) -> set[int]:
        """The versions to load among the ``available`` version directories."""
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return set(available) & set(self.versions)
        return set(sorted(available, reverse=True)[: self.num_versions])


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    model_platform: str = "tensorflow"
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: tuple[tuple[str, int], ...] = ()


# --------------------------------------------------------------------------------------
# Generic text-format reader: a message is a list of (field, value, line) triples
# --------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:,;])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1 :]).group()
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        elif nxt == "x":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
            if not digits:
                raise ValueError("bad \\x escape")
            out.append(chr(int(digits.group(), 16)))
            i += 2 + len(digits.group())
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


class _Reader:
    def __init__(self, text: str, source: str):
        self.source = source
        self.tokens: list[tuple[str, str, int]] = []  # kind, text, line
        pos, line = 0, 1
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match:
                raise self.error(line, f"unexpected character {text[pos]!r}")
            kind = match.lastgroup
            if kind != "space":
                self.tokens.append((kind, match.group(), line))
            line += match.group().count("\n")
            pos = match.end()
        self.index = 0

    def error(self, line: int, message: str) -> ModelConfigError:
        return ModelConfigError(f"{self.source}:{line}: {message}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            last_line = self.tokens[-1][2] if self.tokens else 1
            raise self.error(last_line, "unexpected end of file")
        self.index += 1
        return token

    def message(self, closing: str | None) -> list[tuple[str, Any, int]]:
        fields: list[tuple[str, Any, int]] = []
        while True:
            token = self.peek()
            if token is None:
                if closing is not None:
                    raise self.error(self.tokens[-1][2], f"missing {closing!r}")
                return fields
            kind, text, line = token
            if kind == "punct" and text == closing:
                self.index += 1
                return fields
            if kind != "ident":
                raise self.error(line, f"expected a field name, got {text!r}")
            self.index += 1
            fields.extend((text, value, line) for value in self.field_values(line))
            nxt = self.peek()
            if nxt and nxt[0] == "punct" and nxt[1] in ",;":
                self.index += 1

    def field_values(self, line: int) -> list[Any]:
        kind, text, _ = self.take()
        has_colon = kind == "punct" and text == ":"
        if has_colon:
            kind, text, line = self.take()
        if kind == "punct" and text in "{<":
            return [self.message("}" if text == "{" else ">")]
        if not has_colon:
            raise self.error(line, f"expected ':' or '{{', got {text!r}")
        if kind == "punct" and text == "[":
            values = []
            while True:
                kind, text, line = self.take()
                if kind == "punct" and text == "]" and not values:
                    return values
                if kind == "punct" and text in "{<":
                    values.append(self.message("}" if text == "{" else ">"))
                else:
                    values.append(self.scalar(kind, text, line))
                kind, text, line = self.take()
                if kind == "punct" and text == "]":
                    return values
                if not (kind == "punct" and text == ","):
                    raise self.error(line, f"expected ',' or ']', got {text!r}")
        return [self.scalar(kind, text, line)]

    def scalar(self, kind: str, text: str, line: int) -> Any:
        if kind == "string":
            parts = [text]
            while (nxt := self.peek()) and nxt[0] == "string":
                parts.append(self.take()[1])
            try:
                return "".join(_unquote(p) for p in parts)
            except (ValueError, AttributeError):
                raise self.error(line, f"invalid escape in {text}") from None
        if kind == "number":
            try:
                return int(text, 0)
            except ValueError:
                return float(text.rstrip("fF"))
        if kind == "ident":
            return _Identifier(text)
        raise self.error(line, f"expected a value, got {text!r}")


class _Identifier(str):
    """An unquoted enum or bool value."""


# --------------------------------------------------------------------------------------
# ModelServerConfig schema
# --------------------------------------------------------------------------------------


def _fields(
    reader: _Reader, fields: list[tuple[str, Any, int]], message: str, allowed: dict[str, str]
) -> dict[str, list[tuple[Any, int]]]:
    """Group ``fields`` by name, checking names and kinds ('message' / 'scalar')."""
    grouped: dict[str, list[tuple[Any, int]]] = {}
    for name, value, line in fields:
        if name not in allowed:
            raise reader.error(line, f"unknown field {name!r} in {message}")
        is_message = isinstance(value, list)
        if is_message != (allowed[name] == "message"):
            raise reader.error(line, f"field {name!r} of {message} must be a {allowed[name]}")
        grouped.setdefault(name, []).append((value, line))
    return grouped


def _single(reader: _Reader, grouped: dict, name: str, message: str, default: Any = None) -> Any:
    values = grouped.get(name, [])
    if len(values) > 1:
        raise reader.error(values[1][1], f"field {name!r} of {message} is set twice")
    return values[0][0] if values else default


def _int(reader: _Reader, value: Any, line: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise reader.error(line, f"{what} must be an integer, got {value!r}")
    return value


def _string(reader: _Reader, value: Any, line: int, what: str) -> str:
    if not isinstance(value, str) or isinstance(value, _Identifier):
        raise reader.error(line, f"{what} must be a quoted string, got {value!r}")
    return value


def _version_policy(reader: _Reader, fields: list, line: int) -> VersionPolicy:
    grouped = _fields(
        reader,
        fields,
        "ServableVersionPolicy",
        {"latest": "message", "all": "message", "specific": "message"},
    )
    if len(grouped) != 1 or len(next(iter(grouped.values()))) != 1:
        raise reader.error(line, "model_version_policy needs exactly one of latest, all, specific")
    ((kind, [(body, body_line)]),) = grouped.items()
    if kind == "all":
        _fields(reader, body, "All", {})
        return VersionPolicy("all")
    if kind == "latest":
        inner = _fields(reader, body, "Latest", {"num_versions": "scalar"})
        num = _single(reader, inner, "num_versions", "Latest", 1)
        num = _int(reader, num, body_line, "num_versions")
        if num < 1:
            raise reader.error(body_line, f"num_versions must be >= 1, got {num}")
        return VersionPolicy("latest", num_versions=num)
    inner = _fields(reader, body, "Specific", {"versions": "scalar"})
    versions = tuple(_int(reader, v, ln, "versions") for v, ln in inner.get("versions", []))
    if not versions:
        raise reader.error(body_line, "specific version policy lists no versions")
    return VersionPolicy("specific", versions=versions)


def _model_config(reader: _Reader, fields: list, line: int, base_dir: Path) -> ModelConfig:
    grouped = _fields(
        reader,
        fields,
        "ModelConfig",
        {
            "name": "scalar",
            "base_path": "scalar",
            "model_platform": "scalar",
            "model_type": "scalar",
            "model_version_policy": "message",
            "version_labels": "message",
            "logging_config": "message",
        },
    )
    name = _string(reader, _single(reader, grouped, "name", "ModelConfig", ""), line, "name")
    if not name:
        raise reader.error(line, "a model config has no name")
    base_path = _string(
        reader, _single(reader, grouped, "base_path", "ModelConfig", ""), line, "base_path"
    )
    if not base_path:
        raise reader.error(line, f"model {name!r} has no base_path")
    if not os.path.isabs(base_path):
        base_path = str(base_dir / base_path)
    platform = _single(reader, grouped, "model_platform", "ModelConfig", "")
    model_type = _single(reader, grouped, "model_type", "ModelConfig")
    if not platform and model_type in ("TENSORFLOW", 1):
        platform = "tensorflow"
    if not platform:
        raise reader.error(
            line, f"model {name!r} has no model_platform (TF Serving needs 'tensorflow')"
        )
    if platform != "tensorflow":
        raise reader.error(
            line,
            f"model {name!r}: only model_platform 'tensorflow' is supported, got {platform!r}",
        )
    policy_fields = _single(reader, grouped, "model_version_policy", "ModelConfig")
    policy = (
        VersionPolicy()
        if policy_fields is None
        else _version_policy(reader, policy_fields, grouped["model_version_policy"][0][1])
    )
    labels = []
    for entry, entry_line in grouped.get("version_labels", []):
        inner = _fields(reader, entry, "version_labels", {"key": "scalar", "value": "scalar"})
        key = _string(
            reader, _single(reader, inner, "key", "version_labels", ""), entry_line, "key"
        )
        value = _int(
            reader, _single(reader, inner, "value", "version_labels", 0), entry_line, "value"
        )
        labels.append((key, value))
    return ModelConfig(name, base_path, "tensorflow", policy, tuple(labels))


def parse_model_config(text: str, base_dir: str | os.PathLike = ".", source: str = "<config>"):
    """Parse a ``ModelServerConfig`` text proto into a list of :class:`ModelConfig`.

    Raises:
        ModelConfigError: with ``source:line:`` of the offending field.
    """
    reader = _Reader(text, source)
    top = _fields(
        reader,
        reader.message(None),
        "ModelServerConfig",
        {"model_config_list": "message", "custom_model_config": "message"},
    )
    if "custom_model_config" in top:
        raise reader.error(top["custom_model_config"][0][1], "custom_model_config is not supported")
    configs: list[ModelConfig] = []
    for body, _ in top.get("model_config_list", []):
        inner = _fields(reader, body, "ModelConfigList", {"config": "message"})
        for fields, line in inner.get("config", []):
            config = _model_config(reader, fields, line, Path(base_dir))
            if any(c.name == config.name for c in configs):
                raise reader.error(
                    line, f"Illegal to list model {config.name} multiple times in config list"
                )
            configs.append(config)
    return configs


def parse_model_config_file(path: str | os.PathLike) -> list[ModelConfig]:
    """Read ``path``; relative ``base_path`` values resolve against its directory."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse_model_config(text, base_dir=path.resolve().parent, source=str(path))
