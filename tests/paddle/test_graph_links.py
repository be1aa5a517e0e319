"""ACT's faster graph links (:mod:`rtdetr_edge.graph_links`) do what Paddle's ``IrGraph.link_to`` does."""

from __future__ import annotations

import ast
import inspect
import textwrap

from rtdetr_edge.graph_links import link_unchecked, unchecked_graph_links
from rtdetr_edge.paddle_import import import_paddle


def _ir_graph() -> object:
    paddle = import_paddle()
    from paddle.base import core
    from paddle.base.framework import IrGraph

    paddle.enable_static()
    try:
        program = paddle.static.Program()
        with paddle.static.program_guard(program):
            x = paddle.static.data("x", [1, 4], "float32")
            paddle.nn.functional.relu(x)
        return IrGraph(core.Graph(program.desc), for_test=True)
    finally:
        paddle.disable_static()


def test_paddles_link_to_is_two_appends_and_checks() -> None:
    """Canary for the pin: if Paddle's ``link_to`` ever does more than link, this must be re-checked."""
    from paddle.base.framework import IrGraph

    function = ast.parse(textwrap.dedent(inspect.getsource(IrGraph.link_to))).body[0]
    assert isinstance(function, ast.FunctionDef)
    body = [node for node in function.body if not isinstance(node, ast.Assert)]
    body = [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert [ast.unparse(node) for node in body] == ["node_in.append_output(node_out)", "node_out.append_input(node_in)"]


def test_unchecked_links_connect_the_same_nodes_and_are_restored() -> None:
    from paddle.base.framework import IrGraph

    original = IrGraph.link_to
    graph = _ir_graph()
    op = next(iter(graph.all_op_nodes()))
    output = op.outputs[0]
    new_var = graph.create_var_node(name="extra", var_type=output.type(), shape=[1, 4], var_dtype=output.dtype())
    with unchecked_graph_links():
        assert IrGraph.link_to is link_unchecked
        graph.link_to(op, new_var)
    assert IrGraph.link_to is original
    assert "extra" in [node.name() for node in op.outputs]
    assert op.name() in [node.name() for node in new_var.inputs]
