"""A real node for the test cluster: upstream kubelet talking CRI to containerd 2, which runs
every container with runc from images pulled from the test registry, each pod in
its own network namespace on a CNI bridge.

Built from their Go modules like the control plane (tests/cluster/build.py). The kubelet
registers ``node-0`` with its own client certificate (``system:node:node-0``, so the API
server's Node authorizer and NodeRestriction apply to it) and serves logs and exec to the API
server with a certificate from the cluster's CA.

Properties of this test machine, not of the product: the cgroup hierarchy is v1, so the
kubelet runs with the cgroupfs driver and ``failCgroupV1: false`` (Kubernetes >= 1.35 refuses
v1 otherwise), under its own cgroup root (``/rtdetr-node-<pid>``) so that nothing it makes
mixes with another kubelet's; root lacks CAP_SYS_RESOURCE, so no oom_score_adj goes below 0
(containerd's ``restrict_oom_score_adj``); the disk is shared with the build caches, so eviction and image
garbage collection thresholds are set low instead of the defaults' percentages. The pause
image is Kubernetes' own pause.c (from the k8s.io/kubernetes module), compiled here and pushed
to the test registry: registry.k8s.io is out of reach.

    python -m tests.cluster.node     # make cluster: a control plane with node-0, until Ctrl-C
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rtdetr_edge.dev.ports import free_port
from tests.cluster import addons
from tests.cluster.bridge import alive
from tests.cluster.build import binary, module_dir, versions
from tests.cluster.controlplane import ControlPlane, Process, write_kubeconfig
from tests.cluster.images import Registry, crane

NODE_NAME = "node-0"
NODE_LABEL = "rtdetr-edge.test/real-node"
"""Set on the node by its kubelet (``true``): what the chart's operator pod selects in tests."""
TEST_GPU_RESOURCE = "example.com/gpu"
"""An extended resource the tests give the node one of: a stand-in for the one GPU of an edge node."""
PAUSE_REPOSITORY = "pause"


def binary_image(registry: Registry, repository: str, tag: str, program: Path, work: Path, user: str) -> str:
    """An image of one static program (``/<name>``, its entrypoint) pushed to ``registry``; its
    reference by digest. What the node runs that has no image of ours: pause and CoreDNS."""
    layer = work / f"{repository.replace('/', '-')}-layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(program, arcname=program.name)
    ref = registry.ref(repository, tag)
    crane("append", "--new_layer", str(layer), "--new_tag", ref, "--platform", "linux/amd64")
    crane("mutate", ref, "--entrypoint", f"/{program.name}", "--user", user)
    return registry.ref(repository, registry.digest(repository, tag))


def pause_image(registry: Registry, work: Path) -> str:
    """Kubernetes' pause container, compiled (static) from the pinned k8s.io/kubernetes module's
    build/pause/linux/pause.c."""
    source = module_dir("kubernetes", "k8s.io/kubernetes") / "build" / "pause" / "linux" / "pause.c"
    version = versions()["k8s.io/kubernetes"]
    program = work / "pause-build" / "pause"
    program.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-Os", "-Wall", "-static", f"-DVERSION={version}", "-o", str(program), str(source)],
                   check=True, capture_output=True)  # fmt: skip
    return binary_image(registry, PAUSE_REPOSITORY, version, program, work, "65535:65535")


def cgroup_root(pid: int) -> str:
    """The kubelet's cgroup root for the node a test process ``pid`` runs."""
    return f"/rtdetr-node-{pid}"


