"""The one network probe: is a host reachable, before a download is attempted?

:mod:`evae_tf.data.sources` asks it before choosing a TFDS download, :mod:`evae_tf.evaluation`
before fetching FID weights; offline, both say what to do instead of hanging. Both call
``network.reachable`` at call time, so tests replace it here to make the project offline.
"""

from __future__ import annotations

import socket

PROBE_TIMEOUT_S = 3.0


def reachable(address: tuple[str, int], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``(host, port)`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False
