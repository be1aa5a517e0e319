"""Model and dataset locations: ``file://``, ``pvc://claim/path`` and ``https://`` (KServe's conventions),
and for models ``oci://registry/repository@sha256:…`` (an artifact ``rtdetr-edge push`` made).

``pvc://claim/path`` resolves under a mount root (in a pod, the operator mounts each
claim at ``<root>/<claim>``; ``rtdetr-edge run`` maps it under a local directory).
``https://`` downloads stream to a temporary name with retries and resume, are
checked against ``sha256`` when given, and ``.tar``/``.tar.gz``/``.tgz`` archives (as
PaddleSlim publishes its models) are unpacked; only a complete, verified result is
renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import requests

from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.files import file_sha256
from rtdetr_edge.oci import Reference, RegistryAccess, RegistryError, pull_model

log = logging.getLogger(__name__)

SCHEMES = ("file", "pvc", "https", "oci")
DOWNLOAD_ATTEMPTS = 4
CHUNK_BYTES = 1 << 16  # what a dropped connection can lose; resumed downloads start after it


class StorageError(RtdetrEdgeError):
    code = "storage_error"


class InvalidUriError(StorageError):
    http_status = 400
    code = "invalid_uri"


@dataclass(frozen=True)
class StorageUri:
    scheme: str
    claim: str  # pvc only
    path: str  # file: absolute path; pvc: path inside the claim; https: the full URL
    raw: str


def parse_uri(uri: str) -> StorageUri:
    """Parse and validate a storage URI (pure). Unknown schemes are an error, not a crash."""
    if not isinstance(uri, str) or not uri:
        raise InvalidUriError("storage URI is empty")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"'{parts.scheme}://'" if parts.scheme else "no scheme"
        raise InvalidUriError(f"{uri!r} has {shown}; use file:///abs/path, pvc://claim/path, https://… or oci://…@sha256:…")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidUriError(f"{uri!r}: file URIs need an absolute path (file:///data/model)")
        return StorageUri("file", "", parts.path, uri)
    if scheme == "pvc":
        claim = parts.netloc
        if not claim:
            raise InvalidUriError(f"{uri!r}: pvc URIs name the claim first (pvc://claim/path)")
        inner = PurePosixPath(parts.path.lstrip("/"))
        if ".." in inner.parts:
            raise InvalidUriError(f"{uri!r}: '..' is not allowed in a pvc path")
        return StorageUri("pvc", claim, str(inner) if str(inner) != "." else "", uri)
    if scheme == "oci":
        try:
            reference = Reference.parse(uri)
        except RegistryError as error:
            raise InvalidUriError(str(error)) from None
        if reference.digest is None:
            raise InvalidUriError(f"{uri!r}: name an OCI model by digest (oci://…@sha256:…, as `rtdetr-edge push` prints it)")
        return StorageUri("oci", "", uri, uri)
    if not parts.netloc:
        raise InvalidUriError(f"{uri!r}: https URIs need a host")
    return StorageUri("https", "", uri, uri)


def _archive_kind(url: str) -> str | None:
    name = PurePosixPath(urlsplit(url).path).name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "r:gz"
    if name.endswith(".tar"):
        return "r:"
    return None


def _safe_extract(archive: Path, mode: str, dest: Path) -> None:
    with tarfile.open(archive, mode) as tar:  # type: ignore[call-overload]
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not str(target).startswith(str(dest.resolve()) + os.sep) and target != dest.resolve():
                raise StorageError(f"{archive.name}: member {member.name!r} would extract outside the target")
            if member.issym() or member.islnk():
                raise StorageError(f"{archive.name}: links are not allowed in model archives ({member.name})")
        tar.extractall(dest, filter="data")


class StorageResolver:
    """Turns URIs into local paths (the I/O adapter)."""

    def __init__(self, pvc_root: Path, download_dir: Path, session: requests.Session | None = None,
                 registry: RegistryAccess | None = None) -> None:  # fmt: skip
        self.pvc_root = pvc_root
        self.download_dir = download_dir
        self.session = session or requests.Session()
        self.registry = registry or RegistryAccess()

    def local_path(self, uri: str, sha256: str = "") -> Path:
        parsed = parse_uri(uri)
        if parsed.scheme == "file":
            return Path(parsed.path)
        if parsed.scheme == "pvc":
            return self.pvc_root / parsed.claim / parsed.path
        if parsed.scheme == "oci":  # pulled by digest and verified, once
            return pull_model(Reference.parse(parsed.raw), self.download_dir, self.registry).model_dir
        return self.download(parsed.raw, sha256)

    def download(self, url: str, sha256: str = "") -> Path:
        """Download (and unpack) ``url`` once; later calls with the same URL and digest reuse it."""
        key = hashlib.sha256(f"{url}\n{sha256}".encode()).hexdigest()[:24]
        final = self.download_dir / key
        if final.exists():
            return final
        self.download_dir.mkdir(parents=True, exist_ok=True)
        name = PurePosixPath(urlsplit(url).path).name or "download"
        partial = self.download_dir / f".{key}.part"
        self._fetch(url, partial)
        if sha256:
            actual = file_sha256(partial)
            if actual != sha256.lower().removeprefix("sha256:"):
                partial.unlink(missing_ok=True)
                raise StorageError(f"{url}: sha256 mismatch (expected {sha256}, got {actual}); refusing to use it")
        staging = self.download_dir / f".{key}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        kind = _archive_kind(url)
        try:
            if kind is not None:
                _safe_extract(partial, kind, staging)
            else:
                shutil.copyfile(partial, staging / name)
        except (tarfile.TarError, OSError, EOFError) as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageError(f"{url}: cannot unpack ({error})") from None
        os.replace(staging, final)
        partial.unlink(missing_ok=True)
        log.info("downloaded %s to %s", url, final)
        return final

    def _fetch(self, url: str, partial: Path) -> None:
        """Stream to ``partial``, resuming with a Range request after a dropped connection."""
        last_error = ""
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            have = partial.stat().st_size if partial.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self.session.get(url, stream=True, timeout=(10, 60), headers=headers) as response:
                    if response.status_code == 404:
                        raise StorageError(f"{url}: not found (HTTP 404)")
                    if response.status_code == 416:  # already complete
                        return
                    if response.status_code not in (200, 206):
                        raise StorageError(f"{url}: HTTP {response.status_code}")
                    resumed = response.status_code == 206
                    if have and not resumed:
                        log.info("%s: server ignored the Range request; restarting the download", url)
                    expected = response.headers.get("Content-Length")
                    with partial.open("ab" if resumed else "wb") as stream:
                        for chunk in response.iter_content(CHUNK_BYTES):
                            stream.write(chunk)
                    if expected is not None and partial.stat().st_size != (have if resumed else 0) + int(expected):
                        raise requests.ConnectionError("connection closed before the end of the body")
                    return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
                last_error = str(error)
                log.warning("download of %s interrupted (attempt %d/%d): %s", url, attempt, DOWNLOAD_ATTEMPTS, error)
                time.sleep(min(2.0**attempt / 4, 5.0))
        raise StorageError(f"{url}: download failed after {DOWNLOAD_ATTEMPTS} attempts ({last_error})")


def find_model_dir(root: Path) -> Path:
    """``root`` or the single directory below it that holds ``*.pdmodel`` (archives add a top folder)."""
    if any(root.glob("*.pdmodel")):
        return root
    candidates = sorted({p.parent for p in root.glob("*/*.pdmodel")})
    if len(candidates) == 1:
        return candidates[0]
    raise StorageError(f"no model.pdmodel in {root} or one directory below it")
