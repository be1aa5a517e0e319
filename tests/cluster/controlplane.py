"""A real Kubernetes control plane on this machine: upstream etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, built from their Go modules
(tests/cluster/build.py) and started as local processes.

What is real: authentication (x509 client certificates, ServiceAccount tokens), RBAC and
Node authorization, the default admission plugins (ResourceQuota, PodSecurity, …) plus
NodeRestriction and OwnerReferencesPermissionEnforcement, every built-in controller (Job,
Deployment, ReplicaSet, EndpointSlice, garbage collector, PV binder, node lifecycle, …) and
the scheduler. Simulated nodes (labelled ``type: kwok``) are kept alive by kwok, which also
plays their pods. The one node that runs containers is real (tests/cluster/node.py).
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from rtdetr_edge.dev.ports import free_port
from tests.cluster import pki
from tests.cluster.bridge import ClusterBridge
from tests.cluster.build import ensure_binaries, module_dir

SERVICE_CIDR = "10.96.0.0/16"
ADMISSION_PLUGINS = "NodeRestriction,OwnerReferencesPermissionEnforcement"  # on top of the defaults
KWOK_LABEL = ("type", "kwok")

# kwok plays simulated nodes with its own stage files (from the pinned kwok module): nodes
# are initialised and heart-beaten (with Leases); their pods become Running and Ready and
# stay so (as a long quantization would): kwok's "complete Job pods at once" stage is left out.
# Deletion is ours (kwok/pod-terminate.yaml): killed, Failed, then gone, as a kubelet does.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
)
OWN_KWOK_STAGES = (Path(__file__).resolve().parent / "kwok" / "pod-terminate.yaml",)


def write_kubeconfig(path: Path, server: str, ca: Path, *, cert: pki.KeyPair | None = None, token: str | None = None,
                     namespace: str = "default") -> Path:  # fmt: skip
    user: dict[str, Any] = {"token": token} if token else {"client-certificate": str(cert.cert), "client-key": str(cert.key)} if cert else {}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "rtdetr-edge-test",
        "clusters": [{"name": "rtdetr-edge-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "rtdetr-edge-test", "context": {"cluster": "rtdetr-edge-test", "user": "user", "namespace": namespace}}],
    }))  # fmt: skip
    path.chmod(0o600)
    return path


def die_with_parent() -> None:
    """SIGKILL this process when the thread that started it dies: a killed test run leaves no
    control plane or node processes behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    name: str
    command: list[str]
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None
    """Replaces the environment when set."""

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent, env=self.env)  # fmt: skip

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, kill: bool = False, timeout: float = 15.0) -> None:
        if not self.running():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = 30) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    """``start()`` → a cluster answering at ``server`` with an admin ``kubeconfig``; ``stop()``."""

    workdir: Path
    binaries: dict[str, Path] = field(default_factory=dict)
    network: ClusterBridge | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    server: str = ""
    kubeconfig: Path = Path()

    def start(self, timeout: float = 120.0) -> ControlPlane:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.binaries = self.binaries or ensure_binaries()
        self.network = ClusterBridge.create()
        host = self.network.gateway
        self._certificates(host)
        etcd_port, peer_port, api_port = free_port("127.0.0.1"), free_port("127.0.0.1"), free_port(host)
        self.server = f"https://{host}:{api_port}"
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.kubeconfig = write_kubeconfig(self.workdir / "admin.kubeconfig", self.server, self.ca.cert_file, cert=self.admin)
        component_configs = {
            name: write_kubeconfig(self.workdir / f"{name}.kubeconfig", self.server, self.ca.cert_file, cert=pair)
            for name, pair in self.component_certs.items()
        }
        peer = f"http://127.0.0.1:{peer_port}"
        self._add("etcd", [
            str(self.binaries["etcd"]), "--name=etcd0", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=etcd0={peer}",
            "--unsafe-no-fsync=true", "--log-level=warn",
        ])  # fmt: skip
        pki_dir = self.workdir / "pki"
        self._add("kube-apiserver", [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers={self.etcd_url}", f"--bind-address={host}", f"--advertise-address={host}",
            f"--secure-port={api_port}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", f"--enable-admission-plugins={ADMISSION_PLUGINS}",
            f"--client-ca-file={self.ca.cert_file}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}", f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer's front proxy, as kubeadm configures it.
            f"--requestheader-client-ca-file={self.ca.cert_file}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki_dir / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki_dir / 'front-proxy-client.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.sa_keys.cert}", f"--service-account-signing-key-file={self.sa_keys.key}",
            "--allow-privileged=false", "--profiling=false", "--event-ttl=1h", "--v=1",
        ])  # fmt: skip
        self._add("kube-controller-manager", [
            str(self.binaries["kube-controller-manager"]),
            f"--kubeconfig={component_configs['kube-controller-manager']}",
            f"--authentication-kubeconfig={component_configs['kube-controller-manager']}",
            f"--authorization-kubeconfig={component_configs['kube-controller-manager']}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port('127.0.0.1')}", "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.sa_keys.key}", f"--root-ca-file={self.ca.cert_file}",
            f"--cluster-signing-cert-file={self.ca.cert_file}", f"--cluster-signing-key-file={self.ca.key_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=1",
        ])  # fmt: skip
        self._add("kube-scheduler", [
            str(self.binaries["kube-scheduler"]),
            f"--kubeconfig={component_configs['kube-scheduler']}",
            f"--authentication-kubeconfig={component_configs['kube-scheduler']}",
            f"--authorization-kubeconfig={component_configs['kube-scheduler']}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port('127.0.0.1')}", "--leader-elect=false", "--v=1",
        ])  # fmt: skip
        stages = self.workdir / "kwok-stages.yaml"
        stage_dir = module_dir("kwok", "sigs.k8s.io/kwok") / "kustomize" / "stage"
        stages.write_text("\n---\n".join([(stage_dir / name).read_text() for name in KWOK_STAGES]
                                          + [path.read_text() for path in OWN_KWOK_STAGES]))  # fmt: skip
        self._add("kwok", [
            str(self.binaries["kwok"]), f"--kubeconfig={component_configs['kwok']}", f"--config={stages}",
            "--manage-all-nodes=false", f"--manage-nodes-with-label-selector={KWOK_LABEL[0]}={KWOK_LABEL[1]}",
            "--cidr=10.214.0.0/16", "--node-ip=10.214.255.254", "--node-lease-duration-seconds=40",
        ])  # fmt: skip
        self._start("etcd")
        self.wait_for(lambda: requests.get(f"{self.etcd_url}/health", timeout=2).json().get("health") == "true", "etcd", timeout)
        self._start("kube-apiserver")
        self.wait_healthy(timeout)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._start(name)
        self.wait_for(lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                   "the default ServiceAccount (controller-manager up)", timeout)  # fmt: skip
        # As kubeadm does: the API server's client identity may use kubelets' API (logs, exec).
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "kube-apiserver-kubelet-api-admin"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kube-apiserver-kubelet-client"}]}  # fmt: skip
        response = self.session().post(f"{self.server}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding, timeout=10)
        if response.status_code not in (201, 409):
            raise RuntimeError(f"creating the kubelet API binding: {response.status_code} {response.text}")
        self.startup_seconds = time.monotonic() - started
        return self

    # -- processes -------------------------------------------------------------------------------
    def _certificates(self, host: str) -> None:
        directory = self.workdir / "pki"
        self.ca = pki.CertificateAuthority(directory)
        self.ca.issue("apiserver", "kube-apiserver", server=True,
                      hosts=(host, "127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
                             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))  # fmt: skip
        self.ca.issue("front-proxy-client", "front-proxy-client")
        self.ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("kubeadm:cluster-admins",))
        self.admin = self.ca.issue("admin", "kubernetes-admin", ("system:masters",))
        self.component_certs = {
            "kube-controller-manager": self.ca.issue("kube-controller-manager", "system:kube-controller-manager"),
            "kube-scheduler": self.ca.issue("kube-scheduler", "system:kube-scheduler"),
            # kwok speaks for many simulated kubelets at once; no single system:node identity fits.
            "kwok": self.ca.issue("kwok", "kwok-controller", ("system:masters",)),
        }
        self.sa_keys = pki.service_account_keys(directory)

    def _add(self, name: str, command: list[str]) -> None:
        self.processes[name] = Process(name, command, self.workdir / "logs" / f"{name}.log")

    def _start(self, name: str) -> None:
        self.processes[name].start()

    def wait_for(self, check: Any, what: str, timeout: float, also: dict[str, Process] | None = None) -> Any:
        """Until ``check()`` is true (returns what it returned); fails at once, with its log's
        tail, when one of the control plane's processes (or of ``also``) exits."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for process in [*self.processes.values(), *(also or {}).values()]:
                if process.popen is not None and not process.running():
                    raise RuntimeError(f"{process.name} exited ({process.popen.returncode}) while waiting for {what}:\n"
                                       f"{process.tail()}")  # fmt: skip
            try:
                if result := check():
                    return result
            except (requests.RequestException, ValueError) as error:
                last = error
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.session().get(f"{self.server}/readyz", timeout=2).status_code == 200, "kube-apiserver /readyz", timeout)

    def stop_component(self, name: str, kill: bool = False) -> None:
        self.processes[name].stop(kill=kill)

    def start_component(self, name: str) -> None:
        self.processes[name].start()

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.processes:
                self.processes[name].stop()
        if self.network is not None:
            self.network.close()
            self.network = None

    # -- a tiny admin client for the harness itself ------------------------------------------------
    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override our CA
        session.cert = (str(self.admin.cert), str(self.admin.key))
        session.verify = str(self.ca.cert_file)
        return session

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.session().get(self.server + path, timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def logs(self) -> dict[str, str]:
        return {name: process.tail(60) for name, process in self.processes.items()}
