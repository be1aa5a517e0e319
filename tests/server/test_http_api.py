"""HTTP API of a real `rtdetr-edge serve` process on the tiny model."""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from rtdetr_edge.preprocess import preprocess_bytes

from ..conftest import ServerProcess
from .test_grpc_api import triton_inputs


def detect(server: ServerProcess, data: bytes, content_type: str = "image/jpeg", **params: object) -> requests.Response:
    return requests.post(
        f"{server.url}/v1/detect", data=data, headers={"Content-Type": content_type}, params=params, timeout=30
    )


def assert_serves(server: ServerProcess, image: bytes) -> None:
    response = detect(server, image)
    assert response.status_code == 200, response.text
    assert server.process.poll() is None


def test_detect_on_fixture_images(server: ServerProcess, fixture_images: list[Path]) -> None:
    for path in fixture_images:
        data = path.read_bytes()
        response = detect(server, data, score_threshold=0.0, max_detections=300)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        image = preprocess_bytes(data)
        assert body["model"] == "rtdetr" and body["digest"].startswith("sha256:")
        assert body["image"] == {"width": image.width, "height": image.height}
        detections = body["detections"]
        assert 0 < len(detections) <= 300
        scores = [d["score"] for d in detections]
        assert scores == sorted(scores, reverse=True)
        for detection in detections:
            assert set(detection) == {"class_id", "label", "score", "box"}
            assert isinstance(detection["label"], str) and 0 <= detection["class_id"] < 80
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 < x2 <= image.width and 0 <= y1 < y2 <= image.height, detection
        assert set(body["timing_ms"]) == {"preprocess", "queue", "inference", "postprocess", "total"}


