"""Storage URIs, and https:// downloads against a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rtdetr_edge.storage import InvalidUriError, StorageError, StorageResolver, find_model_dir, parse_uri


@pytest.mark.parametrize(
    ("uri", "scheme", "claim", "path"),
    [
        ("pvc://models/rtdetr_r50vd_6x_coco", "pvc", "models", "rtdetr_r50vd_6x_coco"),
        ("pvc://rtdetr-artifacts", "pvc", "rtdetr-artifacts", ""),
        ("file:///data/models/x", "file", "", "/data/models/x"),
        ("https://bj.bcebos.com/v1/paddle-slim-models/act/rtdetr_r50vd_6x_coco_quant.tar", "https", "",
         "https://bj.bcebos.com/v1/paddle-slim-models/act/rtdetr_r50vd_6x_coco_quant.tar"),
    ],
)  # fmt: skip
def test_parse(uri: str, scheme: str, claim: str, path: str) -> None:
    parsed = parse_uri(uri)
    assert (parsed.scheme, parsed.claim, parsed.path) == (scheme, claim, path)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://bucket/key", "'s3://'"),
        ("/just/a/path", "no scheme"),
        ("", "empty"),
        ("file://relative/path", "absolute path"),
        ("pvc:///no-claim", "name the claim"),
        ("pvc://claim/../../etc", "'..'"),
        ("https:///nohost", "need a host"),
    ],
)
def test_invalid_uris(uri: str, message: str) -> None:
    with pytest.raises(InvalidUriError, match=message):
        parse_uri(uri)


def test_local_paths(tmp_path: Path) -> None:
    resolver = StorageResolver(tmp_path / "pvc", tmp_path / "dl")
    assert resolver.local_path("pvc://models/a/b") == tmp_path / "pvc" / "models" / "a" / "b"
    assert resolver.local_path("file:///opt/x") == Path("/opt/x")


class Files:
    """Served content, and a switch to drop the connection half-way through once."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.range_requests = 0


@pytest.fixture
def http_server() -> Iterator[tuple[str, Files]]:
    files = Files()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = files.content.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if "Range" in self.headers:
                files.range_requests += 1
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if self.path in files.drop_once:
                files.drop_once.discard(self.path)
                self.wfile.write(body[start : start + len(body) // 3])
                self.wfile.flush()
                self.connection.close()
                return
            self.wfile.write(body[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()


def model_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        params = np.random.default_rng(0).bytes(300000)  # incompressible, like real weights
        for name, data in (("rtdetr_quant/model.pdmodel", b"program" * 1000), ("rtdetr_quant/model.pdiparams", params)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class PlainHttpResolver(StorageResolver):
    """Tests serve plain HTTP on loopback; the product only accepts https:// URIs."""

    def download(self, url: str, sha256: str = "") -> Path:
        return super().download(url.replace("https://", "http://", 1), sha256)


def test_download_verifies_and_unpacks(tmp_path: Path, http_server: tuple[str, Files]) -> None:
    base, files = http_server
    tarball = model_tarball()
    files.content["/act/rtdetr_quant.tar.gz"] = tarball
    resolver = PlainHttpResolver(tmp_path / "pvc", tmp_path / "dl")
    url = base.replace("http://", "https://") + "/act/rtdetr_quant.tar.gz"
    digest = hashlib.sha256(tarball).hexdigest()
    root = resolver.local_path(url, digest)
    model_dir = find_model_dir(root)
    assert (model_dir / "model.pdiparams").read_bytes() == np.random.default_rng(0).bytes(300000)
    assert resolver.local_path(url, digest) == root, "a second call reuses the download"


def test_wrong_sha256_is_refused(tmp_path: Path, http_server: tuple[str, Files]) -> None:
    base, files = http_server
    files.content["/m.tar.gz"] = model_tarball()
    resolver = PlainHttpResolver(tmp_path / "pvc", tmp_path / "dl")
    with pytest.raises(StorageError, match="sha256 mismatch.*refusing"):
        resolver.local_path(base.replace("http://", "https://") + "/m.tar.gz", "0" * 64)
    assert not [p for p in (tmp_path / "dl").iterdir() if not p.name.startswith(".")], "nothing usable left behind"


def test_dropped_connection_resumes(tmp_path: Path, http_server: tuple[str, Files]) -> None:
    base, files = http_server
    tarball = model_tarball()
    files.content["/big.tar.gz"] = tarball
    files.drop_once.add("/big.tar.gz")
    resolver = PlainHttpResolver(tmp_path / "pvc", tmp_path / "dl")
    root = resolver.local_path(base.replace("http://", "https://") + "/big.tar.gz", hashlib.sha256(tarball).hexdigest())
    assert files.range_requests == 1, "the second attempt must resume, not restart"
    assert (find_model_dir(root) / "model.pdmodel").is_file()


def test_not_found(tmp_path: Path, http_server: tuple[str, Files]) -> None:
    base, _ = http_server
    resolver = PlainHttpResolver(tmp_path / "pvc", tmp_path / "dl")
    with pytest.raises(StorageError, match="not found \\(HTTP 404\\)"):
        resolver.local_path(base.replace("http://", "https://") + "/missing.tar")


def test_archive_escaping_its_folder_is_refused(tmp_path: Path, http_server: tuple[str, Files]) -> None:
    base, files = http_server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    files.content["/evil.tgz"] = buffer.getvalue()
    resolver = PlainHttpResolver(tmp_path / "pvc", tmp_path / "dl")
    with pytest.raises(StorageError, match="outside the target"):
        resolver.local_path(base.replace("http://", "https://") + "/evil.tgz")
    assert not (tmp_path / "evil.txt").exists()


def test_find_model_dir(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no model.pdmodel"):
        find_model_dir(tmp_path)
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "model.pdmodel").write_bytes(b"")
    assert find_model_dir(tmp_path) == tmp_path / "top"
