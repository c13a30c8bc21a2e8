"""Serving exported decoders over TensorFlow Serving's REST API.

``serving.client`` talks to TF Serving (or the local server); ``serving.server`` is a
local stand-in with the same REST contract for machines without Docker;
``serving.rest`` holds the JSON encoding both share; ``models.config`` is the TF Serving
model config for the ``evae`` and ``vae`` decoders.
"""

from evae_tf import runtime

runtime.configure()  # oneDNN on and a quiet TensorFlow import: before TensorFlow loads
