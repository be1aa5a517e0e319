"""TLS, client certificates and bearer tokens on a real `rtdetr-edge serve` process, with real
clients (requests, tritonclient.http and .grpc, grpc's own credentials): what is refused, with
which status, and that rotated files are picked up without a restart. The credential files sit
in a directory laid out like a Kubernetes Secret volume (``..data`` swapped atomically)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests

from rtdetr_edge.dev.ports import free_port
from tests.cluster.pki import CertificateAuthority, KeyPair

from ..conftest import FIXTURE_IMAGES, ServerProcess, start_server
from .test_grpc_api import infer_request, model_inputs, triton_inputs

TOKEN = "s3cret-token-1"
RELOAD_SECONDS = 0.3


class SecretVolume:
    """Files the way the kubelet projects a Secret: ``name -> ..data/name``, and ``..data`` a
    symlink to a timestamped directory, replaced by one rename on every update."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True)
        self.version = 0

    def write(self, files: dict[str, bytes]) -> None:
        self.version += 1
        target = self.directory / f"..2026_12_06_{self.version}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        staging = self.directory / "..data_tmp"
        staging.symlink_to(target.name)
        staging.replace(self.directory / "..data")

    def path(self, name: str) -> Path:
        return self.directory / name


def secret_files(pair: KeyPair, client_ca: Path, tokens: str) -> dict[str, bytes]:
    return {"tls.crt": pair.cert.read_bytes(), "tls.key": pair.key.read_bytes(), "ca.crt": client_ca.read_bytes(),
            "tokens": tokens.encode()}  # fmt: skip


