"""The one place that imports Paddle, in the order that works on these wheels.

``paddlepaddle==2.6.2`` (CPU wheel) exports its own zlib ``inflate*`` symbols; if
it is imported before OpenCV or SciPy, their later import fails with
``zlib.error: Error -2 ... inconsistent stream state``. Importing them first
avoids the clash. NumPy 2 crashes Paddle 2.6.2 outright, so refuse it with a
clear message instead of a segfault.
"""

from __future__ import annotations

import logging
import os
from typing import Any

_paddle: Any = None


def import_paddle() -> Any:
    """Import and return the ``paddle`` module (idempotent, cheap after the first call)."""
    global _paddle
    if _paddle is not None:
        return _paddle
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise RuntimeError(
            f"NumPy {numpy.__version__} is installed but paddlepaddle 2.6.2 crashes with NumPy 2; "
            "install 'numpy<2' (see pyproject.toml)"
        )
    import cv2  # noqa: F401  (must precede paddle: zlib symbol clash)
    import scipy.optimize  # noqa: F401  (same reason; pulled in by paddleslim and training)

    # Paddle's glog chatter ("I1125 ... New Executor is Running") drowns our progress logs.
    os.environ.setdefault("GLOG_minloglevel", "2")
    # Paddle imports tqdm, which reads TQDM_* once, at its import: PaddleSlim's per-op progress
    # bars (212 KB of log for 20 iterations) are off only if this is set before that.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("GLOG_v", "0")
    # Importing paddle sets the root logger to WARNING, silencing our progress logs.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    import paddle

    root.setLevel(level)
    root.handlers[:] = handlers
    _paddle = paddle
    return paddle


def import_paddle_inference() -> Any:
    """Return ``paddle.inference`` (imports Paddle first, in the safe order)."""
    import_paddle()
    import paddle.inference

    return paddle.inference
