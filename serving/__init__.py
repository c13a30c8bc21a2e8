"""TensorFlow Serving's REST and gRPC APIs: ``server`` (a local stand-in for TF Serving),
``client`` (either protocol), ``core`` (what both protocols share). See docs/serving.md."""

from evae_tf import runtime

runtime.configure()  # oneDNN on and a quiet TensorFlow import: before TensorFlow loads
