"""Benchmark suite of evae-tf: ``python -m bench.run`` (``make bench``).

See ``bench/run.py`` for the figures and ``bench/NOTES.md`` for the measurements and
the changes they motivated.
"""
