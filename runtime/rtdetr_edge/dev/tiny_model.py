"""A small RT-DETR-shaped detector, built deterministically from a seed.

Tests and the demo cannot download PaddleDetection's real RT-DETR weights, so
they use this network instead. It has exactly the inputs and outputs of a
PaddleDetection RT-DETR export made with ``trt=True``::

    inputs : im_shape [-1, 2], image [-1, 3, 640, 640], scale_factor [-1, 2]  (float32)
    outputs: [-1, 6] float32 (class, score, x1, y1, x2, y2 in original pixels),
             [-1]    int32   (boxes per image; always ``num_queries``)

and exercises the same op families as the real export (conv2d, depthwise conv,
batch_norm, pool2d, layer_norm, attention matmuls + softmax, gelu,
nearest_interp_v2, grid_sampler for deformable attention, top_k_v2 query
selection, gather_nd, sigmoid, floor/mod/floordiv in post-processing), so what
works on it (export, ACT quantization, oneDNN, paddle2onnx, shape collection)
works on a real export. It costs ~2 % of RT-DETR-R18's compute.

Importing this module imports Paddle (through :mod:`rtdetr_edge.paddle_import`);
only code that builds or trains the tiny model should import it. Classes live at
module level because Paddle's dy2static export re-parses their source.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


from rtdetr_edge.paddle_import import import_paddle

paddle = import_paddle()
nn = paddle.nn
functional = paddle.nn.functional

INPUT_SIZE = 640
LEVEL_STRIDES = (16, 32)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny network. Defaults are sized for CPU tests (ACT in ~1 min)."""

    num_classes: int = 80
    hidden_dim: int = 64
    num_queries: int = 300
    num_heads: int = 4
    sampling_points: int = 4
    seed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ConvNormAct(nn.Layer):  # type: ignore[misc]
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2D(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias_attr=False)
        self.norm = nn.BatchNorm2D(c_out)
        self.act = act

    def forward(self, x: Any) -> Any:
        x = self.norm(self.conv(x))
        if self.act:
            x = functional.relu(x)
        return x


class DownBlock(nn.Layer):  # type: ignore[misc]
    """Depthwise-separable stride-2 block with a ResNet-vd style avg-pool shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(c_in, c_in, 3, 2, groups=c_in)
        self.pointwise = ConvNormAct(c_in, c_out, 1, 1, act=False)
        self.pool = nn.AvgPool2D(2, 2)
        self.shortcut = ConvNormAct(c_in, c_out, 1, 1, act=False)

    def forward(self, x: Any) -> Any:
        return functional.relu(self.pointwise(self.depthwise(x)) + self.shortcut(self.pool(x)))


class Backbone(nn.Layer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, 16, 3, 2), ConvNormAct(16, 24, 3, 2))  # stride 4
        self.stage2 = DownBlock(24, 32)  # stride 8
        self.stage3 = DownBlock(32, 48)  # stride 16
        self.stage4 = DownBlock(48, 96)  # stride 32

    def forward(self, x: Any) -> tuple[Any, Any]:
        c4 = self.stage3(self.stage2(self.stem(x)))
        return c4, self.stage4(c4)


class DeformableCrossAttention(nn.Layer):  # type: ignore[misc]
    """RT-DETR's multi-scale deformable attention, sampling with ``grid_sample``."""

    def __init__(self, hidden: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.heads = heads
        self.levels = levels
        self.points = points
        self.sampling_offsets = nn.Linear(hidden, heads * levels * points * 2)
        self.attention_weights = nn.Linear(hidden, heads * levels * points)
        self.value_proj = nn.Linear(hidden, hidden)
        self.output_proj = nn.Linear(hidden, hidden)

    def forward(self, query: Any, reference: Any, memory: Any, shapes: list[tuple[int, int]]) -> Any:
        batch = paddle.shape(query)[0]
        num_q = query.shape[1]
        head_dim = self.hidden // self.heads
        value = self.value_proj(memory).reshape([batch, -1, self.heads, head_dim])
        offsets = self.sampling_offsets(query).reshape([batch, num_q, self.heads, self.levels, self.points, 2])
        weights = functional.softmax(
            self.attention_weights(query).reshape([batch, num_q, self.heads, self.levels * self.points]), axis=-1
        ).reshape([batch, num_q, self.heads, self.levels, self.points])
        ref_xy = reference[:, :, :2].reshape([batch, num_q, 1, 1, 1, 2])
        ref_wh = reference[:, :, 2:].reshape([batch, num_q, 1, 1, 1, 2])
        grids = 2.0 * (ref_xy + offsets / self.points * ref_wh * 0.5) - 1.0
        sampled = []
        start = 0
        for level, (height, width) in enumerate(shapes):
            value_l = value[:, start : start + height * width].transpose([0, 2, 3, 1])
            value_l = value_l.reshape([batch * self.heads, head_dim, height, width])
            start += height * width
            grid_l = grids[:, :, :, level].transpose([0, 2, 1, 3, 4])
            grid_l = grid_l.reshape([batch * self.heads, num_q, self.points, 2])
            sampled.append(
                functional.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
            )
        stacked = paddle.concat(sampled, axis=-1)  # [B*H, Dh, Q, L*P]
        attn = weights.transpose([0, 2, 1, 3, 4]).reshape([batch * self.heads, 1, num_q, self.levels * self.points])
        out = (stacked * attn).sum(-1).reshape([batch, self.hidden, num_q]).transpose([0, 2, 1])
        return self.output_proj(out)


class DecoderLayer(nn.Layer):  # type: ignore[misc]
    def __init__(self, hidden: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiHeadAttention(hidden, heads)
        self.norm1 = nn.LayerNorm(hidden)
        self.cross_attn = DeformableCrossAttention(hidden, heads, levels, points)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden * 2), nn.ReLU(), nn.Linear(hidden * 2, hidden))
        self.norm3 = nn.LayerNorm(hidden)

    def forward(self, target: Any, reference: Any, memory: Any, shapes: list[tuple[int, int]], query_pos: Any) -> Any:
        q = target + query_pos
        target = self.norm1(target + self.self_attn(q, q, target))
        target = self.norm2(target + self.cross_attn(target + query_pos, reference, memory, shapes))
        return self.norm3(target + self.ffn(target))


