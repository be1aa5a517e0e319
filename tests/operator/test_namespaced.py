"""The chart in namespaced mode (``watchNamespaces``): Roles and RoleBindings only, and the
operator reconciles exactly the listed namespaces."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .conftest import TEST_VALUES, Cluster, OperatorRelease, load_sample

STATUS_WITHIN = 60


@pytest.fixture(scope="module")
def watched(cluster: Cluster) -> Iterator[tuple[OperatorRelease, str, str]]:
    inside, outside = cluster.namespace(pod_security="baseline"), cluster.namespace(pod_security="baseline")
    for namespace in (inside, outside):
        for claim in ("models", "datasets", "rtdetr-artifacts"):
            cluster.volume(namespace, claim, cluster.workdir / "namespaced" / namespace / claim)
    release = OperatorRelease(cluster, name="scoped", namespace="rtdetr-scoped")
    # Its CPU images come from a registry that does not resolve: pulls fail as on an air-gapped
    # node without the mirror.
    # A second release (another team's operator) leaves the CRD to the first one.
    release.install({**TEST_VALUES, "watchNamespaces": [inside], "crds": {"enabled": False},
                     "images": {"runtimeCpu": {"registry": "registry.invalid"}}})  # fmt: skip
    try:
        yield release, inside, outside
    finally:
        release.uninstall()


def test_only_the_watched_namespace_is_reconciled(cluster: Cluster, watched: tuple[OperatorRelease, str, str]) -> None:
    release, inside, outside = watched
    for namespace in (inside, outside):
        document = load_sample("rtdetr-r50.yaml")
        document["metadata"]["namespace"] = namespace
        cluster.apply(document)
    cluster.wait_condition(inside, "rtdetr-r50", "Quantized", "Unknown", "JobRunning", timeout=STATUS_WITHIN)
    time.sleep(5)
    # Only the CRD's default status (never reconciled), no conditions, no children.
    assert cluster.model(outside, "rtdetr-r50").get("status") == {"observedGeneration": 0}, "an unwatched namespace is left alone"
    assert not cluster.jobs(outside)
    log = release.log()
    assert "forbidden" not in log.lower(), [line for line in log.splitlines() if "orbidden" in line][:3]


def test_namespaced_mode_grants_no_cluster_role(cluster: Cluster, watched: tuple[OperatorRelease, str, str]) -> None:
    release, inside, outside = watched
    account = f"system:serviceaccount:{release.namespace}:{release.name}-rtdetr-edge"
    can = lambda verb, resource, namespace: cluster.kubectl(  # noqa: E731
        "auth", "can-i", verb, resource, "-n", namespace, "--as", account, check=False).stdout.strip()  # fmt: skip
    assert can("create", "jobs.batch", inside) == "yes"
    assert can("create", "jobs.batch", outside) == "no"
    assert can("list", "rtdetrmodels.rtdetr.io", outside) == "no"
    bindings = cluster.items("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", f"app.kubernetes.io/instance={release.name}")
    assert bindings == []


def test_image_pull_failure_is_reported(cluster: Cluster, watched: tuple[OperatorRelease, str, str]) -> None:
    _, inside, _ = watched
    document = load_sample("demo-shapes.yaml")
    document["metadata"]["namespace"] = inside
    cluster.apply(document)
    quantized = cluster.wait(lambda: (c := cluster.condition(inside, "shapes-demo", "Quantized")) and
                             c["reason"] in ("ErrImagePull", "ImagePullBackOff") and c, STATUS_WITHIN, "the pull failure in status")  # fmt: skip
    # The kubelet's own words (containerd's resolver could not find the registry).
    assert 'failed to pull and unpack image "registry.invalid/' in quantized["message"], quantized["message"]
    assert "no such host" in quantized["message"], quantized["message"]
    assert cluster.condition(inside, "shapes-demo", "Ready")["status"] == "False"  # type: ignore[index]