def test_threshold_and_limit(server: ServerProcess, fixture_images: list[Path]) -> None:
    data = fixture_images[0].read_bytes()
    everything = detect(server, data, score_threshold=0.0, max_detections=1000).json()["detections"]
    top3 = detect(server, data, score_threshold=0.0, max_detections=3).json()["detections"]
    assert top3 == everything[:3]
    cut = everything[len(everything) // 2]["score"]
    above = detect(server, data, score_threshold=cut, max_detections=1000).json()["detections"]
    assert above and all(d["score"] >= cut for d in above)
    assert len(above) < len(everything)


def test_multipart_upload_equals_raw_body(server: ServerProcess, fixture_images: list[Path]) -> None:
    data = fixture_images[1].read_bytes()
    raw = detect(server, data, score_threshold=0.0).json()
    files = {"image": ("photo.jpg", data, "image/jpeg")}
    multipart = requests.post(f"{server.url}/v1/detect", files=files, params={"score_threshold": 0.0}, timeout=30)
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["detections"] == raw["detections"]


def test_oip_v2_round_trip_with_tritonclient(server: ServerProcess, fixture_images: list[Path]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(server.model_name)
    metadata = client.get_model_metadata(server.model_name)
    assert [i["name"] for i in metadata["inputs"]] == ["image", "im_shape", "scale_factor"]
    assert [o["name"] for o in metadata["outputs"]] == ["bbox", "bbox_num"]

    data = fixture_images[2].read_bytes()
    image = preprocess_bytes(data)
    arrays = {"image": image.image[None], "im_shape": image.im_shape[None], "scale_factor": image.scale_factor[None]}
    inputs = triton_inputs(httpclient, arrays)
    outputs = [
        httpclient.InferRequestedOutput("bbox", binary_data=True),
        httpclient.InferRequestedOutput("bbox_num", binary_data=False),
    ]
    result = client.infer(server.model_name, inputs, outputs=outputs, request_id="42")
    bbox, bbox_num = result.as_numpy("bbox"), result.as_numpy("bbox_num")
    assert bbox.shape == (300, 6) and bbox.dtype == np.float32
    assert bbox_num.tolist() == [300]
    assert result.get_response()["id"] == "42"

    # Same numbers as /v1/detect for the same image (which also clips boxes to the image).
    via_detect = detect(server, data, score_threshold=0.0, max_detections=5).json()["detections"]
    for row, detection in zip(bbox[:5], via_detect):
        assert int(row[0]) == detection["class_id"]
        assert abs(float(row[1]) - detection["score"]) < 1e-4
        clipped = np.clip(row[2:], 0, [image.width, image.height, image.width, image.height])
        np.testing.assert_allclose(clipped, detection["box"], atol=0.01)

    # A JSON (non-binary) request works too.
    json_result = client.infer(server.model_name, triton_inputs(httpclient, arrays, binary_data=False))
    np.testing.assert_allclose(json_result.as_numpy("bbox"), bbox, atol=1e-5)


def png_claiming(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


BAD_REQUESTS = [
    ("empty body", "POST", "/v1/detect", b"", "image/jpeg", {}, 400, "invalid_image"),
    ("truncated JPEG", "POST", "/v1/detect", "TRUNCATED", "image/jpeg", {}, 400, "invalid_image"),
    ("text as JPEG", "POST", "/v1/detect", b"this is not an image", "image/jpeg", {}, 400, "invalid_image"),
    ("20000x20000 PNG", "POST", "/v1/detect", png_claiming(20000, 20000), "image/png", {}, 413, "payload_too_large"),
    ("oversize body", "POST", "/v1/detect", b"\xff\xd8\xff" + bytes(17 * 1024 * 1024), "image/jpeg", {}, 413,
     "payload_too_large"),
    ("text/plain", "POST", "/v1/detect", b"hello", "text/plain", {}, 415, "unsupported_media_type"),
    ("bad threshold", "POST", "/v1/detect", "GOOD", "image/jpeg", {"score_threshold": "high"}, 400, "bad_request"),
    ("threshold > 1", "POST", "/v1/detect", "GOOD", "image/jpeg", {"score_threshold": "1.5"}, 400, "bad_request"),
    ("max_detections 0", "POST", "/v1/detect", "GOOD", "image/jpeg", {"max_detections": "0"}, 400, "bad_request"),
    ("multipart without image", "POST", "/v1/detect", b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n",
     "multipart/form-data; boundary=b", {}, 400, "bad_request"),
    ("wrong method", "GET", "/v1/detect", b"", "image/jpeg", {}, 405, "method_not_allowed"),
    ("wrong path", "POST", "/v1/detetc", b"", "image/jpeg", {}, 404, "not_found"),
    ("unknown model", "GET", "/v2/models/yolo", b"", "application/json", {}, 404, "not_found"),
    ("OIP not JSON", "POST", "/v2/models/rtdetr/infer", b"{oops", "application/json", {}, 400, "bad_request"),
    ("OIP wrong shape", "POST", "/v2/models/rtdetr/infer",
     b'{"inputs":[{"name":"image","datatype":"FP32","shape":[1,3,2,2],"data":[0,0,0,0,0,0,0,0,0,0,0,0]},'
     b'{"name":"im_shape","datatype":"FP32","shape":[1,2],"data":[640,640]},'
     b'{"name":"scale_factor","datatype":"FP32","shape":[1,2],"data":[1,1]}]}',
     "application/json", {}, 400, "bad_request"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "params", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(
    server: ServerProcess,
    fixture_images: list[Path],
    method: str,
    path: str,
    body: bytes | str,
    content_type: str,
    params: dict[str, str],
    status: int,
    code: str,
) -> None:
    good = fixture_images[0].read_bytes()
    if body == "TRUNCATED":
        body = good[: len(good) // 2]
    elif body == "GOOD":
        body = good
    assert isinstance(body, bytes)
    response = requests.request(
        method, f"{server.url}{path}", data=body, headers={"Content-Type": content_type}, params=params, timeout=30
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["code"] == code and isinstance(payload["error"], str) and payload["error"]
    assert_serves(server, good)


def test_concurrent_requests_are_batched(server: ServerProcess, fixture_images: list[Path]) -> None:
    data = [p.read_bytes() for p in fixture_images]

    def one(index: int) -> dict[str, object]:
        response = detect(server, data[index % 3], score_threshold=0.0, max_detections=1)
        assert response.status_code == 200
        return dict(response.json())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(48)))
    assert max(int(r["batch_size"]) for r in results) > 1, "concurrent requests should share predictor calls"
    assert max(int(r["batch_size"]) for r in results) <= 4
    # Batching must not mix up answers: every image gets its own (deterministic) result.
    by_image: dict[int, object] = {}
    for index, result in enumerate(results):
        by_image.setdefault(index % 3, result["detections"])
        assert result["detections"] == by_image[index % 3]


def test_metrics(server: ServerProcess, fixture_images: list[Path]) -> None:
    assert_serves(server, fixture_images[0].read_bytes())
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for name in (
        'rtdetr_request_duration_seconds_count{code="200",protocol="http",route="detect"}',
        "rtdetr_inference_duration_seconds_count",
        "rtdetr_preprocess_duration_seconds_count",
        "rtdetr_batch_size_bucket",
        "rtdetr_queue_depth",
        "rtdetr_warmup_duration_seconds",
        'rtdetr_shape_collection_total{result="not-needed"} 1.0',
        'rtdetr_engine_cache_total{result="built"} 1.0',
        "rtdetr_model_ready 1.0",
        "rtdetr_inflight_requests 0.0",  # answered: no longer in flight
    ):
        assert name in text, name


def test_index_and_health(server: ServerProcess) -> None:
    assert requests.get(f"{server.url}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{server.url}/v2/models/rtdetr/ready", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/v2/models/rtdetr/versions/1/ready", timeout=5).status_code == 200
    index = requests.get(f"{server.url}/", timeout=5).json()
    assert index["ready"] is True and "POST /v1/detect" in index["endpoints"]
