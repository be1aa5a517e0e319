"""The access log of a real server process: one JSON line per request on standard output, with
status and timing, never the image; off unless asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from ..conftest import start_server


def access_lines(log: str) -> list[dict[str, object]]:
    records = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "route" in record:
                records.append(record)
    return records


def test_the_access_log_has_a_line_per_request_and_never_the_image(
    tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]
) -> None:
    image = fixture_images[0].read_bytes()
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--access-log")
    try:
        server.wait_ready()
        headers = {"Content-Type": "image/jpeg", "X-Request-Id": "req-42", "User-Agent": "edge-camera/1.0"}
        assert requests.post(f"{server.url}/v1/detect?score_threshold=0.3", data=image, headers=headers, timeout=60).status_code == 200
        assert requests.post(f"{server.url}/v1/detect", data=b"not an image", headers={"Content-Type": "text/plain"},
                             timeout=60).status_code == 415  # fmt: skip
        for _ in range(3):
            requests.get(f"{server.url}/v2/health/ready", timeout=5)
        requests.get(f"{server.url}/metrics", timeout=5)
    finally:
        server.stop()
    records = access_lines(server.log())
    assert [(r["route"], r["status"]) for r in records] == [("detect", 200), ("detect", 415)], records
    detected, refused = records
    assert detected["request_id"] == "req-42" and detected["user_agent"] == "edge-camera/1.0"
    assert detected["query"] == "score_threshold=0.3" and detected["request_bytes"] == len(image)
    assert detected["client"] == "127.0.0.1" and float(detected["duration_ms"]) > 0  # type: ignore[arg-type]
    assert int(detected["response_bytes"]) > 0 and refused["method"] == "POST"  # type: ignore[call-overload]
    assert all(len(json.dumps(r)) < 1000 for r in records), "a line never carries a body"


def test_there_is_no_access_log_unless_asked_for(tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]) -> None:
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path)
    try:
        server.wait_ready()
        requests.post(f"{server.url}/v1/detect", data=fixture_images[0].read_bytes(),
                      headers={"Content-Type": "image/jpeg"}, timeout=60)  # fmt: skip
    finally:
        server.stop()
    assert access_lines(server.log()) == []


def test_grpc_calls_get_access_log_lines_too(tiny_model_dir: Path, tmp_path: Path, fixture_images: list[Path]) -> None:
    import grpc
    import tritonclient.grpc as grpcclient

    from rtdetr_edge.dev.ports import free_port

    from .test_grpc_api import infer_grpc, model_inputs

    grpc_port = free_port()
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--access-log", "--grpc-port", str(grpc_port))
    try:
        server.wait_ready()
        arrays = model_inputs(fixture_images[0].read_bytes())
        infer_grpc(grpc_port, server.model_name, arrays, headers={"x-request-id": "grpc-7"})
        with pytest.raises(grpcclient.InferenceServerException) as refused:
            infer_grpc(grpc_port, "yolo", arrays)
        assert refused.value.status() == str(grpc.StatusCode.NOT_FOUND)
        assert grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}").is_server_live()  # not logged
    finally:
        server.stop()
    records = access_lines(server.log())
    assert [(r["path"], r["route"], r["status"]) for r in records] == [
        ("/inference.GRPCInferenceService/ModelInfer", "infer", 200),
        ("/inference.GRPCInferenceService/ModelInfer", "infer", 404),
    ], records
    answered = records[0]
    assert answered["request_id"] == "grpc-7" and answered["client"] == "127.0.0.1"
    assert int(answered["request_bytes"]) > 4_900_000 and int(answered["response_bytes"]) > 7200  # type: ignore[call-overload]
    assert str(answered["user_agent"]).startswith("grpc-python")
