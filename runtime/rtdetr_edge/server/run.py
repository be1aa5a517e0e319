"""Run the HTTP server process (uvicorn) around a :class:`ModelService`."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn

import cv2
import grpc
import uvicorn
from starlette.types import ASGIApp

from rtdetr_edge.errors import ModelFileError
from rtdetr_edge.paddle_import import import_paddle
from rtdetr_edge.server import oip
from rtdetr_edge.server.access_log import AccessLog
from rtdetr_edge.server.app import create_app
from rtdetr_edge.server.grpc_server import create_grpc_server
from rtdetr_edge.server.metrics import ServerMetrics
from rtdetr_edge.server.model_service import ModelService, ServeOptions
from rtdetr_edge.server.security import CredentialReloader
from rtdetr_edge.server.tracing import RequestTracer
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


@dataclass
class SideListeners:
    """What listens beside the main HTTP port, and the credentials of both."""

    make_grpc: Callable[[], grpc.aio.Server] | None = None
    grpc_port: int | None = None
    management_app: ASGIApp | None = None
    management_port: int | None = None
    """Plain HTTP, health and /metrics only: what probes and Prometheus call when the serving
    ports need TLS client certificates or tokens."""
    credentials: CredentialReloader | None = None


class DelayedShutdownServer(uvicorn.Server):
    """uvicorn, except that SIGTERM first turns readiness off and keeps serving for
    ``shutdown_delay`` seconds before it stops accepting connections; with TLS on the main
    port from reloadable credentials; and with the :class:`SideListeners`: the Open Inference
    Protocol over gRPC on the same event loop (started after the model service, drained before
    it stops) and the management port (stopped last).

    Kubernetes sends SIGTERM at the same moment it removes the pod from the Service's
    endpoints; kube-proxies, ingress controllers and client-side balancers learn that a
    moment later. Closing the listener at once refuses the requests still routed here
    (measured on the real-cluster tier: 111 of 994 requests refused during a model swap).
    SIGINT (Ctrl-C) stops at once.
    """

    def __init__(self, config: uvicorn.Config, shutdown_delay: float, on_terminating: Callable[[], None],
                 side: SideListeners | None = None) -> None:  # fmt: skip
        super().__init__(config)
        self.shutdown_delay = shutdown_delay
        self.on_terminating = on_terminating
        self._delayed: threading.Timer | None = None
        self.side = side or SideListeners()
        self.grpc: grpc.aio.Server | None = None
        self.management: tuple[uvicorn.Server, socket.socket] | None = None
        self.unbound: str | None = None  # what could not listen, e.g. "gRPC on 0.0.0.0:8081"
        self.credential_watch: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        credentials = self.side.credentials
        if credentials is not None and credentials.ssl_context is not None:
            self.config.ssl = credentials.ssl_context  # the live context: reloads reach new connections
        await super().startup(sockets)
        if self.should_exit:
            return
        if self.side.make_grpc is not None and self.side.grpc_port is not None:
            await self._start_grpc(self.side.make_grpc(), self.side.grpc_port)
        if not self.should_exit and self.side.management_app is not None and self.side.management_port is not None:
            await self._start_management(self.side.management_app, self.side.management_port)
        if not self.should_exit and credentials is not None:
            self.credential_watch = asyncio.create_task(credentials.watch())

    async def _start_grpc(self, server: grpc.aio.Server, port: int) -> None:
        address = f"{self.config.host}:{port}"
        credentials = self.side.credentials
        try:
            if credentials is not None and credentials.grpc_config is not None:
                bound = server.add_secure_port(address, credentials.grpc_credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:
            self.unbound, self.should_exit = f"gRPC on {address}", True  # HTTP shuts down as usual
            return
        self.grpc = server
        await server.start()
        tls = " with TLS" if credentials is not None and credentials.grpc_config is not None else ""
        log.info("listening for gRPC (Open Inference Protocol)%s on %s:%d", tls, self.config.host, bound)

    async def _start_management(self, app: ASGIApp, port: int) -> None:
        host = self.config.host
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            listener = socket.create_server((host, port), family=family)
        except OSError:
            self.unbound, self.should_exit = f"the management port on {host}:{port}", True
            return
        config = uvicorn.Config(app, host=host, port=port, http="httptools", lifespan="off", access_log=False,
                                log_config=None)  # fmt: skip
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[listener])
        self.management = (server, listener)
        log.info("health and /metrics also on plain http://%s:%d (probes, Prometheus)", host, port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc is not None:
            # New calls are refused (clients reconnect elsewhere on the GOAWAY), calls in flight
            # finish within the drain time; then HTTP drains and the model service stops.
            await self.grpc.stop(self.config.timeout_graceful_shutdown)
        closer = asyncio.create_task(self._abort_closing_tls_connections()) if self.config.ssl is not None else None
        await super().shutdown(sockets)
        if closer is not None:
            closer.cancel()
        if self.credential_watch is not None:
            self.credential_watch.cancel()
        if self.management is not None:
            server, listener = self.management
            await server.shutdown(sockets=[listener])

    async def _abort_closing_tls_connections(self) -> None:
        """uvicorn closes idle keep-alive connections at shutdown; over TLS a close waits for the
        client's close_notify, which an idle pooled client never sends (requests, urllib3): every
        such connection held the pod's exit for the transport's 30 s TLS shutdown timeout
        (measured). A connection already closing was idle: drop it after a second."""
        await asyncio.sleep(1.0)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and transport.is_closing():
                transport.abort()

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
    management_port: int | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (after ``shutdown_delay`` on SIGTERM, draining in-flight
    requests), over HTTP on ``port`` and, with ``grpc_port``, gRPC; health and metrics also on
    ``management_port`` (plain HTTP). TLS and tokens as ``options.security`` says. Returns the exit code.

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

    try:
        service = ModelService(options, metrics, on_fatal=stop_on_fatal, on_ready=on_ready)
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    credentials = None
    if options.security.enabled:
        try:
            credentials = CredentialReloader(options.security, lambda result: metrics.credential_reloads.labels(result).inc())
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    # One access log and one tracer for both protocols (the app's shutdown flushes the tracer).
    access_log = AccessLog() if options.access_log else None
    tracer = RequestTracer.exporting(options.model_name) if options.tracing else None
    config = uvicorn.Config(
        create_app(service, credentials, access_log=access_log, tracer=tracer),
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
    side = SideListeners(
        make_grpc=lambda: create_grpc_server(service, grpc_limit, credentials, access_log, tracer), grpc_port=grpc_port,
        management_app=create_app(service, management=True) if management_port is not None else None,
        management_port=management_port, credentials=credentials,
    )  # fmt: skip
    server = DelayedShutdownServer(config, shutdown_delay, service.begin_termination, side)
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler that was
    # installed before it; make that one ours so a clean drain exits 0, not -15.
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    log.info("listening on http://%s:%d (ready after warm-up)", host, port)
    server.run()
    if server.unbound:
        print(f"error: could not listen for {server.unbound} (in use, or not this host's address)", file=sys.stderr)
        return _exit_now(1) if service.loading else 1
    if terminated and service.loading:
        log.info("stopped on SIGTERM %s", "during warm-up" if service.warming_up else "while loading a model to swap to")
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