def sincos_position_embedding(height: int, width: int, dim: int) -> Any:
    """RT-DETR's 2-D sin-cos embedding, computed in the graph (``[1, H*W, dim]``).

    Computed rather than stored: like RT-DETR without a fixed ``eval_size``, and it
    keeps FP32 constants from dominating the tiny model's (INT8) params file.
    """
    grid_h, grid_w = paddle.meshgrid(
        paddle.arange(height, dtype="float32"), paddle.arange(width, dtype="float32")
    )
    pos_dim = dim // 4
    omega = 1.0 / (10000.0 ** (paddle.arange(pos_dim, dtype="float32") / pos_dim))
    out_w = grid_w.flatten().unsqueeze(-1) * omega.unsqueeze(0)
    out_h = grid_h.flatten().unsqueeze(-1) * omega.unsqueeze(0)
    return paddle.concat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], axis=1).unsqueeze(0)


def anchor_logits(shapes: list[tuple[int, int]]) -> Any:
    """Grid anchors (cx, cy, w, h) per feature cell in inverse-sigmoid space, computed as RT-DETR."""
    anchors = []
    for level, (height, width) in enumerate(shapes):
        grid_y, grid_x = paddle.meshgrid(
            paddle.arange(height, dtype="float32"), paddle.arange(width, dtype="float32")
        )
        cx = (grid_x.flatten() + 0.5) / width
        cy = (grid_y.flatten() + 0.5) / height
        size = paddle.full_like(cx, 0.05 * (2.0**level))
        anchors.append(paddle.stack([cx, cy, size, size], axis=1))
    anchor = paddle.concat(anchors, axis=0).clip(0.01, 0.99)
    return paddle.log(anchor / (1 - anchor)).unsqueeze(0)


def inverse_sigmoid(x: Any, eps: float = 1e-5) -> Any:
    x = x.clip(min=0.0, max=1.0)
    return paddle.log(x.clip(min=eps) / (1 - x).clip(min=eps))


