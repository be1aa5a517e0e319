"""Request traces (OpenTelemetry, opt-in: ``serve --tracing``, ``serving.tracing``).

One SERVER span per detect or infer request, a child of the caller's ``traceparent`` when it
sends one, with a child span per stage a detection goes through: ``decode`` (JPEG/PNG decode,
resize, normalize), ``queue`` (waiting for a batch), ``inference`` (the batch on the predictor;
its size as an attribute), ``postprocess`` (score filter, boxes) and ``encode`` (the JSON answer).
The stage spans are laid end to end from the durations the request measured anyway
(``timing_ms``), after the answer is sent: tracing adds no clock reads or locks to the request
path, and a request that is not sampled costs one sampler decision.

Exporter, sampler and resource come from OpenTelemetry's standard environment variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``), which the operator sets from ``serving.tracing``; spans leave by
OTLP over HTTP in batches, never on the request's thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACED_ROUTES = frozenset({"detect", "infer"})  # probes, scrapes and metadata are not traced
STAGES = (("decode", "preprocess"), ("queue", "queue"), ("inference", "inference"), ("postprocess", "postprocess"))
"""Stage span names and the ``timing_ms`` key each one's duration comes from, in order."""
_PROPAGATOR = TraceContextTextMapPropagator()


class RequestTracer:
    def __init__(self, processor: SpanProcessor, model_name: str, resource: Resource | None = None) -> None:
        self.provider = TracerProvider(resource=resource or Resource.create({"service.name": "rtdetr-edge"}))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("rtdetr_edge.server")
        self.model_name = model_name

    @classmethod
    def exporting(cls, model_name: str, exporter: SpanExporter | None = None) -> RequestTracer:
        """Spans batched to ``exporter`` (default: OTLP over HTTP as the environment says)."""
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        resource = Resource.create({} if named else {"service.name": "rtdetr-edge"})  # the environment's name wins
        return cls(BatchSpanProcessor(exporter), model_name, resource)

    def record(self, route: str, method: str, path: str, headers: Mapping[str, str], status: int, start_ns: int, end_ns: int,
               timings_ms: Mapping[str, float] | None = None, attributes: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """The spans of one answered request (its stage spans when ``timings_ms`` has them)."""
        parent = _PROPAGATOR.extract(carrier=headers)
        span = self.tracer.start_span(
            f"{method} {path}", context=parent, kind=SpanKind.SERVER, start_time=start_ns,
            attributes={"http.request.method": method, "http.route": route, "url.path": path,
                        "http.response.status_code": status, "rtdetr.model": self.model_name, **(attributes or {})},
        )  # fmt: skip
        if not span.is_recording():
            return
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        if timings_ms:
            inside = trace.set_span_in_context(span)
            at = start_ns
            for name, key in STAGES:
                if key not in timings_ms:
                    continue
                stage = self.tracer.start_span(name, context=inside, start_time=at)
                at = min(end_ns, at + int(timings_ms[key] * 1e6))
                stage.end(end_time=at)
            self.tracer.start_span("encode", context=inside, start_time=at).end(end_time=end_ns)
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is left (at server stop)."""
        self.provider.shutdown()
