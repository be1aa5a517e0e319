"""HTTP adapter (Starlette): routes, request limits, and the one error → status mapping."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from rtdetr_edge import __version__
from rtdetr_edge.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RtdetrEdgeError,
    UnsupportedMediaTypeError,
)
from rtdetr_edge.server import oip
from rtdetr_edge.server.access_log import AccessLog, access_record
from rtdetr_edge.server.model_service import MAX_DETECTIONS_LIMIT, ModelService
from rtdetr_edge.server.security import OPEN_ROUTES, CredentialReloader
from rtdetr_edge.server.tracing import TRACED_ROUTES, RequestTracer

log = logging.getLogger(__name__)

RAW_IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png", "application/octet-stream")
MANAGEMENT_PATHS = ("/v2/health/live", "/v2/health/ready", "/v2/repository/index", "/metrics")
"""What the plain management port answers (probes, Prometheus, the operator following a swap)."""
_ERROR_TYPES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}

Handler = Callable[[Request], Awaitable[Response]]


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """Every error body: ``{"error": message, "code": code}`` (``error`` is what OIP clients read)."""
    return json_response({"error": message, "code": code}, status, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading them where possible."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise BadRequestError(f"invalid Content-Length {declared!r}") from None
        if declared_size > limit:
            raise PayloadTooLargeError(f"body is {declared_size} bytes; the limit is {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_from_request(request: Request, limit: int) -> bytes:
    """The image bytes of a raw ``image/*`` body or of a multipart ``image`` field."""
    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        body = await read_body(request, limit)

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
        except Exception as error:  # python-multipart raises several unrelated types
            raise BadRequestError(f"malformed multipart body: {error}") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise BadRequestError("multipart body needs a file field named 'image'")
        data = await upload.read()
        await form.close()
        return data
    if content_type not in RAW_IMAGE_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type!r} is not accepted; send image/jpeg, image/png or multipart/form-data"
        )
    return await read_body(request, limit)


def parse_number(request: Request, name: str, default: float, low: float, high: float, integer: bool) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise BadRequestError(f"query parameter {name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise BadRequestError(f"query parameter {name}={raw} is outside {low:g}..{high:g}")
    return value


def create_app(service: ModelService, credentials: CredentialReloader | None = None, management: bool = False,
               access_log: AccessLog | None = None, tracer: RequestTracer | None = None) -> Starlette:  # fmt: skip
    """The HTTP app; with ``credentials``, every route but health and /metrics needs an allowed
    bearer token (when tokens are on); a line per request on ``access_log``, spans by ``tracer``
    (which the app's shutdown flushes). ``management``: health and /metrics only, no lifespan
    (the plain management port beside a main app that runs the model service)."""
    options = service.options
    metrics = service.metrics
    infer_body_limit = oip.infer_body_limit(options.max_body_bytes, options.predictor.max_batch_size)


    def log_access(route: str, request: Request, response: Response, started_unix: float, seconds: float) -> None:
        assert access_log is not None
        declared = request.headers.get("content-length")
        access_log.write(access_record(
            started_unix=started_unix, method=request.method, path=request.url.path, query=request.url.query,
            route=route, status=response.status_code, duration_seconds=seconds,
            request_bytes=int(declared) if declared and declared.isdigit() else None,
            response_bytes=len(response.body), client=request.client.host if request.client else None,
            headers=request.headers, model=options.model_name,
        ))  # fmt: skip

    def endpoint(route: str, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            started_ns = time.time_ns()
            started_unix = started_ns / 1e9
            started = time.perf_counter()
            try:
                if credentials is not None and route not in OPEN_ROUTES:
                    credentials.require_token(request.headers.get("authorization"))
                response = await handler(request)
            except RtdetrEdgeError as error:
                response = error_response(error.http_status, error.code, str(error), error.response_headers())
                if not service.counted_as_refusal(error):
                    log.error("%s %s failed: %s", request.method, request.url.path, error)
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                response = error_response(500, "internal_error", "internal error; see the server log")
            seconds = time.perf_counter() - started
            metrics.requests.labels(route, str(response.status_code), "http").observe(seconds)
            if access_log is not None:
                log_access(route, request, response, started_unix, seconds)
            if tracer is not None and route in TRACED_ROUTES:
                tracer.record(route, request.method, request.url.path, request.headers, response.status_code, started_ns,
                              started_ns + int(seconds * 1e9), getattr(request.state, "timings_ms", None),
                              getattr(request.state, "trace_attributes", None))  # fmt: skip
            if service.terminating:
                # Kube-proxy only steers new connections: a client's keep-alive connection would
                # keep coming here until the listener closes under it. Make it reconnect now.
                response.headers["Connection"] = "close"
            return response

        return wrapped

    def check_model_name(request: Request) -> None:
        name = request.path_params["model_name"]
        if name != options.model_name:
            raise NotFoundError(f"model {name!r} not found; this server serves {options.model_name!r}")

    async def index(request: Request) -> Response:
        return json_response(
            {
                "name": "rtdetr-edge",
                "version": __version__,
                "model": options.model_name,
                "ready": service.ready,
                "endpoints": ["POST /v1/detect", f"POST /v2/models/{options.model_name}/infer", "GET /metrics"],
            }
        )

    async def detect(request: Request) -> Response:
        service.require_ready()
        threshold = parse_number(request, "score_threshold", options.score_threshold, 0.0, 1.0, integer=False)
        limit = parse_number(request, "max_detections", options.max_detections, 1, MAX_DETECTIONS_LIMIT, integer=True)
        data = await image_from_request(request, options.max_body_bytes)
        result = await service.detect(data, threshold, int(limit))
        if tracer is not None:  # for the request's trace
            request.state.timings_ms = result["timing_ms"]
            request.state.trace_attributes = {"rtdetr.batch_size": result["batch_size"], "rtdetr.detections": len(result["detections"])}  # type: ignore[arg-type]
        return json_response(result)

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        if service.ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "state": service.state, "error": service.error}, 503)

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "rtdetr-edge", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        check_model_name(request)
        return json_response(oip.model_metadata(options.model_name, service.platform, service.digest))

    async def model_ready(request: Request) -> Response:
        check_model_name(request)
        if service.ready:
            return json_response({"name": options.model_name, "ready": True})
        return json_response({"name": options.model_name, "ready": False, "error": service.error}, 503)

    async def infer(request: Request) -> Response:
        check_model_name(request)
        service.require_ready()
        body = await read_body(request, infer_body_limit)
        decoded = oip.decode_infer_request(
            body, request.headers.get(oip.HEADER_LENGTH), options.predictor.max_batch_size
        )
        outputs = await service.infer(decoded.inputs)
        payload, header_length = oip.encode_infer_response(options.model_name, decoded, outputs)
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(
            payload,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    async def repository_index(request: Request) -> Response:
        # Triton's model repository extension: the serving model, and one loading beside it (the
        # operator reads it to follow an in-place swap). Open like health: no image, no detection.
        return json_response([entry.wire() for entry in service.repository_index()])

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        elif status == 404:
            message = f"no route {request.url.path}"
        metrics.rejected.labels(_ERROR_TYPES.get(status, "http_error")).inc()
        return error_response(status, _ERROR_TYPES.get(status, "http_error"), message)

    version_prefix = "/v2/models/{model_name}/versions/{version}"
    routes = [
        Route("/", endpoint("index", index), methods=["GET"]),
        Route("/v1/detect", endpoint("detect", detect), methods=["POST"]),
        Route("/v2", endpoint("server_metadata", server_metadata), methods=["GET"]),
        Route("/v2/health/live", endpoint("live", live), methods=["GET"]),
        Route("/v2/health/ready", endpoint("ready", ready), methods=["GET"]),
        Route("/v2/models/{model_name}", endpoint("model_metadata", model_metadata), methods=["GET"]),
        Route("/v2/models/{model_name}/ready", endpoint("model_ready", model_ready), methods=["GET"]),
        Route("/v2/models/{model_name}/infer", endpoint("infer", infer), methods=["POST"]),
        Route(version_prefix, endpoint("model_metadata", model_metadata), methods=["GET"]),
        Route(f"{version_prefix}/ready", endpoint("model_ready", model_ready), methods=["GET"]),
        Route(f"{version_prefix}/infer", endpoint("infer", infer), methods=["POST"]),
        Route("/v2/repository/index", endpoint("repository_index", repository_index), methods=["POST"]),
        Route("/metrics", endpoint("metrics", metrics_endpoint), methods=["GET"]),
    ]

    if management:
        routes = [route for route in routes if route.path in MANAGEMENT_PATHS]
        return Starlette(routes=routes, exception_handlers={HTTPException: http_error})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            if tracer is not None:
                tracer.shutdown()

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
