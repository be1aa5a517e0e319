"""The Open Inference Protocol over gRPC on a real `rtdetr-edge serve --grpc-port` process, driven
by someone else's codec: tritonclient.grpc (and its generated stubs for what the client does not
send by itself). Same model, batcher, limits and errors as HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests

from rtdetr_edge.dev.ports import free_port
from rtdetr_edge.preprocess import preprocess_bytes

from ..conftest import ServerProcess, start_server


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    """A server with HTTP and gRPC, and its gRPC port."""
    work = tmp_path_factory.mktemp("grpc-server")
    grpc_port = free_port()
    server = start_server(tiny_model_dir, work / "cache", work, "--grpc-port", str(grpc_port))
    try:
        server.wait_ready()
        yield server, grpc_port
    finally:
        assert server.stop() == 0, server.log()


def model_inputs(image_bytes: bytes) -> dict[str, np.ndarray]:
    image = preprocess_bytes(image_bytes)
    return {"image": image.image[None], "im_shape": image.im_shape[None], "scale_factor": image.scale_factor[None]}


def triton_inputs(client_module: Any, arrays: dict[str, np.ndarray], binary_data: bool = True) -> list[Any]:
    """tritonclient's InferInputs (``tritonclient.http`` or ``.grpc``) for the model's tensors;
    ``binary_data`` (HTTP only): the binary tensor extension, else JSON numbers."""
    inputs = []
    for name, array in arrays.items():
        tensor = client_module.InferInput(name, list(array.shape), "FP32")
        if client_module.__name__.endswith("http"):
            tensor.set_data_from_numpy(array, binary_data=binary_data)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def infer_grpc(port: int, model: str, arrays: dict[str, np.ndarray], **kwargs: object) -> Any:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    return client.infer(model, triton_inputs(grpcclient, arrays), **kwargs)


def test_tritonclient_grpc_gets_bit_identical_results_to_http(
    served: tuple[ServerProcess, int], fixture_images: list[Path]
) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server, port = served
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(server.model_name)
    metadata = client.get_model_metadata(server.model_name, as_json=True)
    assert [i["name"] for i in metadata["inputs"]] == ["image", "im_shape", "scale_factor"]
    assert [o["name"] for o in metadata["outputs"]] == ["bbox", "bbox_num"]
    assert metadata["inputs"][0]["shape"] == ["-1", "3", "640", "640"]  # int64 in protobuf's JSON
    assert client.get_server_metadata(as_json=True)["name"] == "rtdetr-edge"

    http = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    for path in fixture_images:
        arrays = model_inputs(path.read_bytes())
        by_grpc = infer_grpc(port, server.model_name, arrays, request_id=path.stem)
        by_http = http.infer(server.model_name, triton_inputs(httpclient, arrays))
        for output in ("bbox", "bbox_num"):
            grpc_array, http_array = by_grpc.as_numpy(output), by_http.as_numpy(output)
            assert grpc_array.dtype == http_array.dtype and grpc_array.shape == http_array.shape
            assert grpc_array.tobytes() == http_array.tobytes(), f"{path.name}: {output} differs between gRPC and HTTP"
        assert by_grpc.as_numpy("bbox").shape == (300, 6)
        assert by_grpc.get_response().id == path.stem

    # One requested output only.
    arrays = model_inputs(fixture_images[0].read_bytes())
    only = infer_grpc(port, server.model_name, arrays, outputs=[grpcclient.InferRequestedOutput("bbox_num")])
    assert [o.name for o in only.get_response().outputs] == ["bbox_num"]


def tritons_stub(port: int) -> tuple[object, object, grpc.Channel]:
    """tritonclient's generated protobuf module and service stub (its codec, not ours)."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    return service_pb2, service_pb2_grpc.GRPCInferenceServiceStub(channel), channel


