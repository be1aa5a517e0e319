from __future__ import annotations

import numpy as np
import orjson
import pytest

from rtdetr_edge.errors import BadRequestError
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.server.oip import decode_infer_request, encode_infer_response


def tensors(batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.random((batch, 3, 640, 640), dtype=np.float32),
        "im_shape": np.full((batch, 2), 640, np.float32),
        "scale_factor": np.tile(np.array([[1.5, 1.0]], np.float32), (batch, 1)),
    }


def binary_request(arrays: dict[str, np.ndarray], **request: object) -> tuple[bytes, str]:
    inputs = [
        {"name": n, "datatype": "FP32", "shape": list(a.shape), "parameters": {"binary_data_size": a.nbytes}}
        for n, a in arrays.items()
    ]
    header = orjson.dumps({"inputs": inputs, **request})
    return header + b"".join(a.tobytes() for a in arrays.values()), str(len(header))


def test_binary_request_round_trip() -> None:
    arrays = tensors(2)
    body, header_length = binary_request(arrays, id="r1", outputs=[{"name": "bbox", "parameters": {"binary_data": True}}])
    request = decode_infer_request(body, header_length, max_batch_size=4)
    np.testing.assert_array_equal(request.inputs.image, arrays["image"])
    np.testing.assert_array_equal(request.inputs.scale_factor, arrays["scale_factor"])
    assert request.requested_outputs == ["bbox"] and request.binary_outputs == {"bbox"}

    outputs = ModelOutputs(np.arange(12, dtype=np.float32).reshape(2, 6), np.array([1, 1], np.int32))
    payload, json_length = encode_infer_response("rtdetr", request, outputs)
    assert json_length is not None
    header = orjson.loads(payload[:json_length])
    assert header["id"] == "r1" and header["outputs"][0]["parameters"]["binary_data_size"] == 48
    np.testing.assert_array_equal(np.frombuffer(payload[json_length:], "<f4").reshape(2, 6), outputs.bbox)


def test_json_request_and_response() -> None:
    arrays = tensors(1)
    request_body = orjson.dumps(
        {
            "inputs": [
                {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.reshape(-1).tolist()}
                for n, a in arrays.items()
            ]
        }
    )
    request = decode_infer_request(request_body, None, max_batch_size=1)
    assert np.allclose(request.inputs.image, arrays["image"])
    assert request.requested_outputs == ["bbox", "bbox_num"] and request.binary_outputs == set()
    outputs = ModelOutputs(np.zeros((1, 6), np.float32), np.array([1], np.int32))
    payload, json_length = encode_infer_response("rtdetr", request, outputs)
    assert json_length is None
    body = orjson.loads(payload)
    assert body["outputs"][1] == {"name": "bbox_num", "datatype": "INT32", "shape": [1], "data": [1]}


def good_inputs() -> list[dict[str, object]]:
    return [
        {"name": "image", "datatype": "FP32", "shape": [1, 3, 640, 640], "parameters": {"binary_data_size": 4915200}},
        {"name": "im_shape", "datatype": "FP32", "shape": [1, 2], "data": [640, 640]},
        {"name": "scale_factor", "datatype": "FP32", "shape": [1, 2], "data": [1, 1]},
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda inputs: inputs.pop(2), "missing \\['scale_factor'\\]"),
        (lambda inputs: inputs[1].update(datatype="BYTES"), "not supported"),
        (lambda inputs: inputs[1].update(data=[640]), "1 values for shape"),
        (lambda inputs: inputs[1].update(data=["a", "b"]), "must be numbers"),
        (lambda inputs: inputs[2].update(data=[0, 1]), "positive"),
        (lambda inputs: inputs[0].update(shape=[1, 3, 320, 320], parameters={"binary_data_size": 1228800}), "640, 640"),
        (lambda inputs: inputs[0].update(parameters={"binary_data_size": 12}), "binary_data_size 12"),
        (lambda inputs: inputs[1].update(shape=[1, -2]), "non-negative"),
        (lambda inputs: inputs.append({"name": "extra", "datatype": "FP32", "shape": [1], "data": [0]}), "unknown"),
    ],
)
def test_invalid_requests(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    inputs = good_inputs()
    mutate(inputs)
    header = orjson.dumps({"inputs": inputs})
    binary_size = sum(int(i.get("parameters", {}).get("binary_data_size", 0)) for i in inputs)  # type: ignore[union-attr]
    body = header + bytes(binary_size)
    with pytest.raises(BadRequestError, match=message):
        decode_infer_request(body, str(len(header)), max_batch_size=4)


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "must be a JSON object"),
        (b'{"inputs": []}', None, "non-empty"),
        (b'{"inputs": []}', "abc", "must be an integer"),
        (b'{"inputs": []}', "999", "does not fit"),
    ],
)
def test_malformed_bodies(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        decode_infer_request(body, header_length, max_batch_size=4)


def test_batch_above_the_server_limit() -> None:
    body, header_length = binary_request(tensors(2))
    with pytest.raises(BadRequestError, match="outside 1..1"):
        decode_infer_request(body, header_length, max_batch_size=1)


def test_trailing_bytes_are_rejected() -> None:
    body, header_length = binary_request(tensors(1))
    with pytest.raises(BadRequestError, match="trailing"):
        decode_infer_request(body + b"xx", header_length, max_batch_size=1)


def test_unknown_requested_output() -> None:
    body, header_length = binary_request(tensors(1), outputs=[{"name": "scores"}])
    with pytest.raises(BadRequestError, match="unknown output"):
        decode_infer_request(body, header_length, max_batch_size=1)
