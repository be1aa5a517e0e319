"""The test pod runner behaves as a kubelet would where the operator depends on it: the pod's
user, its volumes' ownership and modes, a read-only root, the termination message, restart
back-off, its own IP, and logs through the API server. (If the stand-in drifts from a real
kubelet, the operator tier proves less; these pin what it must do.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from .conftest import REPO, Cluster

RUNNER = {"rtdetr.io/pod-runner": "true"}


def pod(name: str, script: str, restart: str = "Never", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeSelector": RUNNER, "restartPolicy": restart,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "main", "image": "python", "command": ["python", "-c", script],
                            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": spec.pop("mounts", [])}],
            **spec,
        },
    }  # fmt: skip


def finished(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        found = cluster.get(f"/api/v1/namespaces/{namespace}/pods/{name}") or {}
        return found if found.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    return dict(cluster.wait(state, 60, f"pod {name} finished"))


def test_user_volumes_and_read_only_root(cluster: Cluster) -> None:
    namespace = cluster.namespace(pod_security="privileged")  # hostPath is forbidden from "baseline" up
    script = "\n".join([
        "import os, socket, stat",
        "def mode(p): s = os.stat(p); return f'{p} {s.st_uid}:{s.st_gid} {stat.S_IMODE(s.st_mode):o}'",
        "print('user', os.getuid(), os.getgid(), sorted(os.getgroups()))",
        "print('hostname', socket.gethostname())",
        "for p in ('/var/cache/rtdetr-edge', '/tmp'): print('mode', mode(p))",
        "open('/tmp/ok', 'w').write('1')",
        "for p in ('/var/cache/rtdetr-edge/x', '/usr/x'):",
        "    try: open(p, 'w')",
        "    except OSError as e: print('denied', p, e.strerror)",
        "open('/dev/termination-log', 'w').write('the end')",
        "raise SystemExit(3)",
    ])  # fmt: skip
    document = pod("probe-fs", script, mounts=[{"name": "cache", "mountPath": "/var/cache/rtdetr-edge"},
                                                {"name": "scratch", "mountPath": "/tmp"}],
                   volumes=[{"name": "cache", "hostPath": {"path": "/var/cache/rtdetr-edge-runner-test", "type": "DirectoryOrCreate"}},
                            {"name": "scratch", "emptyDir": {}}])  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    done = finished(cluster, namespace, "probe-fs")
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    log = cluster.kubectl("logs", "-n", namespace, "probe-fs").stdout
    assert done["status"]["phase"] == "Failed" and terminated["exitCode"] == 3 and terminated["message"] == "the end", log
    assert not done["status"]["podIP"].startswith("127.")
    assert "user 10001 10001 [10001]" in log and "hostname probe-fs" in log, log
    assert "mode /var/cache/rtdetr-edge 0:0 755" in log, "hostPath DirectoryOrCreate: root-owned 0755, as the kubelet makes it"
    assert "mode /tmp 0:10001 777" in log, "emptyDir: world-writable, fsGroup-owned"
    assert "denied /var/cache/rtdetr-edge/x Permission denied" in log and "denied /usr/x Read-only file system" in log, log


def test_crash_loop_back_off_and_previous_logs(cluster: Cluster) -> None:
    namespace = cluster.namespace(pod_security="baseline")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod("crasher", "print('boom'); raise SystemExit(1)", "Always")))

    def backing_off() -> dict[str, Any] | None:
        found = cluster.get(f"/api/v1/namespaces/{namespace}/pods/crasher") or {}
        statuses = found.get("status", {}).get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting", {})
        return statuses[0] if waiting.get("reason") == "CrashLoopBackOff" and statuses[0].get("restartCount", 0) >= 1 else None

    status = cluster.wait(backing_off, 60, "CrashLoopBackOff after a restart")
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert "boom" in cluster.kubectl("logs", "-n", namespace, "crasher", "--previous").stdout


def test_init_container_runs_first_as_root_with_only_its_capabilities(cluster: Cluster) -> None:
    """The hostPath engine-cache pattern: a root init container with CAP_CHOWN only hands the
    directory to the serving user; then the container runs as that user."""
    namespace = cluster.namespace(pod_security="privileged")
    document = pod("with-init", "import os; open('/var/cache/rtdetr-edge/ok', 'w').write('1'); print('main wrote', os.getuid())",
                   mounts=[{"name": "cache", "mountPath": "/var/cache/rtdetr-edge"}],
                   volumes=[{"name": "cache", "hostPath": {"path": "/var/cache/rtdetr-edge-init-test", "type": "DirectoryOrCreate"}}])  # fmt: skip
    script = "\n".join([
        "import os",
        "os.chown('/var/cache/rtdetr-edge', 10001, 10001)",
        "try: os.chmod('/var/cache/rtdetr-edge', 0o700)  # now 10001's: needs CAP_FOWNER",
        "except OSError as e: print('chmod', e.strerror)",
        "print('init ran as', os.getuid())",
    ])  # fmt: skip
    document["spec"]["initContainers"] = [{
        "name": "owner", "image": "python", "command": ["python", "-c", script],
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
        "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/rtdetr-edge"}],
    }]  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    done = finished(cluster, namespace, "with-init")
    init_log = cluster.kubectl("logs", "-n", namespace, "with-init", "-c", "owner").stdout
    main_log = cluster.kubectl("logs", "-n", namespace, "with-init", "-c", "main").stdout
    assert done["status"]["phase"] == "Succeeded", (init_log, main_log)
    assert "init ran as 0" in init_log and "chmod Operation not permitted" in init_log, "root without CAP_FOWNER"
    assert "main wrote 10001" in main_log
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_a_volume_over_the_checkouts_directory_does_not_hide_the_image(cluster: Cluster) -> None:
    """The stand-in runs this machine's Python and checkout as the "image": an emptyDir mounted
    over the directory holding them (a checkout under /tmp, the Job's scratch at /tmp) must not
    hide them, and the volume stays the pod's, empty and writable."""
    namespace = cluster.namespace()
    top = Path("/", REPO.parts[1])  # /tmp for a checkout under /tmp
    script = "\n".join([
        "import os, sys",
        f"open({str(top / 'written-by-pod')!r}, 'w').write('1')",
        f"print('entries', sorted(e for e in os.listdir({str(top)!r}) if e != 'written-by-pod'))",
        "print('python', sys.prefix)",
    ])  # fmt: skip
    document = pod("covered-image", script, mounts=[{"name": "scratch", "mountPath": str(top)}],
                   volumes=[{"name": "scratch", "emptyDir": {}}])  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    done = finished(cluster, namespace, "covered-image")
    logs = cluster.kubectl("logs", "-n", namespace, "covered-image").stdout
    assert done["status"]["phase"] == "Succeeded", (done["status"], logs)
    assert f"python {sys.prefix}" in logs
    visible = {Path(p).relative_to(top).parts[0] for p in (sys.prefix, sys.base_prefix, REPO) if top in Path(p).parents}
    assert f"entries {sorted(visible)}" in logs, logs
