"""A small client for ``POST /v1/detect`` (used by ``rtdetr-edge detect`` and the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from rtdetr_edge.errors import RtdetrEdgeError


class DetectError(RtdetrEdgeError):
    """The server answered with an error (its JSON message is kept)."""


def content_type_for(data: bytes) -> str:
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"


class DetectClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def detect_bytes(
        self, data: bytes, score_threshold: float | None = None, max_detections: int | None = None
    ) -> dict[str, Any]:
        params = {}
        if score_threshold is not None:
            params["score_threshold"] = str(score_threshold)
        if max_detections is not None:
            params["max_detections"] = str(max_detections)
        try:
            response = self._session.post(
                f"{self.base_url}/v1/detect",
                data=data,
                params=params,
                headers={"Content-Type": content_type_for(data)},
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            raise DetectError(f"cannot reach {self.base_url}: {error}") from None
        try:
            payload = response.json()
        except ValueError:
            raise DetectError(f"{self.base_url} answered {response.status_code} without JSON") from None
        if response.status_code != 200:
            raise DetectError(f"{self.base_url} answered {response.status_code}: {payload.get('error', payload)}")
        return dict(payload)

    def detect_file(
        self, path: Path, score_threshold: float | None = None, max_detections: int | None = None
    ) -> dict[str, Any]:
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DetectError(f"cannot read {path}: {error.strerror}") from None
        return self.detect_bytes(data, score_threshold, max_detections)
