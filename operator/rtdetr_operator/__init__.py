"""The rtdetr-edge control plane: a kopf operator reconciling ``rtdetr.io/v1alpha1`` RTDETRModels.

Layers (checked by tests/operator/test_manifests.py::test_pure_core_never_imports_the_edges):
``settings``, ``names``, ``conditions``, ``manifests``, ``exporter``, ``pod_status``, ``drift``
and ``reconcile`` are pure and never import the I/O edges (``kube``, ``handlers``, ``main``).
"""

from rtdetr_edge.api.spec import GROUP, PLURAL, VERSION

__all__ = ["GROUP", "PLURAL", "VERSION"]
