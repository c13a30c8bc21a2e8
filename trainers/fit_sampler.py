"""Fit (or refit) the ex-post latent sampler of a trained run.

    python -m trainers.fit_sampler --workdir runs/fm                       # 10 components, full
    python -m trainers.fit_sampler --workdir runs/fm --components 20 --covariance-type diag

Encodes the run's training split, draws one latent from each posterior and fits a
Gaussian mixture to them (docs/math.md, 'Ex-post sampling: how images are generated').
The sampler is written atomically into the run (``expost_sampler.npz``; for
``--weights best|last``, ``expost_sampler.<weights>.npz``), where ``model.generate``,
``trainers.evaluate`` and ``export.saved_model`` find it. ``trainers.fit`` runs this
when training ends.
"""

from __future__ import annotations

import argparse
import logging
import sys

from evae_tf.cli import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    HelpFormatter,
    add_sampler_arguments,
    fail,
    readable_dir,
    sigterm_as_keyboard_interrupt,
)
from evae_tf.config import SamplerConfig
from evae_tf.errors import EvaeError
from evae_tf.runs.rundir import WEIGHTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainers.fit_sampler",
        description="Fit the ex-post latent sampler of a trained run (generation from the "
                    "aggregate posterior instead of the paper's prior).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--workdir", required=True, type=readable_dir, help="the run directory")
    p.add_argument("--weights", choices=WEIGHTS, default="final",
                   help="the encoder weights whose latents are fitted")
    p.add_argument("--data-dir", type=readable_dir, default=None,
                   help="directory with the dataset (default: the run's, then the usual search)")
    add_sampler_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from evae_tf import runs

    sampler_config = SamplerConfig(args.components, args.covariance_type)
    try:
        with sigterm_as_keyboard_interrupt():
            model, config = runs.load_model(args.workdir, args.weights, with_sampler=False)  # may be damaged
            sampler = runs.fit_sampler(args.workdir, model, config, args.weights, sampler_config,
                                       data_dir=args.data_dir)
    except (EvaeError, OSError) as e:
        return fail(e)
    except KeyboardInterrupt:
        print("Interrupted; the run's sampler file was not changed.", file=sys.stderr)
        return EXIT_INTERRUPTED
    info = sampler.fit_info
    print(f"Ex-post sampler: {sampler.n_components} components, {info['covariance_type']} covariance, "
          f"fitted to {info['n_examples']} latents in {info['fit_seconds']} s\n"
          f"  written to : {runs.RunDir(args.workdir).sampler_file(args.weights)}\n"
          f"  export     : python -m export.saved_model --workdir {args.workdir} "
          f"--model-base-path models/{config.model.kind}" + ("" if args.weights == "final" else f" --weights {args.weights}"))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
