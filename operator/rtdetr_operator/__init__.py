"""The rtdetr-edge control plane: a kopf operator reconciling ``rtdetr.io/v1alpha1`` RTDETRModels.

Layers (checked by tests/operator/test_layers.py): ``settings``, ``names``,
``conditions``, ``manifests`` and ``reconcile`` are pure and never import the I/O
edges (``kube``, ``handlers``, ``main``).
"""

GROUP = "rtdetr.io"
VERSION = "v1alpha1"
PLURAL = "rtdetrmodels"
