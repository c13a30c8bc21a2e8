"""Serving exported decoders over TensorFlow Serving's REST and gRPC APIs.

``serving.server`` is a local stand-in for TF Serving (machines without Docker):
``config`` reads its model config file, ``core`` holds the model registry and the predict
core both protocols share, ``rest`` and ``grpc_api`` parse and format each protocol.
``serving.client`` talks to either server over either protocol. See ``docs/serving.md``.
"""

from evae_tf import runtime

runtime.configure()  # oneDNN on and a quiet TensorFlow import: before TensorFlow loads
