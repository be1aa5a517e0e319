"""The tiny model must look like a PaddleDetection RT-DETR export to everything downstream."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.paddle_import import import_paddle_inference
from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.predictor.paddle_backend import PaddlePredictor
from rtdetr_edge.predictor.plan import plan_predictor
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import preprocess_bytes, stack_batch

# Op families of a real RT-DETR-R18 export (trt=True) that a stand-in must exercise.
REAL_EXPORT_FAMILIES = {
    "conv2d", "depthwise_conv2d", "batch_norm", "pool2d", "relu", "sigmoid", "gelu", "layer_norm",
    "matmul_v2", "softmax", "grid_sampler", "top_k_v2", "gather_nd", "nearest_interp_v2", "reduce_max",
    "elementwise_mod", "elementwise_floordiv", "floor", "log", "clip", "concat", "stack", "tile", "range",
}  # fmt: skip


def test_io_matches_a_paddledetection_export(tiny_model_dir: Path) -> None:
    inference = import_paddle_inference()
    config = inference.Config(str(tiny_model_dir / "model.pdmodel"), str(tiny_model_dir / "model.pdiparams"))
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    assert predictor.get_input_names() == ["im_shape", "image", "scale_factor"]
    outputs = predictor.get_output_names()
    assert len(outputs) == 2 and all(name.startswith("save_infer_model/scale_") for name in outputs)
    from paddle.base.proto import framework_pb2

    program = framework_pb2.ProgramDesc.FromString((tiny_model_dir / "model.pdmodel").read_bytes())
    variables = {var.name: var for var in program.blocks[0].vars}
    for name, shape in (("im_shape", [-1, 2]), ("image", [-1, 3, 640, 640]), ("scale_factor", [-1, 2])):
        tensor = variables[name].type.lod_tensor.tensor
        assert list(tensor.dims) == shape and tensor.data_type == framework_pb2.VarType.FP32


def test_op_families_match_the_real_export(tiny_model_dir: Path) -> None:
    ops = ModelFiles.locate(tiny_model_dir).op_counts()
    missing = REAL_EXPORT_FAMILIES - set(ops)
    assert not missing, f"tiny model lacks {missing}"
    assert not ModelFiles.locate(tiny_model_dir).is_quantized()


def test_export_is_deterministic_per_seed(tiny_model_dir: Path, other_model_dir: Path, tmp_path: Path) -> None:
    from rtdetr_edge.dev.demo import ensure_tiny_model

    again = ensure_tiny_model(tmp_path / "again", seed=0)
    assert ModelFiles.locate(again).digest() == ModelFiles.locate(tiny_model_dir).digest()
    tiny, other = ModelFiles.locate(tiny_model_dir), ModelFiles.locate(other_model_dir)
    assert tiny.program.read_bytes() == other.program.read_bytes(), "same graph"
    assert tiny.digest() != other.digest(), "different weights"


def test_outputs_are_positional_and_in_original_pixels(tiny_model_dir: Path, fixture_images: list[Path]) -> None:
    model = ModelFiles.locate(tiny_model_dir)
    predictor = PaddlePredictor(model, plan_predictor(PredictorSettings(), False, None, "/unused"))  # type: ignore[arg-type]
    images = [preprocess_bytes(path.read_bytes()) for path in fixture_images]
    outputs: ModelOutputs = predictor.predict(stack_batch(images))
    predictor.close()
    assert outputs.bbox.dtype == np.float32 and outputs.bbox.shape == (900, 6)
    assert outputs.bbox_num.dtype == np.int32 and outputs.bbox_num.tolist() == [300, 300, 300]
    for rows, image in zip(outputs.split(), images):
        classes, scores, boxes = rows[:, 0], rows[:, 1], rows[:, 2:]
        assert ((classes >= 0) & (classes < 80) & (classes == np.round(classes))).all()
        assert ((scores > 0) & (scores < 1)).all()
        assert np.all(np.diff(scores) <= 0), "RT-DETR post-processing returns scores sorted"
        # Boxes are normalised cxcywh scaled by the original size: centres inside the image.
        centres_x = (boxes[:, 0] + boxes[:, 2]) / 2
        centres_y = (boxes[:, 1] + boxes[:, 3]) / 2
        assert (centres_x >= 0).all() and (centres_x <= image.width).all()
        assert (centres_y >= 0).all() and (centres_y <= image.height).all()


def test_plans_only_name_real_config_methods() -> None:
    """The GPU plan cannot run here; at least every method it calls must exist in Paddle 2.6.2."""
    inference = import_paddle_inference()
    settings = [
        PredictorSettings(device="gpu", precision="int8"),
        PredictorSettings(device="gpu", precision="fp16"),
        PredictorSettings(device="cpu", precision="int8"),
    ]
    for setting in settings:
        plan = plan_predictor(setting, setting.precision == "int8", "/s.pbtxt", "/e")
        for method in plan.methods():  # type: ignore[union-attr]
            assert hasattr(inference.Config, method), method
