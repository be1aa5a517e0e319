"""CPU INT8 numerics across ISA levels, on real ONNX Runtime models of the shapes demo.

The recipe's 7-bit weights compute the same integers on every x86 CPU, so a gate measured on one
holds on all. A model with 8-bit weights (an earlier release's recipe) computes other numbers
without VNNI; serving refuses it on a CPU whose INT8 arithmetic differs from the gate's. The
"other" CPU is always the class this machine is not, so the test means the same on AVX2-only and
AVX-512 VNNI machines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rtdetr_edge.api.job import OnnxRuntimeInt8
from rtdetr_edge.coco import list_images
from rtdetr_edge.cpu_isa import IsaLevel, int8_arithmetic, this_cpu
from rtdetr_edge.errors import CpuIsaMismatchError
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.quantize import QuantizeSettings, quantize_model
from rtdetr_edge.quantize_onnx import int8_weights_portable
from rtdetr_edge.warmup import cpu_numerics_portable, warm_up

from ..conftest import start_server

INT8_ORT = PredictorSettings(backend="onnxruntime", precision="int8", max_batch_size=1)


def other_class_level() -> IsaLevel:
    """An ISA level whose INT8 arithmetic differs from this machine's."""
    return "avx2" if int8_arithmetic(this_cpu().level) == "exact" else "avx512-vnni"


@pytest.fixture(scope="module", params=[7, 8], ids=["7-bit", "8-bit"])
def ort_int8_model(request: pytest.FixtureRequest, shapes_model: Path, shapes_dataset: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:  # fmt: skip
    bits = request.param
    out = tmp_path_factory.mktemp(f"ort-int8-{bits}") / "model"
    recipe = OnnxRuntimeInt8(op_types=["Conv", "MatMul"], weight_bits=bits)
    settings = QuantizeSettings(arch="tiny", method="ptq", calibration_batches=4, runtime="onnxruntime",
                                onnxruntime=recipe)  # fmt: skip
    quantize_model(shapes_model, list_images(shapes_dataset / "train2017"), out, settings)
    return bits, out


def test_only_7_bit_weights_are_portable(ort_int8_model: tuple[int, Path]) -> None:
    bits, model_dir = ort_int8_model
    model = ModelFiles.locate(model_dir)
    assert model.onnx_int8 is not None
    assert int8_weights_portable(model.onnx_int8) is (bits == 7)
    assert cpu_numerics_portable(model, INT8_ORT) is (bits == 7)
    assert cpu_numerics_portable(model, PredictorSettings(backend="onnxruntime", precision="fp32")), "FP32 kernels"


def test_serving_refuses_8_bit_weights_gated_on_another_cpu_class(
    ort_int8_model: tuple[int, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bits, model_dir = ort_int8_model
    here = this_cpu().level
    warm_up(model_dir, INT8_ORT, tmp_path / "cache", measured_on=here).predictor.close()  # gated here: served
    with caplog.at_level(logging.WARNING, logger="rtdetr_edge.warmup"):
        warm_up(model_dir, INT8_ORT, tmp_path / "cache").predictor.close()  # by hand, gate unknown: served, warned
    assert ("numbers depend on the CPU" in caplog.text) is (bits == 8)
    if bits == 7:
        warm_up(model_dir, INT8_ORT, tmp_path / "cache", measured_on=other_class_level()).predictor.close()
        return
    with pytest.raises(CpuIsaMismatchError) as refused:
        warm_up(model_dir, INT8_ORT, tmp_path / "cache", measured_on=other_class_level())
    assert f"this node is {here}" in str(refused.value) and "Re-quantize" in str(refused.value)


@pytest.mark.parametrize("ort_int8_model", [8], indirect=True, ids=["8-bit"])
def test_serve_exits_with_the_mismatch_as_its_last_line(ort_int8_model: tuple[int, Path], tmp_path: Path) -> None:
    """What a serving pod does: exit non-zero, the cause last (the pod's termination message)."""
    _, model_dir = ort_int8_model
    server = start_server(model_dir, tmp_path / "cache", tmp_path, "--backend", "onnxruntime", "--precision", "int8",
                          "--measured-on-isa", other_class_level())  # fmt: skip
    assert server.process.wait(timeout=120) != 0
    last = server.log().strip().splitlines()[-1]
    assert "the accuracy gate measured this INT8 model on an" in last and "nodeSelector" in last, last