class TinyRTDETR(nn.Layer):  # type: ignore[misc]
    """Backbone → hybrid encoder (AIFI + FPN/PAN) → query selection → deformable decoder.

    ``forward(image)`` returns ``(logits [N,Q,C], boxes [N,Q,4])`` with boxes as
    normalized (cx, cy, w, h); in training mode it also returns the encoder's
    logits and boxes of the selected queries (for the query-selection loss).
    """

    def __init__(self, spec: TinyModelSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden_dim
        self.shapes = [(INPUT_SIZE // s, INPUT_SIZE // s) for s in LEVEL_STRIDES]
        self.backbone = Backbone()
        self.proj4 = ConvNormAct(48, hidden, 1, 1, act=False)
        self.proj5 = ConvNormAct(96, hidden, 1, 1, act=False)
        # AIFI: one transformer encoder layer on the coarsest level (gelu FFN, as RT-DETR).
        self.aifi = nn.TransformerEncoderLayer(hidden, spec.num_heads, hidden * 2, dropout=0.0, activation="gelu")
        self.fuse4 = ConvNormAct(hidden, hidden, 3, 1)
        self.down4 = ConvNormAct(hidden, hidden, 3, 2)
        self.fuse5 = ConvNormAct(hidden, hidden, 3, 1)
        self.enc_output = nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden))
        self.enc_score_head = nn.Linear(hidden, spec.num_classes)
        self.enc_bbox_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        self.query_pos_head = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.decoder = DecoderLayer(hidden, spec.num_heads, len(self.shapes), spec.sampling_points)
        self.dec_score_head = nn.Linear(hidden, spec.num_classes)
        self.dec_bbox_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        prior_bias = -math.log((1 - 0.01) / 0.01)  # focal-loss prior, as RT-DETR
        for head in (self.enc_score_head, self.dec_score_head):
            head.bias.set_value(paddle.full_like(head.bias, prior_bias))

    def encode(self, image: Any) -> Any:
        c4, c5 = self.backbone(image)
        f4, f5 = self.proj4(c4), self.proj5(c5)
        batch = paddle.shape(f5)[0]
        hidden = self.spec.hidden_dim
        coarse = self.shapes[-1][0]
        tokens = f5.flatten(2).transpose([0, 2, 1])
        tokens = self.aifi(tokens + sincos_position_embedding(coarse, coarse, hidden))
        f5 = tokens.transpose([0, 2, 1]).reshape([batch, hidden, coarse, coarse])
        f4 = self.fuse4(f4 + functional.interpolate(f5, scale_factor=2.0, mode="nearest"))
        f5 = self.fuse5(f5 + self.down4(f4))
        return paddle.concat([f4.flatten(2), f5.flatten(2)], axis=2).transpose([0, 2, 1])

    def forward(self, image: Any) -> tuple[Any, ...]:
        num_queries = self.spec.num_queries
        memory = self.encode(image)
        batch = paddle.shape(memory)[0]
        features = self.enc_output(memory)
        enc_logits = self.enc_score_head(features)
        enc_box_logits = self.enc_bbox_head(features) + anchor_logits(self.shapes)
        _, top_index = paddle.topk(enc_logits.max(-1), num_queries, axis=1)
        batch_index = paddle.arange(batch, dtype=top_index.dtype).unsqueeze(-1).tile([1, num_queries])
        gather_index = paddle.stack([batch_index, top_index], axis=-1)
        enc_top_boxes = functional.sigmoid(paddle.gather_nd(enc_box_logits, gather_index))
        reference = enc_top_boxes.detach()
        target = paddle.gather_nd(features, gather_index).detach()
        query_pos = self.query_pos_head(reference)
        target = self.decoder(target, reference, memory, self.shapes, query_pos)
        boxes = functional.sigmoid(self.dec_bbox_head(target) + inverse_sigmoid(reference))
        logits = self.dec_score_head(target)
        if self.training:
            return logits, boxes, paddle.gather_nd(enc_logits, gather_index), enc_top_boxes
        return logits, boxes


class ExportedRTDETR(nn.Layer):  # type: ignore[misc]
    """``TinyRTDETR`` + RT-DETR's DETRPostProcess: the I/O of a PaddleDetection export."""

    def __init__(self, model: TinyRTDETR) -> None:
        super().__init__()
        self.model = model
        self.num_classes = model.spec.num_classes
        self.num_queries = model.spec.num_queries

    def forward(self, im_shape: Any, image: Any, scale_factor: Any) -> tuple[Any, Any]:
        logits, boxes = self.model(image)
        cx, cy, w, h = boxes.unbind(-1)
        xyxy = paddle.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
        origin = paddle.floor(im_shape / scale_factor + 0.5)
        img_h, img_w = origin.unbind(1)
        xyxy = xyxy * paddle.stack([img_w, img_h, img_w, img_h], axis=-1).unsqueeze(1)
        scores, index = paddle.topk(functional.sigmoid(logits).flatten(1), self.num_queries, axis=-1)
        labels = (index % self.num_classes).astype("float32")
        box_index = index // self.num_classes
        xyxy = paddle.take_along_axis(xyxy, box_index.unsqueeze(-1).tile([1, 1, 4]), axis=1)
        bbox = paddle.concat([labels.unsqueeze(-1), scores.unsqueeze(-1), xyxy], axis=-1).reshape([-1, 6])
        bbox_num = paddle.full([paddle.shape(image)[0]], self.num_queries, dtype="int32")
        return bbox, bbox_num


def build_tiny_rtdetr(spec: TinyModelSpec) -> TinyRTDETR:
    """The network in eval mode, weights drawn deterministically from ``spec.seed``."""
    paddle.seed(spec.seed)
    model = TinyRTDETR(spec)
    model.eval()
    return model


def export_inference_model(model: TinyRTDETR, out_dir: Path, labels: list[str] | None = None) -> Path:
    """Write ``model.pdmodel`` + ``model.pdiparams`` (Paddle 2.x format) and, like
    PaddleDetection, an ``infer_cfg.yml`` with the preprocessing and the label list."""
    from paddle.static import InputSpec

    layer = ExportedRTDETR(model)
    layer.eval()
    specs = [
        InputSpec([None, 2], "float32", "im_shape"),
        InputSpec([None, 3, INPUT_SIZE, INPUT_SIZE], "float32", "image"),
        InputSpec([None, 2], "float32", "scale_factor"),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # dy2static's notes about full_graph and force_cpu are about its own internals.
        warnings.simplefilter("ignore", UserWarning)
        paddle.jit.save(paddle.jit.to_static(layer, input_spec=specs), str(out_dir / "model"))
    strip_call_stacks(out_dir / "model.pdmodel")
    write_infer_cfg(out_dir, labels or default_labels(model.spec.num_classes))
    return out_dir


def default_labels(num_classes: int) -> list[str]:
    from rtdetr_edge.labels import coco_labels

    coco = coco_labels()
    return coco if num_classes == len(coco) else [f"class_{index}" for index in range(num_classes)]


def write_infer_cfg(out_dir: Path, labels: list[str]) -> None:
    """PaddleDetection's deploy config for RT-DETR (what ``deploy/python/infer.py`` reads)."""
    import yaml

    document = {
        "mode": "paddle",
        "draw_threshold": 0.5,
        "metric": "COCO",
        "use_dynamic_shape": False,
        "arch": "DETR",
        "min_subgraph_size": 3,
        "Preprocess": [
            {"interp": 2, "keep_ratio": False, "target_size": [INPUT_SIZE, INPUT_SIZE], "type": "Resize"},
            {"mean": [0.0, 0.0, 0.0], "norm_type": "none", "std": [1.0, 1.0, 1.0], "type": "NormalizeImage"},
            {"type": "Permute"},
        ],
        "label_list": labels,
    }
    (out_dir / "infer_cfg.yml").write_text(yaml.safe_dump(document, sort_keys=False))


def strip_call_stacks(program_file: Path) -> None:
    """Drop the Python call stacks dy2static records on every op: they name the caller's
    files and line numbers, so the same model exported from two places had different bytes."""
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc.FromString(program_file.read_bytes())
    for block in program.blocks:
        for op in block.ops:
            for attr in op.attrs:
                if attr.name == "op_callstack":
                    del attr.strings[:]
    program_file.write_bytes(program.SerializeToString())


def export_tiny_model(out_dir: Path, spec: TinyModelSpec) -> Path:
    """Build and export in one fresh name scope: the same spec gives byte-identical files,
    however many models this process built before (Paddle names tensors from global counters)."""
    with paddle.utils.unique_name.guard():
        return export_inference_model(build_tiny_rtdetr(spec), out_dir)
