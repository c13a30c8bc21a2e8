"""The printed table's rows: each figure formats its own result with :class:`Rows`."""

from __future__ import annotations

from typing import Any


def num(x: float | None, digits: int = 3) -> str:
    """A number for the table: thousands separated, else three significant digits."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def spread(s: dict[str, Any] | None) -> str:
    """The quartiles, range and count of a ``bench.timing.summary``."""
    if not isinstance(s, dict) or s.get("median") is None:
        return ""
    return f"IQR {num(s['q1'])}–{num(s['q3'])}, range {num(s['min'])}–{num(s['max'])}, n={s['n']}"


class Rows(list):
    """``(metric, median, unit, spread)`` rows of one figure."""

    def add(self, metric: str, value: Any, unit: str = "") -> None:
        """A summary (median and spread), a number, or text."""
        if isinstance(value, dict):
            self.append((metric, num(value.get("median")), unit, spread(value)))
        elif isinstance(value, (int, float)):
            self.append((metric, num(value), unit, ""))
        else:
            self.append((metric, str(value), unit, ""))

    def text(self, metric: str, value: str, unit: str = "", note: str = "") -> None:
        self.append((metric, value, unit, note))
