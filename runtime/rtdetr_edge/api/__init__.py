"""The RTDETRModel API and the operator ↔ Job contract, typed (pydantic only).

``spec``: the resource's spec; ``status``: what the operator reports; ``crd``: the CRD generated
from both (``python -m rtdetr_edge.api.crd``).
"""
