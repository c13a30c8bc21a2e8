"""A local stand-in for TensorFlow Serving (machines without Docker): the same layout,
URLs, RPCs, messages, status codes and flags (``docs/serving.md``)::

    python -m serving.server --model_name evae --model_base_path models/evae  # REST 8501, gRPC 8500
    python -m serving.server --model_config_file serving/models.config
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from waitress import wasyncore
from waitress.server import create_server

from evae_tf.cli import EXIT_INTERRUPTED, HelpFormatter, fail, in_range, positive
from evae_tf.errors import EvaeError, ModelConfigError
from serving.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig, read_model_config_file
from serving.config import single_model_config as _single

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# waitress reads requests on one event loop and hands only complete ones to its threads:
# an idle or slow client holds a socket, never a thread, and is closed after this long.
IDLE_TIMEOUT_SECONDS = 30


class ModelServer:
    """Registry, predict core, REST and gRPC servers, in-process: ``with ModelServer(configs,
    port=0, grpc_port=0) as server:`` serves at ``server.url`` and ``server.grpc_address``.
    ``limits``: ``Predictor``'s ``num_threads``, ``timeout_in_ms`` and ``max_batch_size``."""

    def __init__(self, configs: list[ModelConfig], *, host: str = "127.0.0.1",
                 port: int | None = 8501, grpc_port: int | None = None,
                 poll_wait_seconds: float = 1.0, loader=None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, **limits):
        from serving.core import ModelRegistry, Predictor, load_servable  # TensorFlow: so late that
        from serving.rest import RestApp  # --help and usage errors stay fast
        self.registry = ModelRegistry(configs, poll_wait_seconds, loader or load_servable)
        self.predictor = Predictor(self.registry, **limits)
        self.app = RestApp(self.predictor, max_request_bytes)
        self.max_request_bytes = max_request_bytes
        self._host, self._port, self._grpc_port = host, port, grpc_port
        self._http = self._grpc = None  # waitress's server, gRPC's server
        # Once started: the bound ports, REST's URL and gRPC's host:port (None: not served).
        self.port = self.url = self.grpc_port = self.grpc_address = None
        self._thread: threading.Thread | None = None
        self._stopped, self._lock = threading.Event(), threading.Lock()

    def _address(self, port: int) -> str:
        return f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"

    def start(self) -> ModelServer:
        """Bind, load the initial versions (connections wait meanwhile), start polling, and
        serve both protocols from background threads."""
        if self._port is not None:
            self._http = create_server(
                self.app, host=self._host, port=self._port, threads=self.predictor.num_threads,
                channel_timeout=IDLE_TIMEOUT_SECONDS, connection_limit=1000,
                cleanup_interval=max(1, IDLE_TIMEOUT_SECONDS // 3),
                # A memory guard; RestApp answers bodies over --max_request_bytes (413).
                max_request_body_size=self.max_request_bytes + 2**20)
            self.port = int(self._http.effective_port)
            self.url = f"http://{self._address(self.port)}"
            logger.info("Exporting HTTP/REST API at:%s:%d ...", self._host, self.port)
        if self._grpc_port is not None:
            from serving.grpc_api import make_grpc_server
            self._grpc, self.grpc_port = make_grpc_server(
                self.predictor, self._address(self._grpc_port), self.max_request_bytes)
            if not self.grpc_port:
                raise OSError(f"cannot bind gRPC to {self._address(self._grpc_port)}")
            self.grpc_address = self._address(self.grpc_port)
            logger.info("Running gRPC ModelServer at %s ...", self.grpc_address)
        self.registry.poll_once()
        self.registry.start_polling()
        if self._grpc is not None:
            self._grpc.start()
        if self._http is not None:  # its loop returns once shutdown() has closed every channel
            self._thread = threading.Thread(target=self._http.run, name="rest", daemon=True)
            self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving; safe from any thread, and more than once."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self.registry.stop(wait=False)
        if self._grpc is not None:
            self._grpc.stop(grace=5).wait()
        if self._http is not None:
            http = self._http
            try:  # close every channel from the loop's own thread, which then returns
                http.trigger.pull_trigger(lambda: wasyncore.close_all(http._map))
            except OSError:  # the trigger is already closed: the loop is stopping by itself
                wasyncore.close_all(http._map)

    def close(self) -> None:
        self.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._http is not None:
            wasyncore.close_all(self._http._map)
            self._http.task_dispatcher.shutdown()
            self._http = None
        self.registry.stop()
        self.predictor.close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


# --- Command line -----------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server", formatter_class=HelpFormatter,
        description="Serve SavedModels over TensorFlow Serving's REST and gRPC APIs.")
    add, port, count = parser.add_argument, in_range(int, 0, 65535), in_range(int, 0, 1024)
    add("--model_name", default="default", help="name of the single model")
    add("--model_base_path", help="directory holding the model's version dirs")
    add("--model_config_file", help="ModelServerConfig text proto (several models)")
    add("--port", type=port, default=8500, help="gRPC port; 0 disables gRPC")
    add("--rest_api_port", type=port, default=8501, help="REST port; 0 picks a free one")
    add("--rest_api_host", "--host", dest="host", default="127.0.0.1",
        help="address to bind (0.0.0.0 exposes the server to the network)")
    add("--rest_api_num_threads", type=positive(int), default=None,
        help="concurrent predictions (default 4 x CPUs)")
    add("--rest_api_timeout_in_ms", type=int, default=30_000,
        help="predict deadline; <= 0 disables it")
    add("--file_system_poll_wait_seconds", type=in_range(float, 0), default=1.0,
        help="seconds between polls for new versions; 0 polls once")
    add("--max_request_bytes", type=positive(int), default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger requests are refused (REST 413, gRPC RESOURCE_EXHAUSTED)")
    add("--max_batch_size", type=positive(int), default=DEFAULT_MAX_BATCH_SIZE,
        help="largest batch dimension of an input and largest num_samples")
    add("--tensorflow_intra_op_parallelism", type=count, default=0,
        help="threads one TensorFlow op may use; 0: TensorFlow chooses (docs/serving.md)")
    add("--tensorflow_inter_op_parallelism", type=count, default=0,
        help="TensorFlow ops run at once; 0 lets TensorFlow choose")
    return parser


def _configs_from_args(parser: argparse.ArgumentParser, args) -> list[ModelConfig]:
    if not args.host.strip():
        parser.error("--rest_api_host must not be empty (use 0.0.0.0 to listen on every address)")
    if args.model_config_file:
        if not Path(args.model_config_file).is_file():
            parser.error(f"--model_config_file {args.model_config_file!r} does not exist")
        try:
            configs = read_model_config_file(args.model_config_file)
        except ModelConfigError as e:
            parser.error(f"--model_config_file: {e}")
        if not configs:
            parser.error(f"--model_config_file {args.model_config_file!r} lists no models")
    elif not args.model_base_path:
        parser.error("one of --model_base_path or --model_config_file is required")
    elif not Path(args.model_base_path).is_dir():
        parser.error(f"--model_base_path {args.model_base_path!r} does not exist")
    elif not args.model_name:
        parser.error("--model_name must not be empty")
    else:
        configs = [_single(args.model_name, args.model_base_path)]
    for config in configs:
        if not Path(config.base_path).is_dir():
            parser.error(f"base_path {config.base_path!r} of model {config.name!r} does not exist")
    return configs


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    configs = _configs_from_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        import tensorflow as tf  # its thread pools are set before anything runs
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
        server = ModelServer(
            configs, host=args.host, port=args.rest_api_port, grpc_port=args.port or None,
            poll_wait_seconds=args.file_system_poll_wait_seconds,
            max_request_bytes=args.max_request_bytes, num_threads=args.rest_api_num_threads,
            timeout_in_ms=args.rest_api_timeout_in_ms, max_batch_size=args.max_batch_size)
    except KeyboardInterrupt:  # before the handlers below: nothing is served yet
        return EXIT_INTERRUPTED

    def on_signal(signum, _frame):
        logger.info("Received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for gRPC's grace period: call it off the signal handler.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except (EvaeError, OSError, RuntimeError) as e:
        server.close()
        return fail(f"cannot serve on {args.host} (ports {args.rest_api_port}, {args.port}): {e}")
    try:
        server._stopped.wait()  # until a signal's shutdown()
    finally:
        server.close()
    logger.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
