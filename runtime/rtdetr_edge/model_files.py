"""Locate a Paddle inference model on disk and identify it by content."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rtdetr_edge.errors import ModelNotFoundError

PROGRAM_NAME = "model.pdmodel"
PARAMS_NAME = "model.pdiparams"
ONNX_INT8_NAME = "model.int8.onnx"
"""The CPU INT8 model (ONNX Runtime's static QDQ quantization), beside the FP32 export it was
made from (:mod:`rtdetr_edge.quantize_onnx`)."""
LABELS_FILE = "infer_cfg.yml"
"""PaddleDetection's export config (label_list): travels with the model through every stage,
or custom labels silently become COCO's 80."""
# Op types that only a quantized program contains: QDQ (ACT with onnx_format) or fake-quant.
QUANT_OP_TYPES = frozenset(
    {
        "quantize_linear",
        "dequantize_linear",
        "fake_quantize_dequantize_abs_max",
        "fake_quantize_dequantize_moving_average_abs_max",
        "fake_channel_wise_quantize_dequantize_abs_max",
        "fake_quantize_abs_max",
        "fake_quantize_moving_average_abs_max",
        "fake_channel_wise_quantize_abs_max",
        "fake_dequantize_max_abs",
        "fake_channel_wise_dequantize_max_abs",
    }
)


@dataclass(frozen=True)
class ModelFiles:
    """A Paddle 2.x inference model: a program file and its combined params file (and, when
    quantized for ONNX Runtime, the INT8 ONNX model made from them)."""

    directory: Path
    program: Path
    params: Path
    onnx_int8: Path | None = None

    @classmethod
    def locate(cls, directory: str | Path) -> "ModelFiles":
        """Find ``model.pdmodel`` + ``model.pdiparams`` (or a single ``X.pdmodel`` + ``X.pdiparams``).

        Raises :class:`ModelNotFoundError` naming what is missing; a Paddle 3
        PIR export (``model.json``) is recognised and refused with the reason.
        """
        root = Path(directory)
        if not root.is_dir():
            raise ModelNotFoundError(f"model directory {root} does not exist")
        program = root / PROGRAM_NAME
        if not program.is_file():
            candidates = sorted(root.glob("*.pdmodel"))
            if len(candidates) == 1:
                program = candidates[0]
            elif (root / "model.json").is_file():
                raise ModelNotFoundError(
                    f"{root} holds a Paddle 3 PIR export (model.json); rtdetr-edge needs the Paddle 2.x "
                    "format (model.pdmodel): export with paddlepaddle 2.6"
                )
            else:
                found = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
                raise ModelNotFoundError(f"no {PROGRAM_NAME} in {root} (found: {found})")
        params = program.with_suffix(".pdiparams")
        if not params.is_file():
            raise ModelNotFoundError(f"{program.name} in {root} has no matching {params.name}")
        onnx_int8 = root / ONNX_INT8_NAME
        return cls(directory=root, program=program, params=params, onnx_int8=onnx_int8 if onnx_int8.is_file() else None)

    def files(self) -> tuple[Path, ...]:
        return (self.program, self.params) + ((self.onnx_int8,) if self.onnx_int8 else ())

    def digest(self) -> str:
        """``sha256:<hex>`` over the model files' bytes; names and mtimes do not count."""
        hasher = hashlib.sha256()
        for path in self.files():
            hasher.update(path.stat().st_size.to_bytes(8, "little"))
            with path.open("rb") as stream:
                while chunk := stream.read(1 << 20):
                    hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()

    def op_counts(self) -> Counter[str]:
        """How many ops of each type the program holds (parsed, not grepped: the
        program also embeds a version map naming every registered op type)."""
        from rtdetr_edge.paddle_import import import_paddle

        import_paddle()
        from paddle.base.proto import framework_pb2

        program = framework_pb2.ProgramDesc.FromString(self.program.read_bytes())
        return Counter(op.type for block in program.blocks for op in block.ops)

    def is_quantized(self) -> bool:
        """True if the program holds quantize/dequantize ops (a PaddleSlim ACT/PTQ output)."""
        return not QUANT_OP_TYPES.isdisjoint(self.op_counts())

    def is_quantized_for(self, backend: str) -> bool:
        """Whether ``backend`` would run this model in INT8: ONNX Runtime runs ``model.int8.onnx``,
        Paddle a QDQ program."""
        return self.onnx_int8 is not None if backend == "onnxruntime" else self.is_quantized()

    def label_list(self) -> list[str] | None:
        """``label_list`` of the export's ``infer_cfg.yml`` (PaddleDetection writes it), if present."""
        infer_cfg = self.directory / LABELS_FILE
        if not infer_cfg.is_file():
            return None
        from rtdetr_edge.labels import load_labels

        try:
            return load_labels(infer_cfg)
        except ValueError:
            return None

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files())
