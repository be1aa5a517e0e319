"""rtdetr-edge: RT-DETR detection, quantized with PaddleSlim ACT and served with Paddle Inference."""

__version__ = "0.1.0"
