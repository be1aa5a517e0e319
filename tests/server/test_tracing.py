"""Traces from a real server process: `serve --tracing` with OpenTelemetry's standard environment
sends spans by OTLP/HTTP (the SDK's real exporter) to a collector stand-in that decodes them with
OpenTelemetry's own protobuf classes: one trace per detection, joined to the caller's
traceparent, with its stage spans; probes and scrapes are not traced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..conftest import start_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Collector(ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf exports on /v1/traces and keeps every span."""

    def __init__(self) -> None:
        self.spans: list[dict[str, object]] = []
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.paths.append(self.path)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                        "attributes": {a.key: a.value for a in span.attributes}, "resource": resource,
                    })  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


def test_a_detection_is_one_trace_joined_to_the_callers_with_its_stages(
    tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path], collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rtdetr-demo")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s instead of 5 s
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--tracing")
    try:
        server.wait_ready()
        image = fixture_images[0].read_bytes()
        answer = requests.post(f"{server.url}/v1/detect", data=image, timeout=60,
                               headers={"Content-Type": "image/jpeg", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})  # fmt: skip
        assert answer.status_code == 200
        unsampled = requests.post(f"{server.url}/v1/detect", data=image, timeout=60,
                                  headers={"Content-Type": "image/jpeg", "traceparent": f"00-{'1' * 32}-{PARENT_ID}-00"})  # fmt: skip
        assert unsampled.status_code == 200
        assert requests.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
        assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 200
        bad = requests.post(f"{server.url}/v1/detect", data=b"not an image", headers={"Content-Type": "image/jpeg"}, timeout=10)
        assert bad.status_code == 400
    finally:
        server.stop()  # the exporter flushes at shutdown
    assert set(collector.paths) == {"/v1/traces"}
    ours = [span for span in collector.spans if span["trace_id"] == TRACE_ID]
    by_name = {str(span["name"]): span for span in ours}
    assert sorted(by_name) == ["POST /v1/detect", "decode", "encode", "inference", "postprocess", "queue"], sorted(by_name)
    request = by_name["POST /v1/detect"]
    assert request["parent"] == PARENT_ID and request["resource"]["service.name"] == "rtdetr-demo"
    assert all(by_name[n]["parent"] == request["span_id"] for n in ("decode", "queue", "inference", "postprocess", "encode"))
    timing = answer.json()["timing_ms"]
    decode = by_name["decode"]
    assert abs((int(decode["end"]) - int(decode["start"])) / 1e6 - timing["preprocess"]) < 0.01  # type: ignore[call-overload]
    assert not [s for s in collector.spans if s["trace_id"] == "1" * 32], "a caller that did not sample got spans"
    # One other trace: the bad request (its own trace, no stages); probes and scrapes none.
    others = [s for s in collector.spans if s["trace_id"] not in (TRACE_ID, "1" * 32)]
    assert [s["name"] for s in others] == ["POST /v1/detect"], [s["name"] for s in others]
    assert others[0]["attributes"]["http.response.status_code"].int_value == 400  # type: ignore[index,union-attr]


def test_a_grpc_infer_is_traced_too_joined_to_its_traceparent_metadata(
    tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path], collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tritonclient.grpc as grpcclient

    from rtdetr_edge.dev.ports import free_port

    from .test_grpc_api import infer_grpc, model_inputs

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    grpc_port = free_port()
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--tracing", "--grpc-port", str(grpc_port))
    try:
        server.wait_ready()
        infer_grpc(grpc_port, server.model_name, model_inputs(fixture_images[0].read_bytes()),
                   headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})  # fmt: skip
        assert grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}").is_server_ready()  # not traced
    finally:
        server.stop()
    (span,) = [s for s in collector.spans if s["trace_id"] == TRACE_ID]
    assert span["name"] == "POST /inference.GRPCInferenceService/ModelInfer" and span["parent"] == PARENT_ID
    attributes = span["attributes"]
    assert attributes["rpc.system"].string_value == "grpc" and attributes["rpc.method"].string_value == "ModelInfer"  # type: ignore[index,union-attr]
    assert len(collector.spans) == 1, [s["name"] for s in collector.spans]