def containerd_config(root: Path, socket: Path, registries: Path, cni_bin: Path, cni_conf: Path, pause: str, runc: Path) -> str:
    """containerd 2's configuration (version 3) for a kubelet: CRI with runc under cgroupfs."""
    return f"""version = 3
root = "{root / 'root'}"
state = "{root / 'state'}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{registries}"

[plugins."io.containerd.cri.v1.runtime"]
  # This machine withholds CAP_SYS_RESOURCE even from root: no process may lower its
  # oom_score_adj below 0, so the kubelet's -998 for pause containers cannot be applied as is.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def registry_hosts(registry: Registry) -> str:
    """certs.d/<host>/hosts.toml: the test registry speaks plain HTTP."""
    return f'server = "http://{registry.host}"\n\n[host."http://{registry.host}"]\n  capabilities = ["pull", "resolve"]\n'


def cni_config(bridge: str, subnet: ipaddress.IPv4Network, ipam_dir: Path) -> dict[str, Any]:
    """A bridge network with host-local addresses; the bridge's address is the pods' gateway."""
    gateway = str(subnet.network_address + 1)
    return {
        "cniVersion": "1.0.0",
        "name": "rtdetr-test",
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "dataDir": str(ipam_dir), "routes": [{"dst": "0.0.0.0/0"}],
                     "ranges": [[{"subnet": str(subnet), "gateway": gateway}]]},
        }],
    }  # fmt: skip


def kubelet_config(*, ca: Path, cert: Path, key: Path, runtime: Path, address: str, port: int, healthz_port: int,
                   cgroup_root: str, cluster_dns: list[str]) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {"x509": {"clientCAFile": str(ca)}, "webhook": {"enabled": True}, "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{runtime}",
        # This machine's cgroups are v1 (see the module docstring).
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupRoot": cgroup_root,
        "oomScoreAdj": 0,  # not -999: this machine grants no CAP_SYS_RESOURCE (see containerd_config)
        "failSwapOn": False,
        "clusterDomain": addons.CLUSTER_DOMAIN,
        "clusterDNS": cluster_dns,
        # The disk is shared with Go's and BuildKit's caches: absolute thresholds, and images are
        # not garbage-collected by disk percentage (the runtime image is large and pulled once).
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2Gi", "imagefs.available": "2Gi",
                         "nodefs.inodesFree": "1%", "imagefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "containerLogMaxSize": "10Mi",
        "shutdownGracePeriod": "0s",
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "staticPodPath": "",
    }


@dataclass
class Node:
    """``start()`` → node-0 Ready in ``plane``'s cluster, pulling from ``registry``; ``stop()``."""

    plane: ControlPlane
    registry: Registry
    workdir: Path
    name: str = NODE_NAME
    extended_resources: dict[str, str] = field(default_factory=dict)
    """Advertised in the node's capacity (as a device plugin or an admin's status patch would)."""
    processes: dict[str, Process] = field(default_factory=dict)

    def start(self, timeout: float = 120.0) -> Node:
        started = time.monotonic()
        remove_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / str(os.getpid())).write_text(str(self.workdir.resolve()))
        (self.workdir / "logs").mkdir(exist_ok=True)
        assert self.plane.network is not None, "start the control plane first"
        address = self.plane.network.gateway  # the node's InternalIP: where the API server reaches its kubelet
        self.pause = pause_image(self.registry, self.workdir)
        self._containerd()
        self._kubelet(address)
        self._kube_proxy()
        self.plane.wait_for(self._ready, f"node {self.name} Ready", timeout, self.processes)
        if self.extended_resources:
            patch = {"status": {"capacity": self.extended_resources}}
            response = self.plane.session().patch(f"{self.plane.server}/api/v1/nodes/{self.name}/status", json=patch,
                                                  headers={"Content-Type": "application/merge-patch+json"}, timeout=10)  # fmt: skip
            response.raise_for_status()
        self._dns(timeout)
        self._metrics_server()
        self.startup_seconds = time.monotonic() - started
        return self

    # -- Services and DNS ------------------------------------------------------------------------
    def _kube_proxy(self) -> None:
        identity = self.plane.ca.issue("kube-proxy", "system:kube-proxy")  # bound to system:node-proxier by default
        kubeconfig = write_kubeconfig(self.workdir / "kube-proxy.kubeconfig", self.plane.server, self.plane.ca.cert_file, cert=identity)
        assert self.plane.network is not None
        config = addons.kube_proxy_config(kubeconfig=kubeconfig, node=self.name, cluster_cidr=str(self.plane.network.subnet),
                                          healthz_port=free_port(), metrics_port=free_port())  # fmt: skip
        config_file = self.workdir / "kube-proxy.yaml"
        config_file.write_text(yaml.safe_dump(config))
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # nft, conntrack
        self._add("kube-proxy", [str(binary("kube-proxy")), f"--config={config_file}", "--v=1"], {"PATH": path})
        self.processes["kube-proxy"].start()

    def _dns(self, timeout: float) -> None:
        """CoreDNS as kubeadm runs it, Ready before any test pod needs a name."""
        image = binary_image(self.registry, addons.COREDNS_REPOSITORY, "test", binary("coredns"), self.workdir, "0:0")
        self._create(addons.coredns_objects(image, self.name))

        def dns_ready() -> bool:
            found = self.plane.get("/apis/apps/v1/namespaces/kube-system/deployments/coredns") or {}
            return int((found.get("status") or {}).get("readyReplicas") or 0) >= 1

        self.plane.wait_for(dns_ready, "CoreDNS ready", timeout, self.processes)

    # -- the resource metrics API ----------------------------------------------------------------
    def _metrics_server(self) -> None:
        """Installed, not waited for (its first scrape takes a metric resolution, 15 s): what
        reads CPU metrics waits with :meth:`wait_for_metrics`."""
        image = binary_image(self.registry, addons.METRICS_SERVER_REPOSITORY, "test", binary("metrics-server"), self.workdir,
                             "65534:65534")  # fmt: skip
        self._create(addons.metrics_server_objects(image, self.name, f"{NODE_LABEL}=true"))

    def wait_for_metrics(self, timeout: float = 120.0) -> dict[str, Any]:
        """This node's CPU and memory as the metrics API (metrics-server, through the API server's
        aggregation layer) reports them, once it does."""
        path = f"{addons.METRICS_API}/nodes/{self.name}"
        return dict(self.plane.wait_for(lambda: self.plane.get(path), f"the metrics API reporting {self.name}", timeout, self.processes))

    def _create(self, documents: list[dict[str, Any]]) -> None:
        session = self.plane.session()
        for document in documents:
            response = session.post(self.plane.server + _collection(document), json=document, timeout=10)
            if response.status_code not in (201, 409):
                raise RuntimeError(f"creating {document['kind']} {document['metadata']['name']}: {response.status_code} {response.text}")

    # -- containerd ------------------------------------------------------------------------------
    def _containerd(self) -> None:
        root = self.workdir / "containerd"
        self.runtime_socket = root / "containerd.sock"
        registries = root / "certs.d"
        (registries / self.registry.host).mkdir(parents=True, exist_ok=True)
        (registries / self.registry.host / "hosts.toml").write_text(registry_hosts(self.registry))
        cni_bin = binary("bridge").parent
        cni_conf = self.workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        # Pods join the cluster's bridge (made with the control plane, whose address is its .1).
        assert self.plane.network is not None
        cni = cni_config(self.plane.network.bridge, self.plane.network.subnet, self.workdir / "cni" / "ipam")
        (cni_conf / "10-rtdetr-test.conflist").write_text(json.dumps(cni))
        config = root / "config.toml"
        config.write_text(containerd_config(root, self.runtime_socket, registries, cni_bin, cni_conf, self.pause, binary("runc")))
        containerd = binary("containerd")
        env = {"PATH": f"{containerd.parent}:{cni_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        self._add("containerd", [str(containerd), "--config", str(config), "--log-level", "warn"], env)
        self.processes["containerd"].start()
        self.plane.wait_for(lambda: self.crictl("info", check=False).returncode == 0, "containerd's CRI", 60, self.processes)

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """crictl against this node's containerd, as a node's admin debugs it."""
        command = [str(binary("crictl")), "--runtime-endpoint", f"unix://{self.runtime_socket}",
                   "--image-endpoint", f"unix://{self.runtime_socket}", "--timeout", "20s", *args]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"crictl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def container_pid(self, namespace: str, pod: str, container: str) -> int:
        """The host pid of a running container's first process (e.g. to read its memory)."""
        found = self.crictl("ps", "--quiet", "--name", f"^{container}$", "--label", f"io.kubernetes.pod.namespace={namespace}",
                            "--label", f"io.kubernetes.pod.name={pod}").stdout.split()  # fmt: skip
        if len(found) != 1:
            raise RuntimeError(f"{len(found)} running containers {container} in pod {namespace}/{pod}")
        return int(json.loads(self.crictl("inspect", found[0]).stdout)["info"]["pid"])

    # -- kubelet ---------------------------------------------------------------------------------
    def _kubelet(self, address: str) -> None:
        ca = self.plane.ca
        client = ca.issue(f"kubelet-{self.name}", f"system:node:{self.name}", ("system:nodes",))
        serving = ca.issue(f"kubelet-{self.name}-serving", f"system:node:{self.name}", server=True, hosts=(address, self.name))
        kubeconfig = write_kubeconfig(self.workdir / "kubelet.kubeconfig", self.plane.server, ca.cert_file, cert=client)
        _make_cgroups(cgroup_root(os.getpid()))
        self.kubelet_port = free_port(address)
        config = kubelet_config(
            ca=ca.cert_file, cert=serving.cert, key=serving.key, runtime=self.runtime_socket, address=address,
            port=self.kubelet_port, healthz_port=free_port(), cgroup_root=cgroup_root(os.getpid()),
            cluster_dns=[addons.DNS_SERVICE_IP],
        )  # fmt: skip
        config_file = self.workdir / "kubelet.yaml"
        config_file.write_text(yaml.safe_dump(config))
        self._add("kubelet", [
            str(binary("kubelet")), f"--config={config_file}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.workdir / 'kubelet'}", f"--hostname-override={self.name}", f"--node-ip={address}",
            f"--node-labels={NODE_LABEL}=true", "--v=1",
        ])  # fmt: skip
        self.processes["kubelet"].start()

    def _ready(self) -> bool:
        node = self.plane.get(f"/api/v1/nodes/{self.name}") or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions") or [])

    def _add(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.processes[name] = Process(name, command, self.workdir / "logs" / f"{name}.log", env=env)

    def logs(self) -> dict[str, str]:
        return {name: process.tail(60) for name, process in self.processes.items()}

    # -- teardown --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stops the kubelet, then every pod (runc containers, their shims), then containerd, and
        removes what they left on the host: mounts, cgroups, the bridge."""
        for name in ("kube-proxy", "kubelet"):
            if name in self.processes:
                self.processes[name].stop()
        if "containerd" in self.processes and self.processes["containerd"].running():
            self.crictl("rmp", "--all", "--force", check=False)
        if "containerd" in self.processes:
            self.processes["containerd"].stop()
        _clean_up(self.workdir, os.getpid())


def _collection(document: dict[str, Any]) -> str:
    """The API path that creates ``document``."""
    group_version, kind = document["apiVersion"], document["kind"]
    plural = {"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
              "ConfigMap": "configmaps", "Deployment": "deployments", "Service": "services", "RoleBinding": "rolebindings",
              "APIService": "apiservices"}[kind]  # fmt: skip
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    namespace = document["metadata"].get("namespace")
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


OWNERS = Path("/run/rtdetr-edge-test-nodes")
"""One file per test process running a node (named by its pid, holding the node's workdir): what
a killed run left behind (shims, mounts, cgroups) is found and removed by the next one."""


def remove_stale() -> None:
    for owner in OWNERS.glob("*") if OWNERS.is_dir() else []:
        if owner.name.isdigit() and not alive(int(owner.name)):
            _clean_up(Path(owner.read_text().strip()), int(owner.name))


def _clean_up(workdir: Path, pid: int) -> None:
    for family in ("ip", "ip6"):  # kube-proxy's rules (one test node per machine at a time)
        subprocess.run(["nft", "delete", "table", family, "kube-proxy"], capture_output=True)
    _kill_shims(workdir)
    _unmount_under(workdir)
    _remove_cgroups(cgroup_root(pid))
    (OWNERS / str(pid)).unlink(missing_ok=True)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _kill_shims(workdir: Path) -> None:
    """containerd's shims outlive containerd by design; ours name our socket's directory."""
    for pid in _processes_mentioning(str(workdir / "containerd")):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _unmount_under(workdir: Path) -> None:
    prefix = str(workdir.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _make_cgroups(root: str) -> None:
    """The kubelet's cgroup root in every v1 hierarchy (it requires them to exist); a new
    cpuset starts empty, so it gets its parent's CPUs and memory nodes."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        if not controller.is_dir() or controller.name == "unified" or not (controller / "cgroup.procs").exists():
            continue
        top = controller / root.strip("/")
        top.mkdir(exist_ok=True)
        if controller.name == "cpuset":
            for name in ("cpuset.cpus", "cpuset.mems"):
                (top / name).write_text((controller / name).read_text())


def _remove_cgroups(root: str) -> None:
    if not root:
        return
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / root.strip("/")
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def main() -> int:
    """``make cluster``: a control plane, node-0 and the simulated GPU node, until Ctrl-C."""
    from tests.cluster.images import registry
    from tests.cluster.nodes import create_nodes

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C: the cleanup below runs
    with tempfile.TemporaryDirectory(prefix="rtdetr-edge-cluster-") as scratch, registry() as serving:
        plane = ControlPlane(Path(scratch) / "control-plane").start()
        create_nodes(plane)
        node = Node(plane, serving, Path(scratch) / "node")
        try:
            node.start()
            print(f"control plane ready in {plane.startup_seconds:.1f} s, {node.name} {node.startup_seconds:.1f} s later")
            print(f"export KUBECONFIG={plane.kubeconfig}")
            print(f"images: push to {serving.host} (plain HTTP); logs: {Path(scratch)} — Ctrl-C stops everything", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                for stop in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the cleanup short
                    signal.signal(stop, signal.SIG_IGN)
        finally:
            node.stop()
            plane.stop()
            shutil.rmtree(Path(scratch) / "node", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
