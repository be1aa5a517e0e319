"""The on-node engine cache: shape-range files and built engines, keyed by content.

Layout under the cache root (a hostPath, PVC or emptyDir in Kubernetes)::

    shapes/<model-digest-hex>-b<max-batch>.pbtxt      collected shape ranges
    engines/<key>/manifest.json                        a complete, verified entry
    engines/<key>/...                                  backend files (TRT engines, model.onnx)
    engines/.staging-<key>-<pid>-<n>/                  a build in progress (never loaded)
    locks/<name>.lock                                  one builder per key per node

An entry is published by renaming a finished staging directory, so a reader sees
either nothing or a complete entry. A manifest lists every file with its sha256;
an entry that fails verification is discarded and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from filelock import FileLock

from rtdetr_edge.device_identity import DeviceIdentity
from rtdetr_edge.files import digest_hex, file_sha256

ENTRY_FORMAT = 1
MANIFEST_NAME = "manifest.json"
LOCK_TIMEOUT_SECONDS = 3600.0  # a TensorRT build of a large model can take many minutes
log = logging.getLogger(__name__)
_staging_counter = count()


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes a built engine valid or invalid."""

    model_digest: str
    shape_file_digest: str
    backend: str
    device: str
    precision: str
    max_batch_size: int
    device_identity: DeviceIdentity
    versions: tuple[tuple[str, str], ...] = field(default=())
    variant: str = ""
    """Anything else that changes the built predictor (e.g. the CPU INT8 kernel choice)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "format": ENTRY_FORMAT,
            "model_digest": self.model_digest,
            "shape_file_digest": self.shape_file_digest,
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "max_batch_size": self.max_batch_size,
            "device_identity": self.device_identity.to_dict(),
            "versions": dict(self.versions),
            "variant": self.variant,
        }


def engine_cache_key(key: EngineKey) -> str:
    """A directory name for ``key``: readable prefix + hash of every field."""
    canonical = json.dumps(key.to_dict(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:24]
    return f"{key.backend}-{key.device}-{key.precision}-b{key.max_batch_size}-{digest}"


@dataclass(frozen=True)
class EngineEntry:
    key_name: str
    path: Path
    manifest: dict[str, object]


def shape_file_name(model_digest: str, max_batch_size: int) -> str:
    """The shape-range file of a model for batch 1..``max_batch_size`` (in the cache, and in the
    quantize Job's artifacts)."""
    return f"{digest_hex(model_digest)}-b{max_batch_size}.pbtxt"


class EngineCache:
    """Filesystem adapter for the cache layout above."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.shapes_dir = self.root / "shapes"
        self.engines_dir = self.root / "engines"
        self.locks_dir = self.root / "locks"
        for directory in (self.shapes_dir, self.engines_dir, self.locks_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def shape_file(self, model_digest: str, max_batch_size: int) -> Path:
        return self.shapes_dir / shape_file_name(model_digest, max_batch_size)

    def lock(self, name: str) -> FileLock:
        """A cross-process lock; holding it for ``name`` means "I am the only builder"."""
        return FileLock(str(self.locks_dir / f"{name}.lock"), timeout=LOCK_TIMEOUT_SECONDS)

    def entry_path(self, key_name: str) -> Path:
        return self.engines_dir / key_name

    def load_entry(self, key_name: str) -> tuple[EngineEntry | None, str | None]:
        """The verified entry, or ``(None, reason)``; a corrupt entry is removed.

        ``reason`` is ``None`` when the entry simply does not exist.
        """
        path = self.entry_path(key_name)
        if not path.exists():
            return None, None
        problem = self._verify(path, key_name)
        if problem is None:
            manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
            return EngineEntry(key_name, path, manifest), None
        log.warning("discarding corrupt engine cache entry %s: %s", path, problem)
        self._discard(path)
        return None, problem

    def _verify(self, path: Path, key_name: str) -> str | None:
        try:
            manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "manifest.json is missing"
        except (OSError, ValueError) as error:
            return f"manifest.json is unreadable ({error})"
        if not isinstance(manifest, dict) or manifest.get("key") != key_name:
            return "manifest.json belongs to another key"
        files = manifest.get("files")
        if not isinstance(files, dict):
            return "manifest.json lists no files"
        for relative, expected in files.items():
            file = path / relative
            if not file.is_file():
                return f"{relative} is missing"
            if not isinstance(expected, dict) or file.stat().st_size != expected.get("size"):
                return f"{relative} has the wrong size"
            if file_sha256(file) != expected.get("sha256"):
                return f"{relative} has the wrong sha256"
        return None

    def _discard(self, path: Path) -> None:
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{next(_staging_counter)}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def new_staging_dir(self, key_name: str) -> Path:
        """A fresh private directory to build ``key_name`` in. Call with the key's lock held."""
        for stale in self.engines_dir.glob(f".staging-{key_name}-*"):
            # Only the lock holder builds this key, so any staging dir is a killed build.
            log.info("removing an interrupted build %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        staging = self.engines_dir / f".staging-{key_name}-{os.getpid()}-{next(_staging_counter)}"
        staging.mkdir(parents=True)
        return staging

    def publish(self, staging: Path, key_name: str, key: EngineKey, extra: dict[str, object]) -> EngineEntry:
        """Write the manifest (hashing every file) and atomically rename into place."""
        files = {}
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            relative = file.relative_to(staging).as_posix()
            files[relative] = {"size": file.stat().st_size, "sha256": file_sha256(file)}
        manifest: dict[str, object] = {
            "key": key_name,
            "key_inputs": key.to_dict(),
            "files": files,
            "created_unix": time.time(),
            **extra,
        }
        manifest_file = staging / MANIFEST_NAME
        with manifest_file.open("w", encoding="utf-8") as stream:
            json.dump(manifest, stream, indent=2, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        final = self.entry_path(key_name)
        if final.exists():  # only after a corrupt entry was found but not removable
            self._discard(final)
        os.replace(staging, final)
        return EngineEntry(key_name, final, manifest)

    def entries(self) -> list[Path]:
        return sorted(p for p in self.engines_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
