"""gRPC adapter: the Open Inference Protocol's ``GRPCInferenceService`` over the same
:class:`ModelService` (model, batcher, queue budget, limits) as the HTTP app.

It runs on the HTTP server's event loop (``grpc.aio``), so a ModelInfer joins the very queue an
HTTP infer joins. Errors are the HTTP app's, each mapped to the status code Triton and KServe
answer with (one table, :data:`GRPC_STATUS`); a shed request carries ``retry-after`` in its
trailing metadata. Requests are counted in the same Prometheus series with ``protocol="grpc"``
and the HTTP status the error maps from, so the chart's alerts and dashboard cover both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from rtdetr_edge import __version__
from rtdetr_edge.errors import NotFoundError, OverloadedError, RtdetrEdgeError
from rtdetr_edge.server import oip_grpc
from rtdetr_edge.server.access_log import AccessLog, access_record
from rtdetr_edge.server.model_service import ModelService
from rtdetr_edge.server.security import OPEN_ROUTES, CredentialReloader
from rtdetr_edge.server.tracing import TRACED_ROUTES, RequestTracer

log = logging.getLogger(__name__)

GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,  # warming up, terminating or shed: a client may retry elsewhere
}
"""The gRPC status of each HTTP status our errors carry; anything else is INTERNAL."""
ROUTES = {"ServerLive": "live", "ServerReady": "ready", "ModelReady": "model_ready",
          "ServerMetadata": "server_metadata", "ModelMetadata": "model_metadata", "ModelInfer": "infer"}  # fmt: skip
"""The HTTP route each RPC answers like: the ``route`` label of its requests in /metrics."""

Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def grpc_status(error: RtdetrEdgeError) -> grpc.StatusCode:
    return GRPC_STATUS.get(error.http_status, grpc.StatusCode.INTERNAL)


def peer_host(peer: str | None) -> str | None:
    """The client address of a gRPC peer string (``ipv4:10.0.0.7:51234``, ``ipv6:[::1]:5``). Pure."""
    if not peer:
        return None
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = address.rsplit(":", 1)[0]
    return host.strip("[]")


def create_grpc_server(service: ModelService, max_message_bytes: int, credentials: CredentialReloader | None = None,
                       access_log: AccessLog | None = None, tracer: RequestTracer | None = None) -> grpc.aio.Server:  # fmt: skip
    """The gRPC server (not yet bound or started); call from the running event loop. With
    ``credentials``, calls but ServerLive/ServerReady need an allowed bearer token in the
    ``authorization`` metadata (when tokens are on); ``access_log`` and ``tracer`` are the HTTP
    app's (a line per call but health; a span per ModelInfer, joined to a ``traceparent`` metadata)."""
    options = service.options
    metrics = service.metrics

    def check_model_name(name: str) -> None:
        if name != options.model_name:
            raise NotFoundError(f"model {name!r} not found; this server serves {options.model_name!r}")

    async def server_live(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return oip_grpc.messages.ServerLiveResponse(live=True)

    async def server_ready(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return oip_grpc.messages.ServerReadyResponse(ready=service.ready)

    async def model_ready(request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_model_name(request.name)
        return oip_grpc.messages.ModelReadyResponse(ready=service.ready)

    async def server_metadata(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return oip_grpc.messages.ServerMetadataResponse(name="rtdetr-edge", version=__version__, extensions=[])

    async def model_metadata(request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_model_name(request.name)
        return oip_grpc.model_metadata(options.model_name, service.platform)

    async def model_infer(request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_model_name(request.model_name)
        service.require_ready()
        decoded = oip_grpc.decode_infer_request(request, options.predictor.max_batch_size)
        outputs = await service.infer(decoded.inputs)
        return oip_grpc.encode_infer_response(options.model_name, decoded, outputs)

    def rpc(method: str, handler: Method) -> grpc.RpcMethodHandler:
        route = ROUTES[method]
        request_type, response_type = oip_grpc.method_types(method)
        path = f"/{oip_grpc.SERVICE}/{method}"

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started_ns = time.time_ns()
            started = time.perf_counter()
            status = 200
            response = None
            metadata = dict(context.invocation_metadata() or ())
            try:
                if credentials is not None and route not in OPEN_ROUTES:
                    credentials.require_token(metadata.get("authorization"))
                response = await handler(request, context)
                return response
            except RtdetrEdgeError as error:
                status = error.http_status
                if not service.counted_as_refusal(error):
                    log.error("gRPC %s failed: %s", method, error)
                if isinstance(error, OverloadedError):
                    context.set_trailing_metadata((("retry-after", str(error.retry_after_seconds)),))
                await context.abort(grpc_status(error), str(error))
            except Exception:
                status = 500
                log.exception("unexpected error on gRPC %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            finally:
                seconds = time.perf_counter() - started
                metrics.requests.labels(route, str(status), "grpc").observe(seconds)
                if access_log is not None:
                    access_log.write(access_record(
                        started_unix=started_ns / 1e9, method="POST", path=path, query="", route=route, status=status,
                        duration_seconds=seconds, request_bytes=request.ByteSize(),
                        response_bytes=response.ByteSize() if response is not None else 0,
                        client=peer_host(context.peer()), headers=metadata, model=options.model_name,
                    ))  # fmt: skip
                if tracer is not None and route in TRACED_ROUTES:
                    tracer.record(route, "POST", path, metadata, status, started_ns, started_ns + int(seconds * 1e9),
                                  attributes={"rpc.system": "grpc", "rpc.service": oip_grpc.SERVICE, "rpc.method": method})  # fmt: skip

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )

    handlers = {"ServerLive": server_live, "ServerReady": server_ready, "ModelReady": model_ready,
                "ServerMetadata": server_metadata, "ModelMetadata": model_metadata, "ModelInfer": model_infer}  # fmt: skip
    assert tuple(handlers) == oip_grpc.METHODS
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", max_message_bytes), ("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(oip_grpc.SERVICE, {m: rpc(m, h) for m, h in handlers.items()}),)
    )
    return server
