from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rtdetr_edge.device_identity import DeviceIdentity
from rtdetr_edge.engine_cache import EngineCache, EngineKey, engine_cache_key

BASE_KEY = EngineKey(
    model_digest="sha256:" + "a" * 64,
    shape_file_digest="sha256:" + "b" * 64,
    backend="paddle",
    device="gpu",
    precision="int8",
    max_batch_size=4,
    device_identity=DeviceIdentity("gpu", "Tesla T4", "7.5"),
    versions=(("paddle", "2.6.2+abc"), ("tensorrt_runtime", "8.5.3")),
)


@pytest.mark.parametrize(
    "change",
    [
        {"model_digest": "sha256:" + "c" * 64},  # re-quantized weights, same graph
        {"shape_file_digest": "sha256:" + "d" * 64},
        {"backend": "onnxruntime"},
        {"device": "cpu"},
        {"precision": "fp16"},
        {"max_batch_size": 8},
        {"device_identity": DeviceIdentity("gpu", "NVIDIA A10", "8.6")},
        {"device_identity": DeviceIdentity("gpu", "Tesla T4", "8.6")},
        {"versions": (("paddle", "2.6.2+abc"), ("tensorrt_runtime", "8.6.1")),},
    ],
)
def test_every_field_changes_the_key(change: dict[str, object]) -> None:
    assert engine_cache_key(dataclasses.replace(BASE_KEY, **change)) != engine_cache_key(BASE_KEY)


def test_key_is_stable_and_readable() -> None:
    name = engine_cache_key(BASE_KEY)
    assert name == engine_cache_key(dataclasses.replace(BASE_KEY))
    assert name.startswith("paddle-gpu-int8-b4-")


def publish(cache: EngineCache, payload: bytes = b"engine-bytes") -> str:
    name = engine_cache_key(BASE_KEY)
    with cache.lock(name):
        staging = cache.new_staging_dir(name)
        (staging / "_opt_cache").mkdir()
        (staging / "_opt_cache" / "trt_serialized_123").write_bytes(payload)
        cache.publish(staging, name, BASE_KEY, {"build_seconds": 1.0})
    return name


def test_publish_then_load(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    name = publish(cache)
    entry, reason = cache.load_entry(name)
    assert entry is not None and reason is None
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["key_inputs"]["device_identity"]["product"] == "Tesla T4"
    assert list(manifest["files"]) == ["_opt_cache/trt_serialized_123"]
    assert not list(cache.engines_dir.glob(".staging-*")), "staging dir must be renamed away"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable"),
        (lambda p: (p / "_opt_cache" / "trt_serialized_123").write_bytes(b"engine-bytez"), "wrong sha256"),
        (lambda p: (p / "_opt_cache" / "trt_serialized_123").write_bytes(b"short"), "wrong size"),
        (lambda p: (p / "_opt_cache" / "trt_serialized_123").unlink(), "is missing"),
    ],
)
def test_corrupt_entries_are_discarded(tmp_path: Path, damage, reason: str) -> None:  # type: ignore[no-untyped-def]
    cache = EngineCache(tmp_path)
    name = publish(cache)
    damage(cache.entry_path(name))
    entry, found_reason = cache.load_entry(name)
    assert entry is None and found_reason is not None and reason in found_reason
    assert not cache.entry_path(name).exists(), "a corrupt entry must be removed so it can be rebuilt"
    assert cache.load_entry(name) == (None, None)


def test_interrupted_build_is_cleaned_by_the_next_builder(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    name = engine_cache_key(BASE_KEY)
    leftover = cache.engines_dir / f".staging-{name}-999-0"
    leftover.mkdir()
    (leftover / "half-written").write_bytes(b"x")
    assert cache.load_entry(name) == (None, None), "a staging dir is never loaded"
    with cache.lock(name):
        cache.new_staging_dir(name)
    assert not leftover.exists()


def test_shape_file_path_is_per_model_and_batch(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    a = cache.shape_file("sha256:" + "a" * 64, 4)
    assert a != cache.shape_file("sha256:" + "b" * 64, 4)
    assert a != cache.shape_file("sha256:" + "a" * 64, 8)
