"""The ``epoch`` figure's measurement in a process of its own (see ``bench.fig_epoch``).

    python -m bench.epoch [--quick] [--repeats N]

Prints one JSON line: the figure's result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.epoch")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench.fig_epoch import epoch_measurement
    from bench.harness import Context

    ctx = Context(quick=args.quick, repeats=args.repeats, log=lambda m: print(m, file=sys.stderr))
    try:
        result = epoch_measurement(ctx)
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
