"""Benchmark suite of evae-tf: ``python -m bench.run`` (``make bench``).

See ``bench/run.py`` for the figures and ``bench/NOTES.md`` for the measurements and
the changes they motivated.
"""

from evae_tf import runtime

runtime.configure()  # oneDNN on and a quiet TensorFlow import: before TensorFlow loads
