"""Open Inference Protocol over gRPC (KServe ``grpc_predict_v2.proto``, Triton's
``inference.GRPCInferenceService``): the messages and the request/response codec, pure.

The messages are built at import from the protocol's descriptor set shipped beside its ``.proto``
(``proto/grpc_predict_v2.binpb``, made by ``make proto``) into a private descriptor pool: no
generated code tied to one protobuf release, and no clash with a client library (tritonclient)
that registers the same ``inference.*`` names in the default pool of the same process.

Inputs arrive as ``raw_input_contents`` (tritonclient's default) or typed ``contents``; outputs
always leave as ``raw_output_contents``, the bytes the HTTP binary extension sends, so both
protocols return bit-identical tensors. Validation is the HTTP codec's (:mod:`oip`).
"""

from __future__ import annotations

from importlib import resources
from types import SimpleNamespace
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from rtdetr_edge.errors import BadRequestError
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.server import oip

SERVICE = "inference.GRPCInferenceService"
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
_CONTENTS_FIELD = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents"}
"""Where each accepted datatype's values are in ``InferTensorContents``."""


def _load_messages() -> SimpleNamespace:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("rtdetr_edge.server").joinpath("proto/grpc_predict_v2.binpb").read_bytes()
    )
    pool = descriptor_pool.DescriptorPool()
    for file in descriptors.file:
        pool.Add(file)
    service = pool.FindServiceByName(SERVICE)
    classes: dict[str, Any] = {}
    for method in service.methods:
        for message in (method.input_type, method.output_type):
            classes[message.name] = message_factory.GetMessageClass(message)
    return SimpleNamespace(**classes)


messages = _load_messages()
"""The protocol's message classes by name (``messages.ModelInferRequest``, ...)."""


def method_types(method: str) -> tuple[Any, Any]:
    """The request and response classes of one RPC of the service."""
    return getattr(messages, f"{method}Request"), getattr(messages, f"{method}Response")


def model_metadata(name: str, platform: str) -> Any:
    """``ModelMetadataResponse`` (the digest is in the HTTP metadata's parameters: the gRPC
    message has no field for it)."""
    tensor = messages.ModelMetadataResponse.TensorMetadata
    return messages.ModelMetadataResponse(
        name=name, versions=["1"], platform=platform,
        inputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in oip.INPUT_TENSORS],
        outputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in oip.OUTPUT_TENSORS],
    )  # fmt: skip


def decode_infer_request(request: Any, max_batch_size: int) -> oip.InferRequest:
    """A ``ModelInferRequest`` as model inputs, checked like an HTTP one (raises ``BadRequestError``)."""
    if not request.inputs:
        raise BadRequestError("'inputs' must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input, "
                              "in the order of the inputs")  # fmt: skip
    tensors: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if datatype not in oip.DATATYPES:
            raise BadRequestError(f"input {name!r}: datatype {datatype} is not supported (use FP32)")
        if not all(dim >= 0 for dim in shape):
            raise BadRequestError(f"input {name!r}: shape must be non-negative integers, got {shape}")
        dtype = oip.DATATYPES[datatype]
        count = int(np.prod(shape)) if shape else 1
        has_contents = tensor.HasField("contents")
        if raw:
            if has_contents:
                raise BadRequestError(f"input {name!r} has both contents and raw_input_contents: send one")
            if len(raw[index]) != count * dtype.itemsize:
                raise BadRequestError(f"input {name!r}: {len(raw[index])} raw bytes != {count} x {dtype.itemsize} bytes")
            array = np.frombuffer(raw[index], dtype=dtype).reshape(shape)
        elif has_contents:
            values = getattr(tensor.contents, _CONTENTS_FIELD[datatype])
            if len(values) != count:
                raise BadRequestError(f"input {name!r}: {len(values)} values in contents.{_CONTENTS_FIELD[datatype]} "
                                      f"for shape {shape}")  # fmt: skip
            array = np.asarray(values, dtype=dtype).reshape(shape)
        else:
            raise BadRequestError(f"input {name!r} has neither contents nor raw_input_contents")
        tensors[name] = array.astype(np.float32, copy=False)
    inputs = oip.validate_inputs(tensors, max_batch_size)
    requested = [oip.check_output_name(output.name) for output in request.outputs] or list(oip.OUTPUT_NAMES)
    return oip.InferRequest(request.id or None, inputs, requested, set(requested))


def encode_infer_response(model_name: str, request: oip.InferRequest, outputs: ModelOutputs) -> Any:
    """``ModelInferResponse`` with every requested output as raw little-endian bytes."""
    arrays = oip.output_arrays(outputs)
    response = messages.ModelInferResponse(model_name=model_name, model_version="1", id=request.id or "")
    for name in request.requested_outputs:
        array = arrays[name]
        response.outputs.add(name=name, datatype=oip.OUTPUT_DATATYPES[name], shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response
