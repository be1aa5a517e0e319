"""Run the HTTP server process (uvicorn) around a :class:`ModelService`."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import cv2
import grpc
import uvicorn

from rtdetr_edge.paddle_import import import_paddle
from rtdetr_edge.server import oip
from rtdetr_edge.server.app import create_app
from rtdetr_edge.server.grpc_server import create_grpc_server
from rtdetr_edge.server.metrics import ServerMetrics
from rtdetr_edge.server.model_service import ModelService, ServeOptions
from rtdetr_edge.warmup import WarmedModel

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit; a batch of 4 images is 19.7 MB
_TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024


def tune_malloc() -> bool:
    """Keep multi-MB image buffers in the heap instead of returning them to the kernel.

    With glibc defaults every 4.9 MB image tensor is unmapped when freed and
    page-faulted back on the next request (~700-1,600 faults/image, measured +2.2 ms
    p50 and -22 % throughput at concurrency 8 on this machine kind). Per-thread
    arenas also give pages back as they shrink: with the thresholds alone the
    server still took 345 faults/request; one arena brought it to 0. Call before
    any worker thread starts.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    ok = all(
        mallopt(parameter, value)
        for parameter, value in (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES),
            (_M_ARENA_MAX, 1),
        )
    )
    if not ok:
        log.warning("mallopt refused the buffer-reuse settings; expect more page faults per request")
    return ok


class DelayedShutdownServer(uvicorn.Server):
    """uvicorn, except that SIGTERM first turns readiness off and keeps serving for
    ``shutdown_delay`` seconds before it stops accepting connections; and, with a
    ``grpc_port``, the Open Inference Protocol over gRPC beside HTTP on the same event loop
    (started after the model service, drained before it stops).

    Kubernetes sends SIGTERM at the same moment it removes the pod from the Service's
    endpoints; kube-proxies, ingress controllers and client-side balancers learn that a
    moment later. Closing the listener at once refuses the requests still routed here
    (measured on the real-cluster tier: 111 of 994 requests refused during a model swap).
    SIGINT (Ctrl-C) stops at once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        shutdown_delay: float,
        on_terminating: Callable[[], None],
        grpc_server: Callable[[], grpc.aio.Server] | None = None,
        grpc_port: int | None = None,
    ) -> None:
        super().__init__(config)
        self.shutdown_delay = shutdown_delay
        self.on_terminating = on_terminating
        self._delayed: threading.Timer | None = None
        self._make_grpc_server = grpc_server
        self.grpc_port = grpc_port
        self.grpc: grpc.aio.Server | None = None
        self.grpc_unbound: str | None = None  # the address gRPC could not listen on

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or self._make_grpc_server is None or self.grpc_port is None:
            return
        self.grpc = self._make_grpc_server()
        address = f"{self.config.host}:{self.grpc_port}"
        try:
            self.grpc_port = self.grpc.add_insecure_port(address)
        except RuntimeError:
            self.grpc, self.grpc_unbound, self.should_exit = None, address, True  # HTTP shuts down as usual
            return
        await self.grpc.start()
        log.info("listening for gRPC (Open Inference Protocol) on %s:%d", self.config.host, self.grpc_port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:
            # New calls are refused (clients reconnect elsewhere on the GOAWAY), calls in flight
            # finish within the drain time; then HTTP drains and the model service stops.
            await self.grpc.stop(self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.shutdown_delay > 0 and self._delayed is None and not self.should_exit:
            log.info("SIGTERM: not ready any more; serving %.0f s longer while endpoints update, then draining",
                     self.shutdown_delay)  # fmt: skip
            self.on_terminating()
            self._delayed = threading.Timer(self.shutdown_delay, super().handle_exit, (sig, frame))
            self._delayed.daemon = True
            self._delayed.start()
            return
        super().handle_exit(sig, frame)


def run_server(
    options: ServeOptions,
    host: str,
    port: int,
    drain_seconds: float,
    on_ready: Callable[[WarmedModel], None] | None = None,
    shutdown_delay: float = 0.0,
    grpc_port: int | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (after ``shutdown_delay`` on SIGTERM, draining in-flight
    requests), over HTTP on ``port`` and, with ``grpc_port``, gRPC. Returns the exit code.

    A failed warm-up stops the server with exit code 1 and the cause as the last
    line of stderr, so Kubernetes shows it in the pod's termination message.
    """
    tune_malloc()
    # Requests are preprocessed in parallel by our own threads; OpenCV's per-call
    # pool on top only oversubscribes the cores (c=8: 83.7 -> 86.4 images/s here).
    cv2.setNumThreads(1)
    # Paddle installs glog's failure-signal handler (SIGTERM included: it dumps a
    # stack and dies) when first imported. Import it now, so uvicorn's graceful
    # drain handlers, installed by server.run(), are the ones that stay.
    import_paddle()
    metrics = ServerMetrics(options.predictor.max_batch_size)
    fatal: list[str] = []
    server: uvicorn.Server | None = None

    def stop_on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    service = ModelService(options, metrics, on_fatal=stop_on_fatal, on_ready=on_ready)
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(drain_seconds),
    )
    grpc_limit = oip.infer_body_limit(options.max_body_bytes, options.predictor.max_batch_size)
    server = DelayedShutdownServer(config, shutdown_delay, service.begin_termination,
                                   lambda: create_grpc_server(service, grpc_limit), grpc_port)  # fmt: skip
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler that was
    # installed before it; make that one ours so a clean drain exits 0, not -15.
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    log.info("listening on http://%s:%d (ready after warm-up)", host, port)
    server.run()
    if server.grpc_unbound:
        print(f"error: could not listen for gRPC on {server.grpc_unbound} (in use, or not this host's address)",
              file=sys.stderr)  # fmt: skip
        return _exit_now(1) if service.warming_up else 1
    if terminated and service.warming_up:
        log.info("stopped on SIGTERM during warm-up")
        return _exit_now(0)
    if terminated:
        log.info("drained and stopped on SIGTERM")
    if fatal:
        print(f"error: {fatal[0]}", file=sys.stderr)
        return 1
    if not server.started:
        print(f"error: could not listen on {host}:{port}", file=sys.stderr)
        return 1
    return 0


def _exit_now(code: int) -> NoReturn:
    """Exit while Paddle is still working in the warm-up thread: letting the interpreter finalize
    under it aborts (SIGABRT, exit 134). Nothing is half-written: shape files and engine-cache
    entries appear by rename, and a staging directory left now is discarded next time."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
