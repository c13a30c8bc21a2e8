"""Argument checks shared by the models and the configs: one owner for each rule.

A failed check is a ``ValueError`` that names the argument, what it must be and what was
received. No imports beyond the standard library, so the mathematics (``EVAE``) and the
configs (``evae_tf.config``, read before TensorFlow loads) use the same rules.
"""

from __future__ import annotations

import math
from typing import Any


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite float ``> 0`` (booleans refused)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(value, bool) or not math.isfinite(out) or out <= 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return out


def positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """``value`` itself when it is an ``int > 0`` (or ``None`` when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        allowed = "a positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {allowed}. Received: {name}={value!r}")
    return value


def support(value: Any) -> str | float:
    """An EVAE ``support``: ``"learned"`` or a positive number (a fixed B)."""
    if isinstance(value, str) and value == "learned":
        return value
    try:
        return positive_number("support", value)
    except ValueError:
        raise ValueError(f"`support` must be 'learned' or a positive number. Received: support={value!r}") from None
