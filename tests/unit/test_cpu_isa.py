"""ISA levels, their INT8 arithmetic, when a CPU may serve a model gated on another, and which
INT8 weights compute the same numbers on every level (tables)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rtdetr_edge.cpu_isa import MISMATCH_MESSAGE_LIMIT, int8_arithmetic, isa_level, isa_mismatch, parse_cpuinfo
from rtdetr_edge.quantize_onnx import int8_weights_portable, weights_portable

# Flags as /proc/cpuinfo prints them on the machines of this kind and on common edge CPUs.
EPYC_AVX2 = "fpu sse2 ssse3 fma avx avx2 bmi2 sha_ni vaes"
EPYC_VNNI = "fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16"
SAPPHIRE_RAPIDS = EPYC_VNNI + " amx_bf16 amx_tile amx_int8"
ALDER_LAKE = "fpu sse2 avx avx2 fma avx_vnni"
SKYLAKE_SP = "fpu sse2 avx avx2 fma avx512f avx512bw avx512vl"
ATOM_OLD = "fpu sse2 ssse3 sse4_2"
ARM64 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp"


@pytest.mark.parametrize(
    ("flags", "level", "arithmetic"),
    [
        (EPYC_AVX2, "avx2", "saturating"),
        (SKYLAKE_SP, "avx512", "saturating"),
        (ALDER_LAKE, "avx-vnni", "exact"),
        (EPYC_VNNI, "avx512-vnni", "exact"),
        (SAPPHIRE_RAPIDS, "amx", "exact"),
        (ATOM_OLD, "x86-64", "unknown"),
        (ARM64, "unknown", "unknown"),
    ],
)
def test_levels_and_their_int8_arithmetic(flags: str, level: str, arithmetic: str) -> None:
    assert isa_level(frozenset(flags.split())) == level
    assert int8_arithmetic(level) == arithmetic  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("portable", "measured_on", "here", "refused"),
    [
        (True, "avx512-vnni", "avx2", False),  # 7-bit weights: the same integers everywhere
        (True, None, "unknown", False),
        (False, None, "avx2", False),  # no gate to compare with (a model served by hand)
        (False, "avx512-vnni", "amx", False),  # both exact
        (False, "avx512-vnni", "avx-vnni", False),
        (False, "avx2", "avx512", False),  # both saturate the same int16 pairs
        (False, "avx512-vnni", "avx2", True),  # the measured failure: 44.0 gated, 38.7 served
        (False, "avx2", "avx512-vnni", True),  # the gate measured saturated numbers
        (False, "avx512-vnni", "unknown", True),  # cannot tell: refuse rather than guess
    ],
)
def test_when_a_cpu_may_serve_a_model_gated_on_another(
    portable: bool, measured_on: str | None, here: str, refused: bool
) -> None:
    problem = isa_mismatch(portable, measured_on, here)  # type: ignore[arg-type]
    assert (problem is not None) == refused
    if problem:
        assert len(problem) <= MISMATCH_MESSAGE_LIMIT, "status keeps only the end of a crashed pod's last lines"
        assert f"on an {measured_on} CPU" in problem and f"this node is {here}" in problem
        assert "Re-quantize it with this release" in problem and "nodeSelector" in problem


def test_parse_cpuinfo_reads_the_first_cpu() -> None:
    text = f"processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: {EPYC_AVX2}\n\n"
    text += "processor\t: 1\nmodel name\t: other\n"
    cpu = parse_cpuinfo(text)
    assert cpu.product == "AMD EPYC 7B13" and cpu.level == "avx2"
    assert cpu.isa_flags() == ("avx2", "fma")


def qdq_weights_model(path: Path, weights: np.ndarray) -> Path:
    """A minimal QDQ graph: int8 weights and an int32 bias dequantized into a Conv."""
    w = numpy_helper.from_array(weights, "w")
    bias = numpy_helper.from_array(np.array([1000, -5000], dtype=np.int32), "b")
    scale = numpy_helper.from_array(np.array(0.01, dtype=np.float32), "s")
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s"], ["wf"]),
        helper.make_node("DequantizeLinear", ["b", "s"], ["bf"]),
        helper.make_node("Conv", ["x", "wf", "bf"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, bias, scale],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize(
    ("values", "portable"),
    [([-64, 64, 3, 0], True), ([-65, 0, 1, 2], False), ([-128, 127, 0, 0], False), ([], True)],
)
def test_int8_weights_within_7_bits_are_portable(tmp_path: Path, values: list[int], portable: bool) -> None:
    """Read from the model's bytes: an earlier release's 8-bit weights are caught, the int32 bias
    (also dequantized) is not a weight."""
    weights = np.array(values, dtype=np.int8).reshape(-1, 1, 1, 1) if values else np.zeros((0, 1, 1, 1), np.int8)
    assert weights_portable([weights]) is portable
    assert int8_weights_portable(qdq_weights_model(tmp_path / "m.onnx", weights)) is portable
