"""Open Inference Protocol (KServe v2 / Triton) request and response codec, pure.

Supports JSON tensors and the binary tensor data extension that
``tritonclient[http]`` uses by default (``Inference-Header-Content-Length``:
a JSON header followed by raw little-endian tensor bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from rtdetr_edge.errors import BadRequestError
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.preprocess import INPUT_SIZE, ModelInputs

HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {"FP32": np.dtype("<f4"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "FP64": np.dtype("<f8")}
"""The input datatypes accepted (each is converted to FP32), with their little-endian dtypes."""

INPUT_TENSORS = (
    ("image", "FP32", [-1, 3, INPUT_SIZE, INPUT_SIZE]),
    ("im_shape", "FP32", [-1, 2]),
    ("scale_factor", "FP32", [-1, 2]),
)
OUTPUT_TENSORS = (("bbox", "FP32", [-1, 6]), ("bbox_num", "INT32", [-1]))
INPUT_NAMES = tuple(name for name, _, _ in INPUT_TENSORS)
OUTPUT_NAMES = tuple(name for name, _, _ in OUTPUT_TENSORS)
OUTPUT_DATATYPES = {name: datatype for name, datatype, _ in OUTPUT_TENSORS}


def infer_body_limit(max_body_bytes: int, max_batch_size: int) -> int:
    """The largest infer request accepted (HTTP body or gRPC message): a full batch of images as
    JSON numbers, which take ~3x their binary size, or ``max_body_bytes`` if larger."""
    image_tensor_bytes = 3 * INPUT_SIZE * INPUT_SIZE * 4
    return max(max_body_bytes, max_batch_size * image_tensor_bytes * 4)


def model_metadata(name: str, platform: str, digest: str) -> dict[str, object]:
    return {
        "name": name,
        "versions": ["1"],
        "platform": platform,
        "parameters": {"digest": digest},
        "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in INPUT_TENSORS],
        "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in OUTPUT_TENSORS],
    }


@dataclass
class InferRequest:
    id: str | None
    inputs: ModelInputs
    requested_outputs: list[str]
    binary_outputs: set[str]


def _as_dict(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a JSON object")
    return value


def decode_infer_request(body: bytes, header_length: str | None, max_batch_size: int) -> InferRequest:
    """Parse and validate an infer request into model inputs (raises ``BadRequestError``)."""
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise BadRequestError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < json_length <= len(body):
            raise BadRequestError(f"{HEADER_LENGTH} {json_length} does not fit a body of {len(body)} bytes")
        json_part, binary = body[:json_length], memoryview(body)[json_length:]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        request = _as_dict(orjson.loads(json_part), "the request")
    except orjson.JSONDecodeError as error:
        raise BadRequestError(f"request is not valid JSON: {error}") from None
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequestError("'inputs' must be a non-empty list of tensors")

    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for raw in raw_inputs:
        tensor = _as_dict(raw, "each input")
        name = tensor.get("name")
        datatype = tensor.get("datatype")
        shape = tensor.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise BadRequestError("each input needs 'name', 'datatype' and 'shape'")
        if datatype not in DATATYPES:
            raise BadRequestError(f"input {name!r}: datatype {datatype} is not supported (use FP32)")
        if not all(isinstance(dim, int) and dim >= 0 for dim in shape):
            raise BadRequestError(f"input {name!r}: shape must be non-negative integers, got {shape}")
        dtype = DATATYPES[datatype]
        count = int(np.prod(shape)) if shape else 1
        parameters = tensor.get("parameters") or {}
        binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if binary_size is not None:
            if not isinstance(binary_size, int) or binary_size != count * dtype.itemsize:
                raise BadRequestError(
                    f"input {name!r}: binary_data_size {binary_size} != {count} x {dtype.itemsize} bytes"
                )
            if offset + binary_size > len(binary):
                raise BadRequestError(f"input {name!r}: body ends before its {binary_size} binary bytes")
            array = np.frombuffer(binary[offset : offset + binary_size], dtype=dtype).reshape(shape)
            offset += binary_size
        else:
            data = tensor.get("data")
            if data is None:
                raise BadRequestError(f"input {name!r} has neither 'data' nor binary_data_size")
            try:
                array = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError):
                raise BadRequestError(f"input {name!r}: 'data' must be numbers") from None
            if array.size != count:
                raise BadRequestError(f"input {name!r}: {array.size} values for shape {shape}")
            array = array.reshape(shape)
        tensors[name] = array.astype(np.float32, copy=False)
    if offset != len(binary):
        raise BadRequestError(f"{len(binary) - offset} trailing binary bytes are not claimed by any input")

    inputs = validate_inputs(tensors, max_batch_size)
    requested, binary_outputs = _requested_outputs(request)
    request_id = request.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, inputs, requested, binary_outputs)


def validate_inputs(tensors: dict[str, np.ndarray], max_batch_size: int) -> ModelInputs:
    """The model's three input tensors, checked (names, shapes, batch size, scale factors); one
    rule for HTTP and gRPC requests."""
    expected = list(INPUT_NAMES)
    missing = [name for name in expected if name not in tensors]
    unknown = [name for name in tensors if name not in expected]
    if missing or unknown:
        raise BadRequestError(f"inputs must be {expected}; missing {missing}, unknown {unknown}")
    image, im_shape, scale_factor = (tensors[name] for name in expected)
    if image.ndim != 4 or image.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
        raise BadRequestError(f"'image' must have shape [N, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {list(image.shape)}")
    batch = image.shape[0]
    if not 1 <= batch <= max_batch_size:
        raise BadRequestError(f"batch size {batch} is outside 1..{max_batch_size} (this server's max batch)")
    for name, array in (("im_shape", im_shape), ("scale_factor", scale_factor)):
        if array.shape != (batch, 2):
            raise BadRequestError(f"{name!r} must have shape [{batch}, 2], got {list(array.shape)}")
    if not (np.isfinite(scale_factor).all() and (scale_factor > 0).all()):
        raise BadRequestError("'scale_factor' must be positive and finite")
    return ModelInputs(
        im_shape=np.ascontiguousarray(im_shape),
        image=np.ascontiguousarray(image),
        scale_factor=np.ascontiguousarray(scale_factor),
    )


def _requested_outputs(request: dict[str, object]) -> tuple[list[str], set[str]]:
    all_names = list(OUTPUT_NAMES)
    parameters = request.get("parameters")
    binary_default = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    raw_outputs = request.get("outputs")
    if raw_outputs is None:
        return all_names, set(all_names) if binary_default else set()
    if not isinstance(raw_outputs, list):
        raise BadRequestError("'outputs' must be a list")
    names: list[str] = []
    binary: set[str] = set()
    for raw in raw_outputs:
        output = _as_dict(raw, "each requested output")
        name = output.get("name")
        names.append(check_output_name(name))
        output_parameters = output.get("parameters")
        wants_binary = binary_default
        if isinstance(output_parameters, dict) and "binary_data" in output_parameters:
            wants_binary = bool(output_parameters["binary_data"])
        if wants_binary:
            binary.add(str(name))
    return names, binary


def check_output_name(name: object) -> str:
    if name not in OUTPUT_NAMES:
        raise BadRequestError(f"unknown output {name!r}; this model has {list(OUTPUT_NAMES)}")
    return str(name)


def output_arrays(outputs: ModelOutputs) -> dict[str, np.ndarray]:
    """The model's outputs as the protocol's little-endian tensors, by name."""
    return {
        "bbox": np.ascontiguousarray(outputs.bbox, dtype="<f4"),
        "bbox_num": np.ascontiguousarray(outputs.bbox_num, dtype="<i4"),
    }


def encode_infer_response(
    model_name: str, request: InferRequest, outputs: ModelOutputs
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when binary outputs follow it."""
    arrays = output_arrays(outputs)
    described = []
    chunks = []
    for name in request.requested_outputs:
        array = arrays[name]
        entry: dict[str, object] = {"name": name, "datatype": OUTPUT_DATATYPES[name], "shape": list(array.shape)}
        if name in request.binary_outputs:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    response: dict[str, object] = {"model_name": model_name, "model_version": "1", "outputs": described}
    if request.id is not None:
        response["id"] = request.id
    header = orjson.dumps(response)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