def infer_request(pb: object, model: str, arrays: dict[str, np.ndarray], raw: bool = True) -> object:
    request = pb.ModelInferRequest(model_name=model)  # type: ignore[attr-defined]
    for name, array in arrays.items():
        tensor = request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
        if raw:
            request.raw_input_contents.append(array.astype("<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(array.reshape(-1).tolist())
    return request


def test_typed_contents_give_the_same_answer_as_raw_bytes(served: tuple[ServerProcess, int], fixture_images: list[Path]) -> None:
    server, port = served
    pb, stub, channel = tritons_stub(port)
    with channel:
        arrays = model_inputs(fixture_images[1].read_bytes())
        raw = stub.ModelInfer(infer_request(pb, server.model_name, arrays, raw=True))
        typed = stub.ModelInfer(infer_request(pb, server.model_name, arrays, raw=False))
    assert raw.raw_output_contents == typed.raw_output_contents
    assert [(o.name, o.datatype, list(o.shape)) for o in raw.outputs] == [("bbox", "FP32", [300, 6]), ("bbox_num", "INT32", [1])]


def _bad(pb: object, model: str, arrays: dict[str, np.ndarray], case: str) -> object:
    if case == "unknown model":
        return infer_request(pb, "yolo", arrays)
    if case == "wrong image shape":
        return infer_request(pb, model, {**arrays, "image": np.zeros((1, 3, 2, 2), np.float32)})
    if case == "missing input":
        return infer_request(pb, model, {k: v for k, v in arrays.items() if k != "scale_factor"})
    if case == "BYTES datatype":
        request = infer_request(pb, model, arrays)
        request.inputs[0].datatype = "BYTES"  # type: ignore[attr-defined]
        return request
    if case == "raw bytes short":
        request = infer_request(pb, model, arrays)
        request.raw_input_contents[1] = b"\x00" * 4  # type: ignore[attr-defined]
        return request
    if case == "fewer raw contents than inputs":
        request = infer_request(pb, model, arrays)
        del request.raw_input_contents[2]  # type: ignore[attr-defined]
        return request
    if case == "no data":
        request = infer_request(pb, model, arrays)
        del request.raw_input_contents[:]  # type: ignore[attr-defined]
        return request
    if case == "unknown output":
        request = infer_request(pb, model, arrays)
        request.outputs.add(name="masks")  # type: ignore[attr-defined]
        return request
    if case == "batch above the server's max":
        return infer_request(pb, model, {name: np.repeat(array, 5, axis=0) for name, array in arrays.items()})
    if case == "zero scale factor":
        return infer_request(pb, model, {**arrays, "scale_factor": np.zeros((1, 2), np.float32)})
    if case == "message above the limit":
        return infer_request(pb, model, {**arrays, "image": np.zeros((17, 3, 640, 640), np.float32)})
    raise AssertionError(case)


BAD_INFERS = [
    ("unknown model", grpc.StatusCode.NOT_FOUND, "not found"),
    ("wrong image shape", grpc.StatusCode.INVALID_ARGUMENT, "'image' must have shape"),
    ("missing input", grpc.StatusCode.INVALID_ARGUMENT, "missing ['scale_factor']"),
    ("BYTES datatype", grpc.StatusCode.INVALID_ARGUMENT, "datatype BYTES is not supported"),
    ("raw bytes short", grpc.StatusCode.INVALID_ARGUMENT, "4 raw bytes"),
    ("fewer raw contents than inputs", grpc.StatusCode.INVALID_ARGUMENT, "2 raw_input_contents for 3 inputs"),
    ("no data", grpc.StatusCode.INVALID_ARGUMENT, "neither contents nor raw_input_contents"),
    ("unknown output", grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'masks'"),
    ("batch above the server's max", grpc.StatusCode.INVALID_ARGUMENT, "outside 1..4"),
    ("zero scale factor", grpc.StatusCode.INVALID_ARGUMENT, "'scale_factor' must be positive"),
    ("message above the limit", grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
]


@pytest.mark.parametrize(("case", "status", "words"), BAD_INFERS, ids=[case for case, _, _ in BAD_INFERS])
def test_bad_infer_requests_get_their_grpc_status_and_the_server_keeps_serving(
    served: tuple[ServerProcess, int], fixture_images: list[Path], case: str, status: grpc.StatusCode, words: str
) -> None:
    server, port = served
    pb, stub, channel = tritons_stub(port)
    arrays = model_inputs(fixture_images[0].read_bytes())
    with channel:
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_bad(pb, server.model_name, arrays, case))
        assert refused.value.code() == status, refused.value.details()
        assert words in refused.value.details(), refused.value.details()
        assert len(stub.ModelInfer(infer_request(pb, server.model_name, arrays)).raw_output_contents) == 2
    assert server.process.poll() is None


def test_unknown_model_in_metadata_and_ready_calls_is_not_found(served: tuple[ServerProcess, int]) -> None:
    _, port = served
    pb, stub, channel = tritons_stub(port)
    with channel:
        for call, request in ((stub.ModelMetadata, pb.ModelMetadataRequest(name="yolo")),
                              (stub.ModelReady, pb.ModelReadyRequest(name="yolo"))):  # fmt: skip
            with pytest.raises(grpc.RpcError) as refused:
                call(request)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            assert "serves 'rtdetr'" in refused.value.details()


def test_grpc_requests_share_the_batcher_and_are_counted_beside_http(
    served: tuple[ServerProcess, int], fixture_images: list[Path]
) -> None:
    server, port = served
    answered = 'rtdetr_request_duration_seconds_count{code="200",protocol="grpc",route="infer"}'
    before = series_value(requests.get(f"{server.url}/metrics", timeout=5).text, answered)
    image = fixture_images[2].read_bytes()
    arrays = model_inputs(image)

    def both(index: int) -> None:
        if index % 2:
            infer_grpc(port, server.model_name, arrays)
        else:
            assert requests.post(f"{server.url}/v1/detect", data=image, timeout=30).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(both, range(16)))
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert series_value(text, answered) - before == 8, text
    assert 'rtdetr_request_duration_seconds_count{code="400",protocol="grpc",route="infer"}' in text
    assert 'rtdetr_request_duration_seconds_count{code="404",protocol="grpc",route="model_metadata"}' in text


def series_value(metrics_text: str, series: str) -> float:
    """One series' value in a /metrics page (0 when absent)."""
    for line in metrics_text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_taken_grpc_port_stops_the_server_with_the_cause(tiny_model_dir: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--grpc-port", str(port))
        code = server.process.wait(120)
    assert code == 1, server.log()
    last_line = server.log().strip().splitlines()[-1]
    assert last_line.startswith(f"error: could not listen for gRPC on 127.0.0.1:{port}"), server.log()
