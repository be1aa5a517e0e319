"""Small file and digest helpers shared by the runtime and the operator (stdlib only: the
operator image imports this through rtdetr_edge.resource)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def digest_hex(digest: str, length: int | None = None) -> str:
    """The hex part of ``sha256:<hex>`` (or of bare hex), optionally cut to ``length``."""
    hex_part = digest.split(":", 1)[-1]
    return hex_part if length is None else hex_part[:length]


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old content or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text)
    os.replace(staging, path)
