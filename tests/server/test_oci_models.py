"""Models as OCI artifacts in a real registry (distribution's, as the images tier runs it):
`rtdetr-edge push` and `pull`, verified by digest, and a server that pulls the model a served-
model file names by oci:// reference, at start and for an in-place swap."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from rtdetr_edge.api.served import ServedModel
from rtdetr_edge.dev.ports import free_port
from rtdetr_edge.model_files import ModelFiles
from rtdetr_edge.oci import (
    ARTIFACT_TYPE,
    MODEL_DIGEST_ANNOTATION,
    MODEL_LAYER,
    Reference,
    RegistryAccess,
    RegistryClient,
    RegistryError,
    model_archive,
    pull_model,
    push_model,
)
from tests.cluster.build import binary
from tests.cluster.images import Registry, registry, wait_until
from tests.cluster.pki import CertificateAuthority, KeyPair

from ..conftest import start_server
from .test_model_swap import index, wait_for, write_served_model

LOCAL = RegistryAccess(plain_http=True)


@pytest.fixture(scope="module")
def models_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtdetr_edge.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def test_push_then_pull_by_digest_gives_the_same_model_verified(models_registry: Registry, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    shapes = tmp_path / "abc-b4.pbtxt"
    shapes.write_text("shape ranges\n")
    pushed = cli("push", "--model", str(tiny_model_dir), "--shape-ranges", str(shapes), "--registry-plain-http",
                 f"oci://{models_registry.host}/models/tiny:v1")  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    pinned = Reference.parse(pushed.stdout.strip())
    assert pinned.digest and pinned.repository == "models/tiny" and pinned.tag is None
    again = push_model(tiny_model_dir, Reference.parse(f"oci://{models_registry.host}/models/tiny:v1"), LOCAL, shapes)
    assert again == pinned, "the same files push the same artifact"

    manifest = RegistryClient(pinned, LOCAL).manifest(pinned.digest)
    assert manifest["artifactType"] == ARTIFACT_TYPE and manifest["config"]["mediaType"] == ARTIFACT_TYPE
    assert manifest["annotations"][MODEL_DIGEST_ANNOTATION] == ModelFiles.locate(tiny_model_dir).digest()
    assert manifest["layers"][0]["mediaType"] == MODEL_LAYER  # ORAS' directory layer: `oras pull` unpacks it

    pulled = cli("pull", "--cache-dir", str(tmp_path / "cache"), "--registry-plain-http",
                 "--expected-digest", ModelFiles.locate(tiny_model_dir).digest(), str(pinned))  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    where = json.loads(pulled.stdout)
    model_dir = Path(where["modelDir"])
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir() if p.is_file())
    assert all((model_dir / p.name).read_bytes() == p.read_bytes() for p in tiny_model_dir.iterdir() if p.is_file())
    assert Path(where["shapeRanges"]).read_text() == "shape ranges\n"
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if p.name.startswith(".")], "no staging left"


def test_pulls_refuse_what_is_not_the_model_asked_for(models_registry: Registry, tiny_model_dir: Path,
                                                      other_model_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    base = Reference.parse(f"oci://{models_registry.host}/models/checks")
    pinned = push_model(tiny_model_dir, base, LOCAL)
    other = ModelFiles.locate(other_model_dir).digest()
    with pytest.raises(RegistryError, match=f"not the expected {other}"):
        pull_model(pinned, tmp_path / "a", LOCAL, expected_digest=other)
    with pytest.raises(RegistryError, match="names no digest"):
        pull_model(Reference.parse(f"oci://{models_registry.host}/models/checks:latest"), tmp_path / "b", LOCAL)

    # A manifest whose model layer holds other files than its annotation names: refused, nothing kept.
    client = RegistryClient(base, LOCAL)
    lying = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": ARTIFACT_TYPE,
             "config": client.push_blob(b"{}", ARTIFACT_TYPE),
             "layers": [client.push_blob(model_archive(other_model_dir), MODEL_LAYER, {"org.opencontainers.image.title": "model"})],
             "annotations": {MODEL_DIGEST_ANNOTATION: ModelFiles.locate(tiny_model_dir).digest()}}  # fmt: skip
    with pytest.raises(RegistryError, match="unpacked with digest"):
        pull_model(base.pinned(client.push_manifest(lying, None)), tmp_path / "c", LOCAL)
    assert not list((tmp_path / "c" / "models").iterdir()), "nothing half-written"

    image = {**lying, "artifactType": None, "config": {**lying["config"], "mediaType": "application/vnd.oci.image.config.v1+json"}}
    with pytest.raises(RegistryError, match="is not an rtdetr-edge model"):
        pull_model(base.pinned(client.push_manifest({k: v for k, v in image.items() if v is not None}, None)), tmp_path / "d", LOCAL)
    missing = cli("pull", "--cache-dir", str(tmp_path / "e"), "--registry-plain-http", f"{base}@sha256:{'0' * 64}")
    assert missing.returncode == 1 and "404" in missing.stderr.strip().splitlines()[-1]


def test_a_server_pulls_its_model_and_swaps_to_another_by_oci_reference(models_registry: Registry, tiny_model_dir: Path,
                                                                           other_model_dir: Path, tmp_path: Path,
                                                                           fixture_images: list[Path]) -> None:  # fmt: skip
    base = Reference.parse(f"oci://{models_registry.host}/models/served")
    first, second = push_model(tiny_model_dir, base, LOCAL), push_model(other_model_dir, base, LOCAL)
    old, new = ModelFiles.locate(tiny_model_dir).digest(), ModelFiles.locate(other_model_dir).digest()

    def name(reference: Reference, digest: str) -> None:
        write_served_model(tmp_path / "model.json", ServedModel(oci=str(reference), digest=digest, pipeline_digest="sha256:" + "0" * 64))

    name(first, old)
    server = start_server(None, tmp_path / "cache", tmp_path, "--model-config", str(tmp_path / "model.json"), "--registry-plain-http")
    try:
        server.wait_ready()
        detect = lambda: requests.post(f"{server.url}/v1/detect", data=fixture_images[0].read_bytes(),  # noqa: E731
                                       headers={"Content-Type": "image/jpeg"}, timeout=30).json()["digest"]  # fmt: skip
        assert detect() == old
        name(second, new)
        wait_for(lambda: index(server.url)[0]["version"] == new, what=f"the pulled model serving\n{server.log()}")
        assert detect() == new
        assert (tmp_path / "cache" / "models" / second.digest.split(":")[1] / "model").is_dir(), "pulled into the cache"
        name(second.pinned("sha256:" + "1" * 64), "sha256:" + "2" * 64)  # a digest the registry does not have
        wait_for(lambda: index(server.url)[-1]["state"] == "UNAVAILABLE", what="the refused pull")
        assert "404" in index(server.url)[-1]["reason"] and detect() == new
    finally:
        assert server.stop() == 0
    # `serve --model oci://…` (what Surge and Replace pods run): pulled into its cache, verified.
    direct = start_server(None, tmp_path / "cache-direct", tmp_path, "--model", str(first), "--registry-plain-http")
    try:
        direct.wait_ready()
        assert index(direct.url)[0]["version"] == old
    finally:
        assert direct.stop() == 0


# --- a registry with TLS from a private CA and token authentication --------------------------


class TokenServer(ThreadingHTTPServer):
    """The registry's token service (Docker's token authentication, which distribution verifies):
    a JWT for the asked scope, to the one user with the right password, signed by a key whose
    certificate chains to the registry's configured root."""

    def __init__(self, signer: KeyPair, ca_cert: Path, user: tuple[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), TokenHandler)
        self.key = serialization.load_pem_private_key(signer.key.read_bytes(), None)
        self.chain = [base64.b64encode(x509.load_pem_x509_certificate(p.read_bytes()).public_bytes(serialization.Encoding.DER)).decode()
                      for p in (signer.cert, ca_cert)]  # fmt: skip
        self.user = user
        self.issued = 0

    def token(self, scope: str) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        access = []
        if scope:
            kind, name, actions = scope.split(":")
            access = [{"type": kind, "name": name, "actions": actions.split(",")}]
        header = {"typ": "JWT", "alg": "ES256", "x5c": self.chain}
        claims = {"iss": "rtdetr-test-auth", "sub": self.user[0], "aud": "rtdetr-test-registry", "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": str(now) + str(self.issued), "access": access}  # fmt: skip
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))  # type: ignore[call-arg, union-attr]
        self.issued += 1
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class TokenHandler(BaseHTTPRequestHandler):
    server: TokenServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        expected = "Basic " + base64.b64encode(":".join(self.server.user).encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        body = json.dumps({"token": self.server.token(query.get("scope", ""))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def secured_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, TokenServer]]:
    """distribution's registry over TLS (a private CA) with token authentication: (host, CA file, tokens)."""
    work = tmp_path_factory.mktemp("secured-registry")
    ca = CertificateAuthority(work / "pki", "registry-test-ca")
    serving = ca.issue("registry", "registry", server=True, hosts=("127.0.0.1",))
    tokens = TokenServer(ca.issue("token-signer", "token-signer"), ca.cert_file, ("edge", "s3cret"))
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    port = free_port()
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {serving.cert}\n    key: {serving.key}\n"
        f"auth:\n  token:\n    realm: http://127.0.0.1:{tokens.server_address[1]}/token\n    service: rtdetr-test-registry\n"
        f"    issuer: rtdetr-test-auth\n    rootcertbundle: {ca.cert_file}\n"
    )
    with (work / "registry.log").open("wb") as log:
        process = subprocess.Popen([str(binary("registry")), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: requests.get(f"https://127.0.0.1:{port}/v2/", verify=str(ca.cert_file), timeout=2).status_code == 401,
                       30, "the secured registry")  # fmt: skip
            yield f"127.0.0.1:{port}", ca.cert_file, tokens
        finally:
            process.terminate()
            process.wait(10)
            tokens.shutdown()


def test_credentials_from_a_docker_config_and_a_private_ca_reach_a_secured_registry(
    secured_registry: tuple[str, Path, TokenServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    host, ca_file, tokens = secured_registry
    reference = Reference.parse(f"oci://{host}/models/secured:v1")
    config = tmp_path / "config.json"  # what `kubectl create secret docker-registry` stores as .dockerconfigjson
    config.write_text(json.dumps({"auths": {host: {"username": "edge", "password": "s3cret",
                                                   "auth": base64.b64encode(b"edge:s3cret").decode()}}}))  # fmt: skip
    access = RegistryAccess(config_file=config, ca_file=ca_file)
    pinned = push_model(tiny_model_dir, reference, access)
    pulled = pull_model(pinned, tmp_path / "cache", access, ModelFiles.locate(tiny_model_dir).digest())
    assert pulled.model_dir.is_dir() and tokens.issued >= 2

    with pytest.raises(RegistryError, match="no credentials given|token refused"):
        pull_model(pinned, tmp_path / "anonymous", RegistryAccess(ca_file=ca_file))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(b"edge:guess").decode()}}}))
    with pytest.raises(RegistryError, match="token refused \\(401\\): check the credentials"):
        pull_model(pinned, tmp_path / "wrong", RegistryAccess(config_file=wrong, ca_file=ca_file))
    with pytest.raises(RegistryError, match="CERTIFICATE_VERIFY_FAILED"):
        pull_model(pinned, tmp_path / "untrusted", RegistryAccess(config_file=config))


def test_an_oci_source_resolves_to_the_pulled_model(models_registry: Registry, tiny_model_dir: Path, tmp_path: Path) -> None:
    """source.inferenceModel: oci://…@sha256:… (what `rtdetr-edge push` printed) is what the
    quantize Job reads: pulled by digest into its download directory."""
    from rtdetr_edge.api.spec import SourceSpec
    from rtdetr_edge.storage import StorageResolver

    pinned = push_model(tiny_model_dir, Reference.parse(f"oci://{models_registry.host}/sources/tiny:fp32"), LOCAL)
    assert SourceSpec.model_validate({"inferenceModel": str(pinned)}).inference_model == str(pinned)
    with pytest.raises(ValueError, match="by digest"):
        SourceSpec.model_validate({"inferenceModel": f"oci://{models_registry.host}/sources/tiny:fp32"})
    with pytest.raises(ValueError, match="exported models only"):
        SourceSpec.model_validate({"checkpoint": str(pinned)})
    resolver = StorageResolver(pvc_root=tmp_path / "pvc", download_dir=tmp_path / "downloads", registry=LOCAL)
    resolved = resolver.local_path(str(pinned))
    assert ModelFiles.locate(resolved).digest() == ModelFiles.locate(tiny_model_dir).digest()
