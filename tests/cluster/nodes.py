"""The test cluster's simulated nodes (kwok plays them; nothing runs on them).

- ``gpu-0``: an NVIDIA GPU node as the device plugin and GPU operator present one: capacity
  ``nvidia.com/gpu`` (16, with 64 CPUs and 512 GiB: several tests' Jobs share it), label
  ``nvidia.com/gpu.present=true``, taint ``nvidia.com/gpu:NoSchedule``.

The one CPU node whose pods really run, ``node-0``, is registered by its real kubelet (tests/cluster/node.py).
"""

from __future__ import annotations

from typing import Any

from tests.cluster.controlplane import KWOK_LABEL, ControlPlane

GPU_NODE = "gpu-0"
GPU_LABEL = "nvidia.com/gpu.present"
GPU_RESOURCE = "nvidia.com/gpu"


def gpu_node(name: str = GPU_NODE, gpus: int = 16) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                KWOK_LABEL[0]: KWOK_LABEL[1],
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                GPU_LABEL: "true",
                "nvidia.com/gpu.product": "Tesla-T4",
            },
        },
        "spec": {"taints": [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", GPU_RESOURCE: str(gpus)},
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", GPU_RESOURCE: str(gpus)},
        },
    }


def create_nodes(plane: ControlPlane, gpu: bool = True) -> None:
    session = plane.session()
    if gpu:
        response = session.post(f"{plane.server}/api/v1/nodes", json=gpu_node(), timeout=10)
        if response.status_code not in (201, 409):
            raise RuntimeError(f"creating node {GPU_NODE}: {response.status_code} {response.text}")
