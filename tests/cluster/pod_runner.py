"""The test pod runner: the one stand-in of the test cluster, for kubelet + container runtime.

It registers the node ``runner-0`` (label ``rtdetr.io/pod-runner=true``) with a kubelet's own
credentials (``system:node:runner-0``, so Node authorization and NodeRestriction apply),
keeps its Lease and Ready condition fresh, and runs every pod the real scheduler binds to
it, for real:

- each pod gets a network namespace and its own IP on the cluster bridge (network.py);
- each container is a local process started by sandbox.py inside that namespace with its
  ``command``/``args``/``env``, as the pod's ``runAsUser``/``runAsGroup`` (+ ``fsGroup``),
  with the volumes bind-mounted at their ``mountPath``: ConfigMap/Secret/projected
  (ServiceAccount token from the TokenRequest API, ``kube-root-ca.crt``, downward API) as
  files, a PVC as the directory of its bound PersistentVolume (``hostPath``/``local``),
  ``hostPath`` under this node's root with kubelet semantics (``DirectoryOrCreate``: created
  root-owned 0755), ``emptyDir`` 0777; ``readOnlyRootFilesystem`` is honoured; the "image"
  (this machine's Python and the checkout) stays visible under a volume mounted over it (a
  checkout under /tmp), as an image's files would not live under the volume's path;
- startup/readiness/liveness probes (httpGet, tcpSocket) run against the pod IP with their
  timing fields; restarts follow ``restartPolicy`` with the kubelet's back-off (10 s doubling
  to 5 min: ``CrashLoopBackOff``);
- pod status goes back through the API: phase, conditions, podIP, containerStatuses with
  state/lastState, exit code, ``terminated.message`` from the termination-message file
  (or the log tail with ``FallbackToLogsOnError``), restartCount;
- ``kubectl logs`` works: the API server's log proxy reaches this kubelet's
  ``/containerLogs`` endpoint;
- deletion: SIGTERM, the grace period, SIGKILL, then the final delete, as a kubelet does.

Init containers run one after the other to success before the containers; a root
container keeps only the capabilities its securityContext leaves (the runtime default set,
``drop``/``add``).

Not emulated (say so rather than pretend): resource limits and cgroups (so no OOMKilled,
no CPU throttling), sidecar (restartable init) containers, exec probes, image pulls (any image runs
this machine's Python environment; images on a ``*.invalid`` registry fail to pull, to
exercise ``ErrImagePull``/``ImagePullBackOff``), ``$(VAR)`` expansion, service-link
environment variables other than ``KUBERNETES_SERVICE_*``, kube-proxy and cluster DNS
(clients use EndpointSlices and pod IPs), node-pressure eviction, a ``mountPath`` that would
be a new top-level directory.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from rtdetr_edge.dev.ports import free_port
from tests.cluster.controlplane import ControlPlane
from tests.cluster.sandbox import die_with_parent

log = logging.getLogger("pod-runner")

RUNNER_NODE = "runner-0"
TEST_GPU_RESOURCE = "example.com/gpu"
"""An extended resource this node has one of, as a node with one GPU has one nvidia.com/gpu (a
device plugin would advertise it): what the one-GPU rollout tests request."""
RUNNER_LABEL = "rtdetr.io/pod-runner"
SANDBOX = Path(__file__).resolve().parent / "sandbox.py"
REPO = Path(__file__).resolve().parents[2]
BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET = 10.0, 300.0, 600.0
TICK = 0.2
VOLUME_REFRESH_SECONDS = 2.0
# What containerd/Docker grant a container by default (before securityContext drop/add).
DEFAULT_CAPABILITIES = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})  # fmt: skip
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


class MountError(RuntimeError):
    """A volume cannot be set up yet (the kubelet's FailedMount): retried."""


class NodeClient:
    """The API as this node sees it (its own client certificate)."""

    def __init__(self, plane: ControlPlane, kubeconfig_cert: tuple[str, str]) -> None:
        self.server = plane.server
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override our CA
        self.session.cert = kubeconfig_cert
        self.session.verify = str(plane.ca.cert_file)

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             params: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        response = self.session.request(method, self.server + path, params=params, timeout=15,
                                        data=json.dumps(body) if body is not None else None,
                                        headers={"Content-Type": content_type})  # fmt: skip
        if response.status_code >= 300:
            raise ApiError(response.status_code, response.text)
        return dict(response.json()) if response.content else {}


@dataclass
class ContainerState:
    spec: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    started_monotonic: float = 0.0
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    next_start: float = 0.0
    backoff: float = BACKOFF_INITIAL
    probe_due: dict[str, float] = field(default_factory=dict)
    probe_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind → (successes, failures)
    exited_for_good: bool = False
    pull_failures: int = 0
    init: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exited_for_good and self.state.get("terminated", {}).get("exitCode") == 0

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class PodWorker(threading.Thread):
    def __init__(self, runner: PodRunner, pod: dict[str, Any]) -> None:
        super().__init__(name=f"pod-{pod['metadata']['namespace']}/{pod['metadata']['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.namespace = pod["metadata"]["namespace"]
        self.pod_name = pod["metadata"]["name"]
        self.directory = runner.state_dir / "pods" / self.uid
        self.init_containers = [ContainerState(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [ContainerState(c) for c in pod["spec"]["containers"]]
        self.pod_ip = ""
        self.netns = ""
        self.mounts: dict[str, Path] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.gone = threading.Event()
        self.last_status: dict[str, Any] | None = None
        self.start_time = now()
        self.problem: tuple[str, str] | None = None  # (reason, message) while the pod cannot start
        self._next_refresh = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.stopping.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # a runner bug must not take the test cluster down silently
            log.exception("pod %s/%s: runner failure", self.namespace, self.pod_name)

    def _run(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.netns, self.pod_ip = self.runner.network.attach(self.uid)
        while not self.stopping.is_set() and not self.gone.is_set():
            if self.problem is None or self.problem[0] in ("ContainerCreating", "FailedMount"):
                try:
                    if not self.mounts:
                        self.mounts = self._prepare_volumes()
                    self.problem = None
                except MountError as error:
                    self.problem = ("ContainerCreating", f"MountVolume.SetUp failed: {error}")
                except ApiError as error:
                    self.problem = ("ContainerCreating", f"MountVolume.SetUp failed: {error}")
            if self.problem is None:
                self._step_pod()
                self._refresh_volumes()
            self._report()
            if self._finished():
                break
            time.sleep(TICK)
        if self.gone.is_set():
            self._kill_all(grace=0)
        elif self.stopping.is_set():
            grace = int(self.pod["metadata"].get("deletionGracePeriodSeconds")
                        or self.pod["spec"].get("terminationGracePeriodSeconds", 30))  # fmt: skip
            self._kill_all(grace)
            self._report()
            try:
                self.runner.api.call("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}",
                                     {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                      "preconditions": {"uid": self.uid}})  # fmt: skip
            except ApiError as error:
                if error.status not in (404, 409):
                    log.warning("final delete of %s/%s: %s", self.namespace, self.pod_name, error)
        else:  # every container exited for good (restartPolicy Never/OnFailure): keep the pod as is
            self.gone.wait()
        self.runner.network.detach(self.uid)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.runner.forget(self.uid)

    def _finished(self) -> bool:
        return self.problem is None and (self._init_failed() or all(c.exited_for_good for c in self.containers))

    def _init_failed(self) -> bool:
        return any(c.exited_for_good and not c.succeeded for c in self.init_containers)

    def _init_containers_done(self) -> bool:
        return all(c.succeeded for c in self.init_containers)

    def _step_pod(self) -> None:
        """Init containers one after the other, each to success; then the containers."""
        pending = next((c for c in self.init_containers if not c.succeeded), None)
        if pending is not None:
            if not pending.exited_for_good:
                self._step(pending)
            return
        for container in self.containers:
            self._step(container)

    # -- containers -----------------------------------------------------------------------------
    def _step(self, container: ContainerState) -> None:
        process = container.process
        if process is None:
            if container.exited_for_good or time.monotonic() < container.next_start:
                return
            image = str(container.spec.get("image", ""))
            registry = image.split("/")[0] if "/" in image else ""
            if registry.split(":")[0].endswith(".invalid"):
                reason = "ErrImagePull" if container.pull_failures == 0 else "ImagePullBackOff"
                container.pull_failures += 1
                container.state = {"waiting": {"reason": reason, "message": f'failed to pull image "{image}": '
                                               f"dial tcp: lookup {registry}: no such host"}}  # fmt: skip
                container.next_start = time.monotonic() + BACKOFF_INITIAL
                return
            self._start(container)
            return
        code = process.poll()
        if code is None:
            self._probe(container)
            return
        self._exited(container, code)

    def _start(self, container: ContainerState) -> None:
        spec = container.spec
        if not spec.get("command"):
            container.state = {"waiting": {"reason": "CreateContainerError",
                                           "message": "the test pod runner needs an explicit command (it has no image entrypoint)"}}  # fmt: skip
            container.next_start = time.monotonic() + BACKOFF_INITIAL
            return
        try:
            plan = self._plan(container)
        except (MountError, ApiError, KeyError) as error:
            container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
            container.next_start = time.monotonic() + 2
            return
        if container.last_state:
            container.restart_count += 1  # counts restarts, not exits (as the kubelet's)
        plan_file = self.directory / f"{container.name}.plan.json"
        plan_file.write_text(json.dumps(plan))
        log_file = self._log_file(container.name, container.restart_count)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        termination = self._termination_file(container.name)
        termination.write_bytes(b"")
        termination.chmod(0o666)  # the kubelet makes it writable by any container user
        with log_file.open("ab") as output:
            container.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "--uts", sys.executable, str(SANDBOX), str(plan_file)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent,
            )
        container.started_at = now()
        container.started_monotonic = time.monotonic()
        container.state = {"running": {"startedAt": container.started_at}}
        container.ready = False
        container.started = "startupProbe" not in spec
        container.probe_counts = {}
        container.probe_due = {}

    def _exited(self, container: ContainerState, code: int) -> None:
        exit_code = code if code >= 0 else 128 - code
        message = self._termination_file(container.name).read_bytes()[:MAX_TERMINATION_MESSAGE].decode(errors="replace")
        if not message.strip() and exit_code != 0 and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = self._log_file(container.name, container.restart_count).read_bytes().decode(errors="replace").splitlines()
            message = "\n".join(lines[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "startedAt": container.started_at, "finishedAt": now(), "containerID": f"runner://{self.uid}/{container.name}"}  # fmt: skip
        if code < 0:
            terminated["signal"] = -code
        if message:
            terminated["message"] = message
        container.process = None
        container.ready = False
        policy = self.pod["spec"].get("restartPolicy", "Always")
        done = container.init and exit_code == 0  # an init container that succeeded never runs again
        if done or policy == "Never" or (policy == "OnFailure" and exit_code == 0) or self.stopping.is_set():
            container.state = {"terminated": terminated}
            container.exited_for_good = True
            return
        if time.monotonic() - container.started_monotonic > BACKOFF_RESET:
            container.backoff = BACKOFF_INITIAL
        container.last_state = {"terminated": terminated}
        container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {container.backoff:.0f}s restarting "
                                       f"failed container={container.name} pod={self.pod_name}_{self.namespace}({self.uid})"}}  # fmt: skip
        container.next_start = time.monotonic() + container.backoff
        container.backoff = min(container.backoff * 2, BACKOFF_MAX)

    def _kill_all(self, grace: float) -> None:
        live = [c for c in self.init_containers + self.containers if c.process is not None and c.process.poll() is None]
        for container in live:
            assert container.process is not None
            container.process.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for container in live:
            assert container.process is not None
            try:
                container.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                container.process.kill()
                container.process.wait()
            self._exited(container, container.process.returncode)

    # -- probes ----------------------------------------------------------------------------------
    def _probe(self, container: ContainerState) -> None:
        kinds = ["startupProbe"] if not container.started else ["livenessProbe", "readinessProbe"]
        for kind in kinds:
            probe = container.spec.get(kind)
            if probe is None:
                if kind == "readinessProbe":
                    container.ready = True
                continue
            elapsed = time.monotonic() - container.started_monotonic
            due = container.probe_due.get(kind, container.started_monotonic + float(probe.get("initialDelaySeconds", 0)))
            if time.monotonic() < due:
                continue
            container.probe_due[kind] = time.monotonic() + float(probe.get("periodSeconds", 10))
            ok = self._run_probe(container, probe)
            successes, failures = container.probe_counts.get(kind, (0, 0))
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            container.probe_counts[kind] = (successes, failures)
            threshold = int(probe.get("successThreshold", 1))
            if kind == "startupProbe" and ok:
                container.started = True
            elif kind == "readinessProbe":
                container.ready = successes >= threshold if ok else (container.ready and failures < int(probe.get("failureThreshold", 3)))
            if not ok and failures >= int(probe.get("failureThreshold", 3)) and kind != "readinessProbe":
                log.info("%s/%s %s: %s failed %d times after %.0fs, restarting", self.namespace, self.pod_name,
                         container.name, kind, failures, elapsed)  # fmt: skip
                assert container.process is not None
                container.process.send_signal(signal.SIGTERM)
                try:
                    container.process.wait(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
                except subprocess.TimeoutExpired:
                    container.process.kill()
                    container.process.wait()
                return

    def _port(self, container: ContainerState, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in container.spec.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise KeyError(f"probe port {port!r} is not a named port of container {container.name}")

    def _run_probe(self, container: ContainerState, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                scheme = str(get.get("scheme", "HTTP")).lower()
                url = f"{scheme}://{get.get('host') or self.pod_ip}:{self._port(container, get['port'])}{get.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                response = requests.get(url, timeout=timeout, headers=headers, verify=False, allow_redirects=False)
                return 200 <= response.status_code < 400
            if "tcpSocket" in probe:
                import socket

                with socket.create_connection((self.pod_ip, self._port(container, probe["tcpSocket"]["port"])), timeout):
                    return True
        except (requests.RequestException, OSError, KeyError):
            return False
        return False  # exec/grpc probes are not emulated: they never pass

    # -- volumes and the container plan -----------------------------------------------------------
    def _prepare_volumes(self) -> dict[str, Path]:
        spec = self.pod["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        prepared: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            name = volume["name"]
            target = self.directory / "volumes" / name
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
            elif "hostPath" in volume:
                target = self.runner.node_path(volume["hostPath"]["path"])
                kind = volume["hostPath"].get("type", "")
                if kind == "DirectoryOrCreate" and not target.exists():
                    target.mkdir(parents=True)
                    target.chmod(0o755)  # root-owned 0755, as the kubelet creates it
                elif kind == "Directory" and not target.is_dir():
                    raise MountError(f"hostPath type check failed: {volume['hostPath']['path']} is not a directory")
                elif kind == "FileOrCreate" and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch(0o644)
            elif "persistentVolumeClaim" in volume:
                target = self._claim_directory(volume["persistentVolumeClaim"]["claimName"])
            elif "configMap" in volume:
                self._write_files(target, self._config_map(volume["configMap"]), volume["configMap"], fs_group)
            elif "secret" in volume:
                self._write_files(target, self._secret(volume["secret"]), volume["secret"], fs_group)
            elif "projected" in volume:
                files: dict[str, bytes] = {}
                for source in volume["projected"]["sources"]:
                    files.update(self._projected(source))
                self._write_files(target, files, volume["projected"], fs_group)
            else:
                raise MountError(f"volume {name!r}: type {sorted(set(volume) - {'name'})} is not emulated")
            if fs_group is not None and ("emptyDir" in volume):
                os.chown(target, 0, int(fs_group))
            prepared[name] = target
        return prepared

    def _claim_directory(self, claim: str) -> Path:
        pvc = self.runner.api.call("GET", f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}")
        if (pvc.get("status") or {}).get("phase") != "Bound":
            raise MountError(f"persistentvolumeclaim {claim!r} is not bound")
        pv = self.runner.api.call("GET", f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise MountError(f"persistentvolume {pv['metadata']['name']}: only hostPath/local volumes are emulated")
        return Path(source["path"])

    def _config_map(self, ref: dict[str, Any]) -> dict[str, bytes]:
        try:
            found = self.runner.api.call("GET", f"/api/v1/namespaces/{self.namespace}/configmaps/{ref['name']}")
        except ApiError as error:
            if error.status == 404 and ref.get("optional"):
                return {}
            raise MountError(f'configmap "{ref["name"]}" not found') from error
        data = {k: v.encode() for k, v in (found.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (found.get("binaryData") or {}).items()})
        return data

    def _secret(self, ref: dict[str, Any]) -> dict[str, bytes]:
        try:
            found = self.runner.api.call("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{ref['secretName']}")
        except ApiError as error:
            if error.status == 404 and ref.get("optional"):
                return {}
            raise MountError(f'secret "{ref["secretName"]}" not found') from error
        return {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}

    def _projected(self, source: dict[str, Any]) -> dict[str, bytes]:
        if "serviceAccountToken" in source:
            request = source["serviceAccountToken"]
            account = self.pod["spec"].get("serviceAccountName", "default")
            body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
                "audiences": [request["audience"]] if request.get("audience") else [],
                "expirationSeconds": int(request.get("expirationSeconds", 3607)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid}}}  # fmt: skip
            token = self.runner.api.call("POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", body)
            return {request["path"]: token["status"]["token"].encode()}
        if "configMap" in source:
            return self._select(self._config_map(source["configMap"]), source["configMap"])
        if "secret" in source:
            return self._select(self._secret({**source["secret"], "secretName": source["secret"]["name"]}), source["secret"])
        if "downwardAPI" in source:
            return {item["path"]: self._field(item["fieldRef"]["fieldPath"]).encode() for item in source["downwardAPI"]["items"]}
        raise MountError(f"projected source {sorted(source)} is not emulated")

    def _refresh_volumes(self) -> None:
        """As the kubelet's sync loop does for running pods: ConfigMap and Secret volumes (whole,
        never subPath) follow their objects. Every VOLUME_REFRESH_SECONDS here; the kubelet's
        period is about a minute (its sync period plus the watch/cache delay)."""
        if time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + VOLUME_REFRESH_SECONDS
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for volume in self.pod["spec"].get("volumes") or []:
            target = self.mounts.get(volume["name"])
            try:
                if "configMap" in volume and target is not None:
                    self._write_files(target, self._config_map(volume["configMap"]), volume["configMap"], fs_group)
                elif "secret" in volume and target is not None:
                    self._write_files(target, self._secret(volume["secret"]), volume["secret"], fs_group)
            except (MountError, ApiError) as error:  # the kubelet keeps the last content too
                log.info("pod %s/%s: volume %s not refreshed: %s", self.namespace, self.pod_name, volume["name"], error)

    @staticmethod
    def _select(data: dict[str, bytes], ref: dict[str, Any]) -> dict[str, bytes]:
        if not ref.get("items"):
            return data
        return {item["path"]: data[item["key"]] for item in ref["items"] if item["key"] in data}

    def _write_files(self, target: Path, data: dict[str, bytes], ref: dict[str, Any], fs_group: Any) -> None:
        files = self._select(data, ref) if "sources" not in ref else data
        target.mkdir(parents=True, exist_ok=True)
        mode = int(ref.get("defaultMode", 0o644))
        for relative, content in files.items():
            path = target / relative
            if path.is_file() and path.read_bytes() == content:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f"..{path.name}.new")  # whole files appear at once, as the kubelet's ..data swap does
            staged.write_bytes(content)
            staged.chmod(mode)
            if fs_group is not None:
                os.chown(staged, 0, int(fs_group))
                staged.chmod(mode | 0o040)
            os.replace(staged, path)
        target.chmod(0o755)

    def _field(self, path: str) -> str:
        pod = self.pod
        simple = {
            "metadata.name": self.pod_name, "metadata.namespace": self.namespace, "metadata.uid": self.uid,
            "spec.nodeName": self.runner.node, "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": self.pod_ip, "status.hostIP": self.runner.host_ip,
        }  # fmt: skip
        if path in simple:
            return str(simple[path])
        for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
            if path.startswith(prefix + "['"):
                return str((pod["metadata"].get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
        raise KeyError(f"fieldRef {path!r} is not emulated")

    def _environment(self, container: ContainerState) -> dict[str, str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOSTNAME": self.pod_name,
            # What kube-proxy would make of the `kubernetes` Service: the API server itself.
            "KUBERNETES_SERVICE_HOST": self.runner.host_ip,
            "KUBERNETES_SERVICE_PORT": str(self.runner.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.runner.api_port),
        }
        for source in container.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._config_map({**source["configMapRef"]})
            else:
                data = self._secret({"secretName": source["secretRef"]["name"], "optional": source["secretRef"].get("optional")})
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in container.spec.get("env") or []:
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = str(item.get("value", ""))
                continue
            value_from = item["valueFrom"]
            if "fieldRef" in value_from:
                env[item["name"]] = self._field(value_from["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                env[item["name"]] = self._config_map(ref).get(ref["key"], b"").decode()
            elif "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                env[item["name"]] = self._secret({"secretName": ref["name"], "optional": ref.get("optional")}).get(ref["key"], b"").decode()
            else:
                raise KeyError(f"env {item['name']}: {sorted(value_from)} is not emulated")
        return env

    def _plan(self, container: ContainerState) -> dict[str, Any]:
        spec = container.spec
        pod_security = self.pod["spec"].get("securityContext") or {}
        security = {**pod_security, **(spec.get("securityContext") or {})}
        uid, gid = security.get("runAsUser"), security.get("runAsGroup")
        if security.get("runAsNonRoot") and uid is None:
            raise KeyError("runAsNonRoot without runAsUser: the test pod runner cannot read the image's USER")
        if security.get("runAsNonRoot") and uid == 0:
            raise KeyError("container's runAsUser breaks non-root policy")
        groups = [int(g) for g in pod_security.get("supplementalGroups") or []]
        if pod_security.get("fsGroup") is not None:
            groups.append(int(pod_security["fsGroup"]))
        mounts = []
        for mount in spec.get("volumeMounts") or []:
            source = self.mounts[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mounts.append({"source": str(source), "target": mount["mountPath"], "readOnly": bool(mount.get("readOnly"))})
        capabilities = security.get("capabilities") or {}
        dropped = {str(c).upper().removeprefix("CAP_") for c in capabilities.get("drop") or []}
        kept = set() if "ALL" in dropped else set(DEFAULT_CAPABILITIES) - dropped
        kept |= {str(c).upper().removeprefix("CAP_") for c in capabilities.get("add") or []}
        mounts.append({"source": str(self._termination_file(container.name)),
                       "target": spec.get("terminationMessagePath", "/dev/termination-log"), "readOnly": False})  # fmt: skip
        return {
            "image_paths": sorted({sys.prefix, sys.base_prefix, str(REPO)}),
            "mounts": mounts,
            "read_only_root": bool(security.get("readOnlyRootFilesystem")),
            "capabilities": sorted(kept),
            "no_new_privileges": security.get("allowPrivilegeEscalation") is False,
            "uid": None if uid is None else int(uid),
            "gid": None if uid is None else int(gid if gid is not None else uid),
            "groups": groups,
            "cwd": spec.get("workingDir") or "/",
            "hostname": self.pod_name[:63],
            "env": self._environment(container),
            "argv": [*spec["command"], *(spec.get("args") or [])],
        }

    def _log_file(self, container: str, restart: int) -> Path:
        return self.directory / "logs" / container / f"{restart}.log"

    def _termination_file(self, container: str) -> Path:
        return self.directory / f"{container}.termination-log"

    def read_log(self, container: str, previous: bool) -> bytes:
        state = next((c for c in self.init_containers + self.containers if c.name == container), None)
        if state is None:
            raise KeyError(container)
        restart = state.restart_count - (1 if previous else 0)
        path = self._log_file(container, restart)
        return path.read_bytes() if restart >= 0 and path.exists() else b""

    # -- status -----------------------------------------------------------------------------------
    def _statuses(self, containers: list[ContainerState]) -> list[dict[str, Any]]:
        statuses = []
        for container in containers:
            status = {"name": container.name, "image": container.spec.get("image", ""), "imageID": "",
                      "ready": container.ready, "started": container.process is not None and container.started,
                      "restartCount": container.restart_count, "state": container.state}  # fmt: skip
            if container.process is not None or container.exited_for_good:
                status["containerID"] = f"runner://{self.uid}/{container.name}"
            if container.last_state:
                status["lastState"] = container.last_state
            if self.problem is not None and container.process is None and not container.exited_for_good:
                status["state"] = {"waiting": {"reason": self.problem[0], "message": self.problem[1]}}
            elif not container.init and not self._init_containers_done() and container.process is None:
                status["state"] = {"waiting": {"reason": "PodInitializing"}}
            statuses.append(status)
        return statuses

    def _report(self) -> None:
        statuses = self._statuses(self.containers)
        terminated = [c.state.get("terminated") for c in self.containers]
        initialized = self._init_containers_done()
        if self._init_failed():
            phase = "Failed"
        elif not initialized:
            phase = "Pending"
        elif all(terminated):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in terminated if t) else "Failed"
        elif any(c.process is not None for c in self.containers) or any(c.restart_count for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        ready = all(c.ready for c in self.containers)
        condition_time = now()
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True" if self.pod_ip else "False"},
            {"type": "Initialized", "status": "True" if initialized else "False",
             **({} if initialized else {"reason": "ContainersNotInitialized"})},
            {"type": "ContainersReady", "status": "True" if ready else "False",
             **({} if ready else {"reason": "ContainersNotReady"})},
            {"type": "Ready", "status": "True" if ready else "False", **({} if ready else {"reason": "ContainersNotReady"})},
        ]  # fmt: skip
        status: dict[str, Any] = {
            "phase": phase, "podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}], "hostIP": self.runner.host_ip,
            "hostIPs": [{"ip": self.runner.host_ip}], "startTime": self.start_time, "containerStatuses": statuses,
        }  # fmt: skip
        if self.init_containers:
            status["initContainerStatuses"] = self._statuses(self.init_containers)
        comparable = json.dumps([status, conditions], sort_keys=True)
        if comparable == self.last_status:
            return
        previous = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        for condition in conditions:
            old = previous.get(condition["type"])
            same = old is not None and old.get("status") == condition["status"]
            condition["lastTransitionTime"] = old.get("lastTransitionTime", condition_time) if same and old else condition_time
        try:
            patched = self.runner.api.call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                                           {"status": {**status, "conditions": conditions}},
                                           "application/strategic-merge-patch+json")  # fmt: skip
            with self.lock:
                self.pod = patched
            self.last_status = comparable
        except (ApiError, requests.RequestException) as error:
            if isinstance(error, ApiError) and error.status == 404:
                self.gone.set()
            else:
                log.debug("status of %s/%s not written yet: %s", self.namespace, self.pod_name, error)


class KubeletHandler(http.server.BaseHTTPRequestHandler):
    """``/containerLogs/<namespace>/<pod>/<container>``: what the API server's log proxy calls."""

    runner: PodRunner

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urllib.parse.urlparse(self.path)
        parts = url.path.strip("/").split("/")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404)
            return
        worker = self.runner.find(parts[1], parts[2])
        try:
            if worker is None:
                raise KeyError(parts[2])
            text = worker.read_log(parts[3], query.get("previous") == "true")
        except KeyError:
            self.send_error(404, f"pod or container not found: {url.path}")
            return
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = b"".join(lines[-int(query["tailLines"]) :]) if int(query["tailLines"]) > 0 else b""
        if "limitBytes" in query:
            text = text[: int(query["limitBytes"])]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("kubelet api: " + format, *args)


class PodRunner:
    def __init__(self, plane: ControlPlane, node: str = RUNNER_NODE) -> None:
        self.plane = plane
        self.node = node
        self.state_dir = plane.workdir / "nodes" / node
        assert plane.network is not None
        self.network = plane.network
        self.host_ip = plane.network.gateway
        self.api_port = int(plane.server.rsplit(":", 1)[1])
        kubeconfig_cert = plane.ca.issue(f"kubelet-{node}", f"system:node:{node}", ("system:nodes",))
        self.api = NodeClient(plane, (str(kubeconfig_cert.cert), str(kubeconfig_cert.key)))
        self.workers: dict[str, PodWorker] = {}
        self.workers_lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    def node_path(self, path: str) -> Path:
        """Where a hostPath of this node lives on the machine (each node has its own root)."""
        return self.state_dir / "root" / path.lstrip("/")

    def find(self, namespace: str, name: str) -> PodWorker | None:
        with self.workers_lock:
            return next((w for w in self.workers.values() if (w.namespace, w.pod_name) == (namespace, name)), None)

    def forget(self, uid: str) -> None:
        with self.workers_lock:
            self.workers.pop(uid, None)

    # -- node ---------------------------------------------------------------------------------------
    def _node_status(self) -> dict[str, Any]:
        stamp = now()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory // 1024}Ki", "pods": "110", "ephemeral-storage": "100Gi",
                    TEST_GPU_RESOURCE: "1"}  # fmt: skip
        conditions = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "lastHeartbeatTime": stamp,
                       "lastTransitionTime": self.registered_at}
                      for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                   ("PIDPressure", "SufficientPID"))]  # fmt: skip
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test pod runner is posting ready status",
                           "lastHeartbeatTime": stamp, "lastTransitionTime": self.registered_at})  # fmt: skip
        return {
            "capacity": capacity, "allocatable": capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.host_ip}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                         "osImage": "rtdetr-edge test pod runner", "containerRuntimeVersion": "runner://1",
                         "kubeletVersion": "v0.0.0-pod-runner", "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }  # fmt: skip

    def _register(self) -> None:
        self.registered_at = now()
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            RUNNER_LABEL: "true"}}, "spec": {}, "status": self._node_status()}  # fmt: skip
        try:
            self.api.call("POST", "/api/v1/nodes", node)
        except ApiError as error:
            if error.status != 409:
                raise
        self._heartbeat()

    def _heartbeat(self) -> None:
        self.api.call("PATCH", f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()},
                      "application/strategic-merge-patch+json")  # fmt: skip
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        renew = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.api.call("PATCH", lease_path, {"spec": {"renewTime": renew, "holderIdentity": self.node}},
                          "application/merge-patch+json")  # fmt: skip
        except ApiError as error:
            if error.status != 404:
                raise
            self.api.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": renew}})  # fmt: skip

    def _heartbeats(self) -> None:
        while not self.stopped.wait(10):
            try:
                self._heartbeat()
            except (ApiError, requests.RequestException) as error:
                log.debug("heartbeat failed (API down?): %s", error)

    # -- kubelet API ------------------------------------------------------------------------------------
    def _serve_kubelet_api(self) -> None:
        pair = self.plane.ca.issue(f"kubelet-serving-{self.node}", f"system:node:{self.node}", ("system:nodes",),
                                   server=True, hosts=(self.host_ip,))  # fmt: skip
        handler = type("Handler", (KubeletHandler,), {"runner": self})
        self.kubelet_server = http.server.ThreadingHTTPServer((self.host_ip, self.kubelet_port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(pair.cert), str(pair.key))
        self.kubelet_server.socket = context.wrap_socket(self.kubelet_server.socket, server_side=True)
        self.kubelet_server.serve_forever(poll_interval=0.5)

    # -- pods ---------------------------------------------------------------------------------------------
    def _sync(self, pod: dict[str, Any], deleted: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        with self.workers_lock:
            worker = self.workers.get(uid)
            if worker is None and not deleted:
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return  # finished before this runner started (a runner restart): nothing to run
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
                return
        if worker is not None:
            if deleted:
                worker.gone.set()
            else:
                worker.update(pod)

    def _watch(self) -> None:
        selector = f"spec.nodeName={self.node}"
        while not self.stopped.is_set():
            try:
                listed = self.api.call("GET", "/api/v1/pods", params={"fieldSelector": selector})
                seen = {p["metadata"]["uid"] for p in listed["items"]}
                with self.workers_lock:
                    vanished = [w for uid, w in self.workers.items() if uid not in seen]
                for worker in vanished:
                    worker.gone.set()
                for pod in listed["items"]:
                    self._sync(pod)
                version = listed["metadata"]["resourceVersion"]
                response = self.api.session.get(self.api.server + "/api/v1/pods", stream=True, timeout=(10, 330), params={
                    "fieldSelector": selector, "watch": "1", "resourceVersion": version, "timeoutSeconds": "300"})  # fmt: skip
                for line in response.iter_lines():
                    if self.stopped.is_set():
                        return
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break  # 410 Gone and friends: list again
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._sync(event["object"], deleted=event["type"] == "DELETED")
            except (requests.RequestException, ApiError, ValueError) as error:
                log.debug("pod watch interrupted (API restarting?): %s", error)
                self.stopped.wait(1)

    def start(self) -> PodRunner:
        self.kubelet_port = free_port(self.host_ip)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        server = threading.Thread(target=self._serve_kubelet_api, name="kubelet-api", daemon=True)
        server.start()
        self._register()
        for target in (self._heartbeats, self._watch):
            thread = threading.Thread(target=target, name=f"runner-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopped.set()
        with self.workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.gone.set()
        for worker in workers:
            worker.join(20)
        if hasattr(self, "kubelet_server"):
            self.kubelet_server.shutdown()