@dataclass
class Secured:
    server: ServerProcess
    https: str
    grpc_port: int
    management: str
    volume: SecretVolume
    server_ca: CertificateAuthority
    other_ca: CertificateAuthority
    client_ca: CertificateAuthority
    client: KeyPair

    def get(self, path: str, *, ca: Path | None = None, cert: KeyPair | None = None, token: str | None = TOKEN,
            **kwargs: object) -> requests.Response:  # fmt: skip
        client = cert or self.client
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(kwargs.pop("method", "GET"), f"{self.https}{path}", headers=headers,  # type: ignore[arg-type]
                                verify=str(ca or self.server_ca.cert_file), cert=(str(client.cert), str(client.key)),
                                timeout=30, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def secured(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    work = tmp_path_factory.mktemp("tls")
    server_ca, other_ca, client_ca = (CertificateAuthority(work / name, name) for name in ("server-ca", "other-ca", "client-ca"))
    volume = SecretVolume(work / "secret")
    pair = server_ca.issue("server", "rtdetr", server=True, hosts=("127.0.0.1", "localhost"))
    volume.write(secret_files(pair, client_ca.cert_file, f"# tokens\n{TOKEN}\n"))
    grpc_port, management_port = free_port(), free_port()
    server = start_server(
        tiny_model_dir, work / "cache", work,
        "--tls-cert-file", str(volume.path("tls.crt")), "--tls-key-file", str(volume.path("tls.key")),
        "--tls-client-ca-file", str(volume.path("ca.crt")), "--auth-token-file", str(volume.path("tokens")),
        "--grpc-port", str(grpc_port), "--management-port", str(management_port),
        "--credential-reload-seconds", str(RELOAD_SECONDS),
    )  # fmt: skip
    server.url = f"http://127.0.0.1:{management_port}"  # ServerProcess.wait_ready polls plain HTTP health
    try:
        server.wait_ready()
        client = client_ca.issue("client", "camera-gateway")
        yield Secured(server, f"https://127.0.0.1:{server.port}", grpc_port, server.url, volume, server_ca, other_ca,
                      client_ca, client)  # fmt: skip
    finally:
        assert server.stop() == 0, server.log()


def detect(secured: Secured, **kwargs: object) -> requests.Response:
    return secured.get("/v1/detect", method="POST", data=FIXTURE_IMAGES[0].read_bytes(), **kwargs)


def test_https_with_client_certificate_and_token_serves(secured: Secured) -> None:
    response = detect(secured)
    assert response.status_code == 200, response.text
    assert "detections" in response.json()


def test_a_client_trusting_another_ca_refuses_the_server(secured: Secured) -> None:
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        detect(secured, ca=secured.other_ca.cert_file)


@pytest.mark.parametrize("client", ["none", "other CA", "expired"])
def test_the_server_refuses_a_missing_untrusted_or_expired_client_certificate(secured: Secured, client: str) -> None:
    context = ssl.create_default_context(cafile=str(secured.server_ca.cert_file))
    if client == "other CA":
        pair = secured.other_ca.issue("stranger", "stranger")
        context.load_cert_chain(pair.cert, pair.key)
    elif client == "expired":
        pair = secured.client_ca.issue("old-client", "old-client", expired=True)
        context.load_cert_chain(pair.cert, pair.key)
    import http.client

    connection = http.client.HTTPSConnection("127.0.0.1", secured.server.port, context=context, timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
        connection.request("GET", "/v2/health/ready")
        connection.getresponse()
    print(f"{client}: {refused.value!r}")
    assert secured.server.process.poll() is None


@pytest.mark.parametrize(("token", "message"), [(None, "needs 'Authorization: Bearer"), ("wrong", "not accepted")])
def test_a_missing_or_wrong_token_gets_401_json(secured: Secured, token: str | None, message: str) -> None:
    response = detect(secured, token=token)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "unauthorized" and message in response.json()["error"]


def test_health_and_metrics_need_no_token_and_answer_on_the_plain_management_port(secured: Secured) -> None:
    assert secured.get("/v2/health/ready", token=None).status_code == 200
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert requests.get(f"{secured.management}{path}", timeout=10).status_code == 200, path
    assert 'rtdetr_rejected_requests_total{code="unauthorized"}' in requests.get(f"{secured.management}/metrics", timeout=10).text
    # Only those: the model is not reachable around TLS and tokens.
    assert requests.post(f"{secured.management}/v1/detect", data=b"x", timeout=10).status_code == 404
    assert requests.get(f"{secured.management}/v2/models/rtdetr", timeout=10).status_code == 404


def grpc_credentials(secured: Secured, ca: Path | None = None, client: KeyPair | None = None) -> grpc.ChannelCredentials:
    pair = client or secured.client
    return grpc.ssl_channel_credentials((ca or secured.server_ca.cert_file).read_bytes(), pair.key.read_bytes(),
                                        pair.cert.read_bytes())  # fmt: skip


def grpc_infer(secured: Secured, token: str | None = TOKEN, ca: Path | None = None) -> object:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    arrays = model_inputs(FIXTURE_IMAGES[0].read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{secured.grpc_port}", grpc_credentials(secured, ca)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return stub.ModelInfer(infer_request(service_pb2, "rtdetr", arrays), metadata=metadata, timeout=30)


def test_grpc_over_tls_with_client_certificate_and_token(secured: Secured) -> None:
    assert len(grpc_infer(secured).raw_output_contents) == 2  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(secured, token=None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(secured, ca=secured.other_ca.cert_file)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails: no connection
    # Health needs no token (the same TLS).
    with grpc.secure_channel(f"127.0.0.1:{secured.grpc_port}", grpc_credentials(secured)) as channel:
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        assert service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(service_pb2.ServerReadyRequest()).ready


def test_tritonclient_over_tls(secured: Secured) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(
        url=f"127.0.0.1:{secured.grpc_port}", ssl=True, root_certificates=str(secured.server_ca.cert_file),
        private_key=str(secured.client.key), certificate_chain=str(secured.client.cert),
    )  # fmt: skip
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert client.is_model_ready("rtdetr", headers=headers)
    arrays = model_inputs(FIXTURE_IMAGES[0].read_bytes())
    assert client.infer("rtdetr", triton_inputs(grpcclient, arrays), headers=headers).as_numpy("bbox").shape == (300, 6)


def wait_for(predicate: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (requests.exceptions.SSLError, grpc.RpcError):  # the old credentials still answer
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _refused(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except (requests.exceptions.SSLError, grpc.RpcError):
        return True
    return False


def reloads(secured: Secured, result: str) -> float:
    text = requests.get(f"{secured.management}/metrics", timeout=10).text
    line = f'rtdetr_credential_reloads_total{{result="{result}"}} '
    return next((float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)), 0.0)


def test_rotated_certificate_key_and_tokens_are_picked_up_without_a_restart(secured: Secured) -> None:
    """Rotated like cert-manager and the kubelet do it: a certificate from another CA (clients
    that trust only the old CA are refused from then on, on HTTP and gRPC), a bad pair (refused,
    the previous one keeps serving), a new token list, and an expired certificate."""
    pid = secured.server.process.pid
    rotated = secured.other_ca.issue("server-2", "rtdetr", server=True, hosts=("127.0.0.1", "localhost"))
    secured.volume.write(secret_files(rotated, secured.client_ca.cert_file, f"{TOKEN}\n"))
    wait_for(lambda: detect(secured, ca=secured.other_ca.cert_file).status_code == 200, "HTTPS with the new certificate")
    assert _refused(lambda: detect(secured)), "the old CA must no longer verify the server"
    wait_for(lambda: len(grpc_infer(secured, ca=secured.other_ca.cert_file).raw_output_contents) == 2,  # type: ignore[attr-defined]
             "gRPC with the new certificate")  # fmt: skip
    assert _refused(lambda: grpc_infer(secured))

    failed = reloads(secured, "failed")
    mismatched = {**secret_files(rotated, secured.client_ca.cert_file, f"{TOKEN}\n"),
                  "tls.key": secured.server_ca.issue("other-key", "x").key.read_bytes()}  # fmt: skip
    secured.volume.write(mismatched)
    wait_for(lambda: reloads(secured, "failed") > failed, "the bad pair refused")
    assert detect(secured, ca=secured.other_ca.cert_file).status_code == 200, "the previous certificate keeps serving"

    secured.volume.write(secret_files(rotated, secured.client_ca.cert_file, "new-token\n"))
    wait_for(lambda: detect(secured, ca=secured.other_ca.cert_file, token="new-token").status_code == 200, "the new token")
    assert detect(secured, ca=secured.other_ca.cert_file).status_code == 401, "the old token is gone"

    expired = secured.other_ca.issue("server-3", "rtdetr", server=True, hosts=("127.0.0.1", "localhost"), expired=True)
    secured.volume.write(secret_files(expired, secured.client_ca.cert_file, "new-token\n"))
    wait_for(lambda: _refused(lambda: detect(secured, ca=secured.other_ca.cert_file, token="new-token")), "the expired one served")
    with pytest.raises(requests.exceptions.SSLError, match="certificate has expired"):
        detect(secured, ca=secured.other_ca.cert_file, token="new-token")
    assert secured.server.process.pid == pid and secured.server.process.poll() is None, "no restart"


def test_half_configured_tls_is_a_usage_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    pair = ca.issue("server", "rtdetr", server=True)
    server = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--tls-cert-file", str(pair.cert))
    assert server.process.wait(60) == 2, server.log()
    assert "needs both a certificate and its key" in server.log()
    mismatched = start_server(tiny_model_dir, tmp_path / "cache", tmp_path, "--tls-cert-file", str(pair.cert),
                              "--tls-key-file", str(ca.key_file))  # fmt: skip
    assert mismatched.process.wait(60) == 1, mismatched.log()
    assert mismatched.log().strip().splitlines()[-1].startswith("error: TLS/authentication files do not load")

