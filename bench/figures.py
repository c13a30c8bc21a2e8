"""The figures of the benchmark suite, by name (``python -m bench.run --only NAME``).

One module per figure, ``bench/fig_<name>.py``, with ``measure(ctx)`` (a JSON-able dict)
and ``rows(result)`` (its lines of the printed table). What they share is
:mod:`bench.harness`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bench import (
    fig_ablations,
    fig_epoch,
    fig_flops,
    fig_pipeline,
    fig_profile,
    fig_sampler,
    fig_serving,
    fig_teardown,
    fig_threads,
    fig_torch,
    fig_train,
)
from bench.harness import Context, Skip
from bench.table import Rows

__all__ = ["FIGURES", "Context", "Figure", "Skip"]


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure: ``run(ctx)`` measures (a JSON-able dict), ``rows(result)`` formats it."""

    run: Callable[[Context], dict[str, Any]]
    rows: Callable[[dict[str, Any]], Rows]

    def __call__(self, ctx: Context) -> dict[str, Any]:
        return self.run(ctx)


FIGURES: dict[str, Figure] = {
    name: Figure(module.measure, module.rows)
    for name, module in (
        ("train", fig_train),
        ("flops", fig_flops),
        ("torch", fig_torch),
        ("sampler", fig_sampler),
        ("pipeline", fig_pipeline),
        ("teardown", fig_teardown),
        ("serving", fig_serving),
        ("epoch", fig_epoch),
        ("ablations", fig_ablations),
        ("threads", fig_threads),
        ("profile", fig_profile),
    )
}
