"""Which x86 instruction-set level a CPU has, and what that means for INT8 arithmetic (pure).

ONNX Runtime's U8S8 integer kernels (MLAS) multiply uint8 activations by int8 weights with
``vpdpbusd`` where the CPU has VNNI (AVX512-VNNI, AVX-VNNI, AMX): every product is summed into
int32, exactly. Without VNNI (AVX2, AVX-512 F/BW) they use ``vpmaddubsw``, which adds each pair of
products into an int16 *with saturation*: 2 x 255 x 127 = 64,770 does not fit in 32,767, so the
same model computes different numbers there (ONNX Runtime's quantization guide, "saturation
issue on x86-64 without VNNI"). Measured on the shapes demo model: 38.7 mAP on AVX2 vs 44.0 on
AVX-512 VNNI, from one file.

Weights of at most 7 bits (|w| <= 64: 2 x 255 x 64 = 32,640) never saturate, so such a model
computes the same integers on every level: :func:`rtdetr_edge.quantize_onnx.int8_weights_portable`
reads that from the model's bytes, and :func:`isa_mismatch` decides whether a CPU may serve a
model whose accuracy gate ran on another.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

IsaLevel = Literal["amx", "avx512-vnni", "avx-vnni", "avx512", "avx2", "x86-64", "unknown"]
"""The levels that change ONNX Runtime's INT8 kernels, best first (``unknown``: not an x86 CPU we
can classify, e.g. arm64)."""

Int8Arithmetic = Literal["exact", "saturating", "unknown"]
"""How a level adds INT8 products: ``exact`` into int32 (VNNI, AMX), ``saturating`` through int16
pairs (AVX2, AVX-512 without VNNI), ``unknown`` elsewhere."""

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The /proc/cpuinfo flags that decide oneDNN's and ONNX Runtime's kernels (printed beside benchmarks)."""

# Node Feature Discovery's labels (feature.node.kubernetes.io/cpu-cpuid.<FLAG>=true) for the flags
# that make INT8 arithmetic exact; a node labelled with any of them adds products exactly.
NFD_PREFIX = "feature.node.kubernetes.io/cpu-cpuid."
EXACT_INT8_NFD_FLAGS = ("AVX512VNNI", "AVXVNNI", "AMXINT8")

MISMATCH_MESSAGE_LIMIT = 390
"""Characters of :func:`isa_mismatch`'s message: a crashed pod's status keeps the last 400 of its
last lines (rtdetr_operator.pod_status), and the message is the last one."""


def isa_level(flags: set[str] | frozenset[str]) -> IsaLevel:
    """The level of a CPU with these /proc/cpuinfo ``flags``."""
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "sse2" in flags:
        return "x86-64"
    return "unknown"


def int8_arithmetic(level: str) -> Int8Arithmetic:
    if level in ("amx", "avx512-vnni", "avx-vnni"):
        return "exact"
    if level in ("avx512", "avx2"):
        return "saturating"
    return "unknown"


def isa_mismatch(portable: bool, measured_on: IsaLevel | None, here: IsaLevel) -> str | None:
    """Why this CPU (``here``) must not serve an INT8 model whose gate ran on ``measured_on``
    (None: it may). A ``portable`` model (7-bit weights) computes the same integers everywhere.
    At most :data:`MISMATCH_MESSAGE_LIMIT` characters: it is a serving pod's last line, of which the
    resource's status keeps the end."""
    if portable or measured_on is None:
        return None
    gated, local = int8_arithmetic(measured_on), int8_arithmetic(here)
    if gated == local != "unknown":
        return None
    return (
        f"the accuracy gate measured this INT8 model on an {measured_on} CPU ({gated} INT8 arithmetic); this node "
        f"is {here} ({local}), where its 8-bit weights give other detections. Re-quantize it with this release "
        f"(7-bit weights: the same numbers on every CPU) or pin serving.nodeSelector to {measured_on}-class nodes "
        f"(e.g. {NFD_PREFIX}AVX512VNNI=true)"
    )


def node_affinity_for(measured_on: str) -> dict[str, Any] | None:
    """A required node affinity to nodes whose INT8 arithmetic is that of ``measured_on``, by Node
    Feature Discovery's labels (None: no label tells it). For models that are not portable; a
    cluster without NFD has no such labels, so the pods stay Pending and say why."""
    def label(flag: str, operator: str) -> dict[str, Any]:
        expression: dict[str, Any] = {"key": NFD_PREFIX + flag, "operator": operator}
        return {**expression, "values": ["true"]} if operator == "In" else expression

    arithmetic = int8_arithmetic(measured_on)
    if arithmetic == "exact":  # any one of the flags (terms are ORed)
        terms = [{"matchExpressions": [label(flag, "In")]} for flag in EXACT_INT8_NFD_FLAGS]
    elif arithmetic == "saturating":  # AVX2 and none of them (expressions are ANDed)
        absent = [label(flag, "DoesNotExist") for flag in EXACT_INT8_NFD_FLAGS]
        terms = [{"matchExpressions": [label("AVX2", "In"), *absent]}]
    else:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


@dataclass(frozen=True)
class CpuInfo:
    product: str
    flags: frozenset[str]

    @property
    def level(self) -> IsaLevel:
        return isa_level(self.flags)

    def isa_flags(self) -> tuple[str, ...]:
        """The flags of :data:`ISA_FLAGS` this CPU has, in that order."""
        return tuple(flag for flag in ISA_FLAGS if flag in self.flags)


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first CPU's model name and flags, from ``/proc/cpuinfo`` text."""
    product, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not product:
            product = value.strip()
        elif key == "flags" and not flags:
            flags = value
    return CpuInfo(product or platform.processor() or "unknown-cpu", frozenset(flags.split()))


def this_cpu() -> CpuInfo:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)
