"""PaddleSlim ACT's graph passes without Paddle's quadratic link checks.

Every edge the quantization passes add goes through ``IrGraph.link_to``, whose two
``assert node in self.graph.nodes()`` copy the whole graph into a new Python set — per
edge. Profiled on the real RT-DETR-R18 graph (ACT, 2 training iterations, 588 s in all):
22,105 links spent 342 s in those asserts, before the first training step. The passes link
nodes they took from the graph or just created in it, so the checks cannot fail there.

:func:`unchecked_graph_links` links the same two nodes the same way, without the checks,
for the duration of a quantization only (Paddle is pinned: 2.6.2;
``tests/paddle/test_graph_links.py`` fails if its ``link_to`` changes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def link_unchecked(graph: Any, node_in: Any, node_out: Any) -> None:
    """``IrGraph.link_to`` minus its two whole-graph membership asserts."""
    node_in.append_output(node_out)
    node_out.append_input(node_in)


@contextmanager
def unchecked_graph_links() -> Iterator[None]:
    """Within the block, ``IrGraph.link_to`` is :func:`link_unchecked` (restored after)."""
    from paddle.base.framework import IrGraph

    original = IrGraph.link_to
    IrGraph.link_to = link_unchecked
    try:
        yield
    finally:
        IrGraph.link_to = original
