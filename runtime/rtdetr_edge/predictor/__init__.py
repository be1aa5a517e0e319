"""One predictor abstraction for evaluate, warm-up and serve.

Use :func:`rtdetr_edge.warmup.warm_up` to get a ready predictor: it collects
shape ranges, finds or builds the engine-cache entry and self-tests. The
pieces here (settings, the pure plan, the backend adapters) are what it uses.
"""

from __future__ import annotations

from typing import Protocol

from rtdetr_edge.postprocess import ModelOutputs
from rtdetr_edge.predictor.settings import PredictorSettings
from rtdetr_edge.preprocess import ModelInputs


class Predictor(Protocol):
    """Runs a batch; callers serialize calls (one inference thread)."""

    backend_name: str

    def predict(self, inputs: ModelInputs) -> ModelOutputs: ...

    def close(self) -> None: ...


__all__ = ["Predictor", "PredictorSettings"]
