"""Preprocessing parity with PaddleDetection's RT-DETR reader, and input validation."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rtdetr_edge.errors import InvalidImageError, PayloadTooLargeError
from rtdetr_edge.preprocess import (
    INPUT_SIZE,
    decode_image,
    preprocess_bytes,
    read_image_header,
    stack_batch,
)


def reference_reader(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A straightforward transcription of the reader: Decode, Resize(keep_ratio=False,
    interp=2) with fx/fy as PaddleDetection calls cv2.resize, NormalizeImage, Permute."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width = rgb.shape[:2]
    scale_y, scale_x = INPUT_SIZE / height, INPUT_SIZE / width
    resized = cv2.resize(rgb, None, None, fx=scale_x, fy=scale_y, interpolation=2)
    image = resized.astype(np.float32)
    image *= 1.0 / 255.0
    image -= np.array([0.0, 0.0, 0.0])[None, None, :].astype(np.float32)
    image /= np.array([1.0, 1.0, 1.0])[None, None, :].astype(np.float32)
    chw = image.transpose((2, 0, 1))
    im_shape = np.array(resized.shape[:2], dtype=np.float32)
    scale_factor = np.array([scale_y, scale_x], dtype=np.float32)
    return chw, im_shape, scale_factor


def test_parity_with_reader_on_fixture_images(fixture_images: list[Path]) -> None:
    for path in fixture_images:
        data = path.read_bytes()
        expected_image, expected_shape, expected_scale = reference_reader(data)
        ours = preprocess_bytes(data)
        assert ours.image.shape == (3, INPUT_SIZE, INPUT_SIZE) and ours.image.dtype == np.float32
        assert np.abs(ours.image - expected_image).max() <= 1e-6, path.name
        np.testing.assert_array_equal(ours.im_shape, expected_shape)
        np.testing.assert_allclose(ours.scale_factor, expected_scale, rtol=0, atol=1e-7)
        assert (ours.height, ours.width) == cv2.imdecode(np.frombuffer(data, np.uint8), 1).shape[:2]


def test_png_parity(fixture_images: list[Path]) -> None:
    rgb = cv2.cvtColor(cv2.imread(str(fixture_images[0])), cv2.COLOR_BGR2RGB)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    expected, _, _ = reference_reader(png.tobytes())
    assert np.abs(preprocess_bytes(png.tobytes()).image - expected).max() <= 1e-6


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_cv2(fixture_images: list[Path], orientation: int) -> None:
    """PaddleDetection decodes with cv2.imdecode, which applies EXIF orientation."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    with Image.open(fixture_images[1]) as source:
        source.save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    data = buffer.getvalue()
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decode_image(data), expected)


def test_header_is_read_without_decoding(fixture_images: list[Path]) -> None:
    header = read_image_header(fixture_images[0].read_bytes())
    assert (header.format, header.width, header.height) == ("jpeg", 640, 404)


def png_header_only(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


def test_huge_declared_dimensions_are_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError, match="20000x20000"):
        decode_image(png_header_only(20000, 20000), max_pixels=40_000_000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text", "neither a JPEG nor a PNG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "IHDR"),
        (png_header_only(64, 64), "corrupt or truncated PNG"),
        (png_header_only(0, 64), "0x64"),
    ],
)
def test_bad_bodies_raise_invalid_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_rejected_not_grey_filled(fixture_images: list[Path]) -> None:
    data = fixture_images[0].read_bytes()
    # cv2 would return a half-grey image here; we must refuse it.
    assert cv2.imdecode(np.frombuffer(data[: len(data) // 2], np.uint8), 1) is not None
    with pytest.raises(InvalidImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_stack_batch_shapes(fixture_images: list[Path]) -> None:
    images = [preprocess_bytes(p.read_bytes()) for p in fixture_images]
    batch = stack_batch(images)
    assert batch.image.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    assert batch.im_shape.shape == (3, 2) and batch.scale_factor.shape == (3, 2)
    single = stack_batch(images[:1])
    assert single.image.shape == (1, 3, INPUT_SIZE, INPUT_SIZE)
    assert np.shares_memory(single.image, images[0].image), "batch of one must not copy"
