"""Models as OCI artifacts in any OCI registry (the one a site already runs for its images).

An artifact follows ORAS' conventions, so ``oras pull`` gets the same files:

- config: :data:`ARTIFACT_TYPE` (what the artifact is), a small JSON document naming the model's
  digest (:meth:`ModelFiles.digest`);
- layer ``model``: the model directory as a gzipped tar (ORAS' directory layer, unpacked by
  ``oras pull``), files at ``model/<name>``;
- layer ``<name>.pbtxt`` (optional): TensorRT shape ranges collected for the model.

Pulls are by manifest digest and verified end to end: the manifest's and every blob's sha256, and
the unpacked model's own digest against the one the caller expects. A pulled model appears in the
cache whole (staged, then renamed) and is reused by the next pull of the same digest.

The client speaks the distribution API's push and pull with ``requests`` (bearer-token and basic
authentication from a Docker config file, a custom CA): oras-py, the ORAS Python SDK, verifies no
digest on download and would add jsonschema and rpds-py to every image.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from rtdetr_edge.errors import RtdetrEdgeError
from rtdetr_edge.files import digest_hex
from rtdetr_edge.model_files import ModelFiles

ARTIFACT_TYPE = "application/vnd.rtdetr-edge.model.v1+json"
MODEL_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SHAPE_RANGES_LAYER = "application/vnd.rtdetr-edge.shape-ranges.v1+pbtxt"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
MODEL_DIGEST_ANNOTATION = "io.rtdetr-edge.model.digest"
MODEL_TITLE = "model"
_REFERENCE = re.compile(r"^oci://(?P<registry>[^/\s]+)/(?P<repository>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
                        r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")  # fmt: skip
_CHUNK = 1 << 20


class RegistryError(RtdetrEdgeError):
    """A registry refused a push or pull, or served something other than what was asked for."""

    code = "registry"


@dataclass(frozen=True)
class Reference:
    """``oci://registry/repository[:tag][@sha256:…]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, uri: str) -> Reference:
        match = _REFERENCE.match(uri)
        if match is None:
            raise RegistryError(f"{uri!r} is not an OCI reference: oci://registry/repository[:tag][@sha256:<64 hex>]")
        return cls(match["registry"], match["repository"], match["tag"], match["digest"])

    def pinned(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def __str__(self) -> str:
        return (f"oci://{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))  # fmt: skip


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach a registry: credentials from a Docker config file (``~/.docker/config.json``,
    or a ``kubernetes.io/dockerconfigjson`` Secret's ``.dockerconfigjson``), a CA bundle for a
    registry with a private CA, and plain HTTP for a registry on loopback."""

    config_file: Path | None = None
    ca_file: Path | None = None
    plain_http: bool = False


@dataclass(frozen=True)
class PulledModel:
    model_dir: Path
    shape_ranges: Path | None
    manifest_digest: str


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _credentials(access: RegistryAccess, registry: str) -> tuple[str, str] | None:
    if access.config_file is None:
        return None
    try:
        auths = json.loads(access.config_file.read_text()).get("auths") or {}
    except (OSError, ValueError) as error:
        raise RegistryError(f"cannot read registry credentials from {access.config_file}: {error}") from None
    for key in (registry, f"https://{registry}", f"http://{registry}"):
        entry = auths.get(key)
        if entry is None:
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    return None


class RegistryClient:
    """The distribution API's push and pull for one repository."""

    def __init__(self, reference: Reference, access: RegistryAccess) -> None:
        self.reference = reference
        self.access = access
        self.base = f"{'http' if access.plain_http else 'https'}://{reference.registry}/v2/{reference.repository}"
        self.session = requests.Session()
        self.session.trust_env = False  # the CA and credentials are the ones given, not the environment's
        self.verify: bool | str = str(access.ca_file) if access.ca_file else True
        self._credentials = _credentials(access, reference.registry)
        self._authorization: str | None = None

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(2):
            if self._authorization:
                headers["Authorization"] = self._authorization
            try:
                response = self.session.request(method, url, headers=headers, verify=self.verify, timeout=(10, 300), **kwargs)
            except requests.RequestException as error:
                raise RegistryError(f"{method} {url}: {error}") from None
            if response.status_code != 401 or attempt:
                return response
            self._authorization = self._authorize(response.headers.get("WWW-Authenticate", ""))
        return response

    def _authorize(self, challenge: str) -> str:
        """Answer a 401: basic credentials, or a bearer token from the challenge's realm."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self._credentials is None:
                raise RegistryError(f"{self.reference.registry} asks for credentials; none given for it")
            return "Basic " + base64.b64encode(":".join(self._credentials).encode()).decode()
        if scheme.lower() != "bearer":
            raise RegistryError(f"{self.reference.registry}: unsupported authentication {challenge!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = {k: v for k, v in (("service", fields.get("service")), ("scope", fields.get("scope"))) if v}
        try:
            response = self.session.get(fields["realm"], params=query, auth=self._credentials, verify=self.verify, timeout=30)
        except (KeyError, requests.RequestException) as error:
            raise RegistryError(f"{self.reference.registry}: cannot get a token: {error}") from None
        if response.status_code != 200:
            raise RegistryError(f"{self.reference.registry}: token refused ({response.status_code}): check the credentials")
        token = response.json().get("token") or response.json().get("access_token")
        return f"Bearer {token}"

    @staticmethod
    def _refused(what: str, response: requests.Response) -> RegistryError:
        return RegistryError(f"{what}: {response.status_code} {response.text[:300].strip()}")

    # -- push ----------------------------------------------------------------------------------
    def push_blob(self, data: bytes, media_type: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        digest = _sha256(data)
        descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            descriptor["annotations"] = annotations
        if self._request("HEAD", f"{self.base}/blobs/{digest}").status_code == 200:
            return descriptor  # already there (another model with the same layer)
        started = self._request("POST", f"{self.base}/blobs/uploads/")
        if started.status_code != 202 or "Location" not in started.headers:
            raise self._refused(f"starting an upload to {self.reference}", started)
        location = requests.compat.urljoin(self.base, started.headers["Location"])
        separator = "&" if "?" in location else "?"
        done = self._request("PUT", f"{location}{separator}digest={digest}", data=data,
                             headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        if done.status_code != 201:
            raise self._refused(f"uploading {digest} to {self.reference}", done)
        return descriptor

    def push_manifest(self, manifest: dict[str, Any], tag: str | None) -> str:
        data = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest = _sha256(data)
        response = self._request("PUT", f"{self.base}/manifests/{tag or digest}", data=data, headers={"Content-Type": MANIFEST})
        if response.status_code != 201:
            raise self._refused(f"pushing the manifest to {self.reference}", response)
        served = response.headers.get("Docker-Content-Digest", digest)
        if served != digest:
            raise RegistryError(f"{self.reference.registry} stored the manifest as {served}, not {digest}")
        return digest

    # -- pull ----------------------------------------------------------------------------------
    def manifest(self, digest: str) -> dict[str, Any]:
        response = self._request("GET", f"{self.base}/manifests/{digest}", headers={"Accept": MANIFEST})
        if response.status_code != 200:
            raise self._refused(f"reading {self.reference.pinned(digest)}", response)
        if _sha256(response.content) != digest:
            raise RegistryError(f"{self.reference.registry} served a manifest whose digest is not {digest}")
        manifest = dict(response.json())
        if (manifest.get("config") or {}).get("mediaType") != ARTIFACT_TYPE:
            kind = (manifest.get("config") or {}).get("mediaType") or manifest.get("mediaType")
            raise RegistryError(f"{self.reference.pinned(digest)} is not an rtdetr-edge model ({kind}); push one with "
                                "`rtdetr-edge push MODEL_DIR oci://…`")  # fmt: skip
        return manifest

    def blob_to(self, descriptor: dict[str, Any], target: Path) -> None:
        digest, size = str(descriptor["digest"]), int(descriptor["size"])
        response = self._request("GET", f"{self.base}/blobs/{digest}", stream=True)
        if response.status_code != 200:
            raise self._refused(f"reading blob {digest} of {self.reference}", response)
        hasher, written = hashlib.sha256(), 0
        with target.open("wb") as stream:
            for chunk in response.iter_content(_CHUNK):
                hasher.update(chunk)
                written += len(chunk)
                stream.write(chunk)
        if "sha256:" + hasher.hexdigest() != digest or written != size:
            raise RegistryError(f"blob {digest} of {self.reference} arrived with another digest or size ({written} bytes)")


def model_archive(model_dir: Path) -> bytes:
    """The model directory's files as ORAS' directory layer, byte for byte the same for the same
    files (sorted, no times or owners): pushing a model twice pushes nothing new."""
    buffer = io.BytesIO()
    # Level 1: float weights hardly compress (R18: 80 -> 74 MB at level 1, 6 or 9); 1 is the fastest.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=1) as zipped, tarfile.open(fileobj=zipped, mode="w",
                                                                                    format=tarfile.PAX_FORMAT) as tar:  # fmt: skip
        directory = tarfile.TarInfo(MODEL_TITLE)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
            info = tarfile.TarInfo(f"{MODEL_TITLE}/{path.name}")
            info.size, info.mode = path.stat().st_size, 0o644
            with path.open("rb") as stream:
                tar.addfile(info, stream)
    return buffer.getvalue()


def push_model(model_dir: Path, reference: Reference, access: RegistryAccess, shape_ranges: Path | None = None) -> Reference:
    """Push ``model_dir`` (and its shape ranges) to ``reference`` (its tag, if any); the
    reference pinned to the manifest's digest, which is what pods pull."""
    model_digest = ModelFiles.locate(model_dir).digest()
    client = RegistryClient(reference, access)
    layers = [client.push_blob(model_archive(model_dir), MODEL_LAYER, {TITLE: MODEL_TITLE})]
    if shape_ranges is not None:
        layers.append(client.push_blob(shape_ranges.read_bytes(), SHAPE_RANGES_LAYER, {TITLE: shape_ranges.name}))
    config = json.dumps({"modelDigest": model_digest}, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": client.push_blob(config, ARTIFACT_TYPE),
        "layers": layers,
        "annotations": {MODEL_DIGEST_ANNOTATION: model_digest},
    }
    return reference.pinned(client.push_manifest(manifest, reference.tag))


def _unpack(archive: Path, target: Path) -> None:
    """Only regular files under ``model/``: a layer naming anything else is refused."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if member.isdir() and parts == (MODEL_TITLE,):
                continue
            if not member.isfile() or len(parts) != 2 or parts[0] != MODEL_TITLE or parts[1] in ("..", "."):
                raise RegistryError(f"the model layer holds {member.name!r}: only files under {MODEL_TITLE}/ are accepted")
            source = tar.extractfile(member)
            assert source is not None
            with source, (target / parts[1]).open("wb") as stream:
                shutil.copyfileobj(source, stream, _CHUNK)


def pull_model(reference: Reference, cache_root: Path, access: RegistryAccess, expected_digest: str | None = None) -> PulledModel:
    """The model at ``reference`` (pinned by digest) in ``cache_root/models/<digest>``: pulled and
    verified once, reused after. ``expected_digest``: the model files' digest it must have."""
    if reference.digest is None:
        raise RegistryError(f"{reference} names no digest: pull models by digest (oci://…@sha256:…)")
    final = cache_root / "models" / digest_hex(reference.digest)
    found: str | None = None  # the model's digest, read once
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        client = RegistryClient(reference, access)
        manifest = client.manifest(reference.digest)
        staging = Path(tempfile.mkdtemp(prefix=f".pull-{digest_hex(reference.digest)[:12]}-", dir=final.parent))
        try:
            (staging / MODEL_TITLE).mkdir()
            for layer in manifest.get("layers") or []:
                title = str((layer.get("annotations") or {}).get(TITLE, ""))
                if layer.get("mediaType") == MODEL_LAYER and title == MODEL_TITLE:
                    archive = staging / "model.tar.gz"
                    client.blob_to(layer, archive)
                    _unpack(archive, staging / MODEL_TITLE)
                    archive.unlink()
                elif layer.get("mediaType") == SHAPE_RANGES_LAYER and re.fullmatch(r"[\w.-]+\.pbtxt", title):
                    client.blob_to(layer, staging / title)
            announced = (manifest.get("annotations") or {}).get(MODEL_DIGEST_ANNOTATION)
            found = ModelFiles.locate(staging / MODEL_TITLE).digest()
            if found != announced:
                raise RegistryError(f"{reference}: the model unpacked with digest {found}, its manifest says {announced}")
            os.rename(staging, final)  # whole, or not at all (another pull of it may have won: same bytes)
        except OSError as error:
            if not final.is_dir():
                raise RegistryError(f"cannot store {reference} in {final.parent}: {error}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    model_dir = final / MODEL_TITLE
    if found is None:  # a cached copy (or one another pull stored): checked again
        found = ModelFiles.locate(model_dir).digest()
    if expected_digest and found != expected_digest:
        raise RegistryError(f"{reference} holds the model {found}, not the expected {expected_digest}")
    shapes = sorted(final.glob("*.pbtxt"))
    return PulledModel(model_dir, shapes[0] if shapes else None, reference.digest)
