"""Entry points; TensorFlow's process settings come first (see evae_tf/runtime.py)."""

from evae_tf import runtime

runtime.configure()
