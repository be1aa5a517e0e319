"""The benchmark's pure parts: the CPU line printed with every table, and repeated measurements."""

from __future__ import annotations

from rtdetr_edge.dev.bench import cpu_description, spread

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 hypervisor
"""


def test_cpu_line_names_the_model_and_the_isa_that_decides_the_kernels() -> None:
    line = cpu_description(CPUINFO)
    assert line.startswith("AMD EPYC 9R14, ") and "ISA level avx512-vnni (INT8 exact)" in line
    assert line.endswith("flags: avx2 fma avx512f avx512bw avx512_vnni avx512_bf16")
    assert "amx" not in line and "hypervisor" not in line


def test_cpu_line_without_vector_extensions_says_so() -> None:
    assert "flags: none of avx2" in cpu_description("model name : old\nflags : fpu sse2\n")


def test_spread_is_min_and_median() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == "1.00 / 2.50"
