"""Image decoding and the RT-DETR reader's preprocessing, bit-compatible with PaddleDetection.

PaddleDetection's RT-DETR reader (and its ``deploy/python`` predictor) does:
``Decode`` (cv2.imdecode, EXIF orientation applied, BGR→RGB) → ``Resize`` to
640×640, ``keep_ratio: False``, ``interp: 2`` (cubic) → ``NormalizeImage``
(``float32(x) * float32(1/255)``, mean 0, std 1) → ``Permute`` (HWC→CHW), and
feeds ``im_shape = [640, 640]`` and ``scale_factor = [640/h, 640/w]``.

We produce the same numbers faster: JPEGs are decoded by libjpeg-turbo through
``simplejpeg`` straight to RGB (pixel-identical to cv2's decode, but it rejects
truncated files that cv2 silently grey-fills), and the scale + transpose is three
contiguous multiplies of ``cv2.split`` planes. Image dimensions are read from the
header *before* decoding, so a tiny file claiming 20000×20000 pixels costs nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from rtdetr_edge.errors import InvalidImageError, PayloadTooLargeError

INPUT_SIZE = 640
_SCALE = np.float32(1.0 / 255.0)
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_SEARCH_BYTES = 65536  # APP1/Exif sits in the first segments of a JPEG

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" | "png"
    width: int
    height: int


@dataclass
class PreprocessedImage:
    """One image ready for the model, plus what post-processing needs to map boxes back."""

    image: np.ndarray  # [3, 640, 640] float32
    im_shape: np.ndarray  # [2] float32: (640, 640)
    scale_factor: np.ndarray  # [2] float32: (640/h, 640/w)
    height: int
    width: int


def read_image_header(data: bytes) -> ImageHeader:
    """Identify a JPEG or PNG and read its dimensions without decoding pixels."""
    if not data:
        raise InvalidImageError("empty request body: send a JPEG or PNG image")
    if data.startswith(_JPEG_MAGIC):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as error:
            raise InvalidImageError(f"unreadable JPEG header: {error}") from None
        return ImageHeader("jpeg", int(width), int(height))
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise InvalidImageError("PNG without an IHDR header")
        width = int.from_bytes(data[16:20], "big")
        height = int.from_bytes(data[20:24], "big")
        return ImageHeader("png", width, height)
    raise InvalidImageError(f"body is neither a JPEG nor a PNG image (starts with {data[:8]!r})")


def _jpeg_orientation(data: bytes) -> int:
    """EXIF orientation (1 = upright) of a JPEG; cv2.imdecode honours it, so must we."""
    if b"Exif\x00\x00" not in data[:_EXIF_SEARCH_BYTES]:
        return 1
    from PIL import Image  # only for the rare JPEG that carries EXIF

    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except (OSError, ValueError, SyntaxError):
        return 1


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """The transforms OpenCV's ``ApplyExifOrientation`` uses for EXIF orientations 2..8."""
    if orientation == 2:
        return cv2.flip(rgb, 1)
    if orientation == 3:
        return cv2.flip(rgb, -1)
    if orientation == 4:
        return cv2.flip(rgb, 0)
    if orientation in (5, 6, 7, 8):
        transposed = cv2.transpose(rgb)
        flip_code = {5: None, 6: 1, 7: -1, 8: 0}[orientation]
        return transposed if flip_code is None else cv2.flip(transposed, flip_code)
    return rgb


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG body to an RGB ``uint8 [H, W, 3]`` array, or raise a 4xx error."""
    header = read_image_header(data)
    if header.width <= 0 or header.height <= 0:
        raise InvalidImageError(f"{header.format.upper()} header declares {header.width}x{header.height} pixels")
    if header.width * header.height > max_pixels:
        raise PayloadTooLargeError(
            f"image is {header.width}x{header.height} = {header.width * header.height} pixels; "
            f"the limit is {max_pixels}"
        )
    if header.format == "jpeg":
        try:
            rgb = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as error:
            raise InvalidImageError(f"corrupt or truncated JPEG: {error}") from None
        orientation = _jpeg_orientation(data)
        return _apply_orientation(rgb, orientation) if orientation != 1 else rgb
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidImageError("corrupt or truncated PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def preprocess_rgb(rgb: np.ndarray, out: np.ndarray | None = None) -> PreprocessedImage:
    """Resize (cubic, no aspect keep) + scale to [0, 1] + CHW, into ``out`` if given."""
    height, width = rgb.shape[:2]
    resized = cv2.resize(rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_CUBIC)
    if out is None:
        out = np.empty((3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for channel, plane in enumerate(cv2.split(resized)):
        np.multiply(plane, _SCALE, out=out[channel])
    return PreprocessedImage(
        image=out,
        im_shape=np.array([INPUT_SIZE, INPUT_SIZE], dtype=np.float32),
        scale_factor=np.array([INPUT_SIZE / height, INPUT_SIZE / width], dtype=np.float32),
        height=height,
        width=width,
    )


def preprocess_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> PreprocessedImage:
    """Decode + preprocess one request body."""
    return preprocess_rgb(decode_image(data, max_pixels))


@dataclass
class ModelInputs:
    """A batch in the export's feed layout (names as PaddleDetection exports them)."""

    im_shape: np.ndarray  # [N, 2]
    image: np.ndarray  # [N, 3, 640, 640]
    scale_factor: np.ndarray  # [N, 2]

    @property
    def batch_size(self) -> int:
        return int(self.image.shape[0])

    def as_feed(self) -> dict[str, np.ndarray]:
        return {"im_shape": self.im_shape, "image": self.image, "scale_factor": self.scale_factor}


def stack_batch(images: list[PreprocessedImage]) -> ModelInputs:
    """Stack preprocessed images; a single image is passed through without a copy."""
    if len(images) == 1:
        only = images[0]
        return ModelInputs(only.im_shape[None], only.image[None], only.scale_factor[None])
    return ModelInputs(
        im_shape=np.stack([item.im_shape for item in images]),
        image=np.stack([item.image for item in images]),
        scale_factor=np.stack([item.scale_factor for item in images]),
    )


def synthetic_inputs(batch_size: int, original_size: tuple[int, int] = (480, 640), seed: int = 0) -> ModelInputs:
    """Deterministic inputs for warm-up, shape collection and self-tests."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(*original_size, 3), dtype=np.uint8)
    one = preprocess_rgb(rgb)
    return stack_batch([one] * batch_size)
