"""Domain errors. Each names the HTTP status it maps to; the server maps them in one place.

CLIs print ``str(error)`` as the one-line cause and exit non-zero.
"""

from __future__ import annotations


class RtdetrEdgeError(Exception):
    """Base class. ``http_status`` is used when the error reaches an HTTP client."""

    http_status = 500
    code = "internal_error"

    def response_headers(self) -> dict[str, str]:
        """HTTP headers the error's response carries (none unless a subclass says)."""
        return {}


class BadRequestError(RtdetrEdgeError):
    http_status = 400
    code = "bad_request"


class InvalidImageError(BadRequestError):
    """The body is not a decodable JPEG/PNG (empty, truncated, wrong type)."""

    code = "invalid_image"


class UnsupportedMediaTypeError(RtdetrEdgeError):
    http_status = 415
    code = "unsupported_media_type"


class PayloadTooLargeError(RtdetrEdgeError):
    """Body bytes or decoded pixels above the configured limits."""

    http_status = 413
    code = "payload_too_large"


class UnauthorizedError(RtdetrEdgeError):
    """Bearer-token authentication is on and the request carries no token, or one not allowed."""

    http_status = 401
    code = "unauthorized"

    def response_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="rtdetr-edge"'}


class NotFoundError(RtdetrEdgeError):
    http_status = 404
    code = "not_found"


class NotReadyError(RtdetrEdgeError):
    """The model is still warming up (or failed to)."""

    http_status = 503
    code = "not_ready"


class OverloadedError(RtdetrEdgeError):
    """Load shedding: the request would wait in the queue longer than the server's budget
    (``--max-queue-millis``), so it is refused at once; the client may retry after
    ``retry_after_seconds`` (the ``Retry-After`` header), on this pod or another."""

    http_status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class InferenceError(RtdetrEdgeError):
    """The predictor failed on a well-formed request."""

    http_status = 500
    code = "inference_failed"


class ModelNotFoundError(RtdetrEdgeError):
    """The model directory lacks the expected files."""

    code = "model_not_found"


class UnsupportedSettingsError(RtdetrEdgeError):
    """A predictor setting this build/device cannot honour (e.g. fp16 on CPU)."""

    code = "unsupported_settings"


class WarmupError(RtdetrEdgeError):
    """Shape collection, engine build or the self-test failed."""

    code = "warmup_failed"


class CpuIsaMismatchError(WarmupError):
    """This CPU computes an INT8 model's numbers differently from the CPU its accuracy gate ran on."""

    code = "cpu_isa_mismatch"


class ModelFileError(RtdetrEdgeError):
    """The served-model file (the operator's ConfigMap) is unreadable, or names a model whose
    files have another digest."""

    code = "model_file"
