"""TLS and token overhead, side by side in one run: two `rtdetr-edge serve` processes on the tiny
model, one plain, one with TLS (ECDSA P-256), client certificates and a bearer token; 3 x 100
sequential /v1/detect each over a kept-alive connection (p50 per repetition), then 3 x 30 with a
new connection per request (the handshake's cost).

    .venv/bin/python tests/server/bench_tls.py
"""

import statistics
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rtdetr_edge.dev.bench import cpu_description  # noqa: E402
from rtdetr_edge.dev.demo import ensure_tiny_model  # noqa: E402
from rtdetr_edge.dev.ports import free_port  # noqa: E402
from tests.cluster.pki import CertificateAuthority  # noqa: E402
from tests.conftest import FIXTURE_IMAGES, start_server  # noqa: E402
from tests.server.side_by_side import p50_per_repetition  # noqa: E402

print("CPU:", cpu_description(Path("/proc/cpuinfo").read_text()))
work = Path(tempfile.mkdtemp())
model = ensure_tiny_model(work / "tiny", seed=0)
image = FIXTURE_IMAGES[0].read_bytes()
server_ca, client_ca = CertificateAuthority(work / "server-ca", "server-ca"), CertificateAuthority(work / "client-ca", "client-ca")
pair, client = server_ca.issue("server", "rtdetr", server=True, hosts=("127.0.0.1",)), client_ca.issue("client", "client")
(work / "tokens").write_text("bench-token\n")
management = free_port()
plain = start_server(model, work / "cache", work)
secured = start_server(model, work / "cache", work, "--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key),
                       "--tls-client-ca-file", str(client_ca.cert_file), "--auth-token-file", str(work / "tokens"),
                       "--management-port", str(management))  # fmt: skip
secured.url = f"http://127.0.0.1:{management}"  # health for wait_ready


def tls_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace session.verify
    session.verify, session.cert = str(server_ca.cert_file), (str(client.cert), str(client.key))
    session.headers["Authorization"] = "Bearer bench-token"
    return session


servers = {"plain HTTP": plain, "TLS + client certificate + token": secured}
urls = {"TLS + client certificate + token": f"https://127.0.0.1:{secured.port}"}
try:
    kept = p50_per_repetition(servers, image, sessions={"TLS + client certificate + token": tls_session()}, urls=urls)
    fresh: dict[str, list[float]] = {}
    for _ in range(3):  # a new session (connection, handshake) per request
        for name in servers:
            fresh.setdefault(name, []).append(statistics.median(
                p50_per_repetition({name: servers[name]}, image, 1, 1,
                                   sessions={name: tls_session() if name in urls else requests.Session()}, urls=urls)[name][0]
                for _ in range(30)))  # fmt: skip
finally:
    plain.stop()
    secured.stop()
for name in servers:
    print(f"{name}: kept-alive p50 per repetition {', '.join(f'{m:.2f}' for m in kept[name])} ms; "
          f"new connection each {', '.join(f'{m:.2f}' for m in fresh[name])} ms")
