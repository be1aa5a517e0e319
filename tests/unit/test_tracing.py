"""Request spans (server/tracing.py) with OpenTelemetry's in-memory exporter: the stage spans lie
end to end inside the request span, the caller's traceparent is the parent, a caller that did not
sample gets no spans, and a server error marks the span."""

from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rtdetr_edge.server.tracing import RequestTracer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TIMINGS = {"preprocess": 4.0, "queue": 1.5, "inference": 10.0, "postprocess": 0.5, "total": 16.0}
START = 1_700_000_000_000_000_000


def traced(headers: dict[str, str], status: int = 200, timings: dict[str, float] | None = TIMINGS) -> list:  # type: ignore[type-arg]
    exporter = InMemorySpanExporter()
    tracer = RequestTracer(SimpleSpanProcessor(exporter), "rtdetr-r50")
    tracer.record("detect", "POST", "/v1/detect", headers, status, START, START + 17_000_000, timings, {"rtdetr.batch_size": 2})
    tracer.shutdown()
    return list(exporter.get_finished_spans())


def test_stage_spans_lie_end_to_end_under_the_callers_span() -> None:
    spans = traced({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    by_name = {span.name: span for span in spans}
    assert list(by_name) == ["decode", "queue", "inference", "postprocess", "encode", "POST /v1/detect"]
    request = by_name["POST /v1/detect"]
    assert request.kind == SpanKind.SERVER and f"{request.context.trace_id:032x}" == TRACE_ID
    assert f"{request.parent.span_id:016x}" == PARENT_ID, "the caller's span is the parent"
    assert request.attributes["rtdetr.model"] == "rtdetr-r50" and request.attributes["rtdetr.batch_size"] == 2
    assert request.attributes["http.response.status_code"] == 200
    stages = [by_name[name] for name in ("decode", "queue", "inference", "postprocess", "encode")]
    assert all(stage.parent.span_id == request.context.span_id for stage in stages)
    assert stages[0].start_time == request.start_time and stages[-1].end_time == request.end_time
    for before, after in zip(stages, stages[1:], strict=False):
        assert before.end_time == after.start_time, "stages lie end to end"
    durations_ms = [(stage.end_time - stage.start_time) / 1e6 for stage in stages]
    assert durations_ms == [4.0, 1.5, 10.0, 0.5, 1.0], durations_ms


def test_a_caller_that_does_not_sample_gets_no_spans() -> None:
    assert traced({"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}) == []


def test_without_a_caller_a_new_trace_starts_and_a_server_error_is_marked() -> None:
    spans = traced({}, status=500, timings=None)
    assert [span.name for span in spans] == ["POST /v1/detect"], "no stages measured, none invented"
    assert spans[0].parent is None and spans[0].status.status_code == StatusCode.ERROR
