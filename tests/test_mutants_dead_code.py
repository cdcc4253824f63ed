"""Dead-code elimination, down to the nodes it keeps and the changes it records: tests
written against mutmut's survivors in fqlower.passes.dead_code (`make mutation`,
docs/mutation.md).

The reference is torch.fx's own `Graph.eliminate_dead_code`: each graph below holds one
unused node of one kind, and fqlower must keep exactly the nodes torch keeps (in-place,
random and effectful call_functions, modules marked `_is_impure`; never a call_method).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
import torch.nn as nn

import fqlower
from fqlower import Change, FrozenDict, RemoveNode
from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE


class Impure(nn.Module):
    """A module torch.fx must not remove unused: it says so with `_is_impure`."""

    _is_impure = True

    def forward(self, x):
        return x


def one_unused(op, target, *args, **kwargs) -> torch.fx.GraphModule:
    """x; an unused node `unused` (op, target, args with "x" standing for x); output x."""
    root = nn.Module()
    root.impure = Impure()
    root.act = nn.ReLU()
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    args = tuple(x if arg == "x" else arg for arg in args)
    graph.create_node(op, target, args, kwargs, name="unused")
    graph.output(x)
    return torch.fx.GraphModule(root, graph)


def kept_by_torch(gm: torch.fx.GraphModule) -> list[str]:
    reference = copy.deepcopy(gm)
    reference.graph.eliminate_dead_code()
    return [node.name for node in reference.graph.nodes]


def kept_by_fqlower(gm: torch.fx.GraphModule) -> list[str]:
    return [node.name for node in ELIMINATE_DEAD_CODE.run(fqlower.from_fx(gm)).program.nodes()]


@pytest.mark.parametrize(
    "node, kept",
    [
        (("call_function", torch.neg, "x"), False),
        (("call_function", torch.ops.aten.add_.Tensor, "x", 1), True),  # mutates its input (mutable schema)
        (("call_function", torch.rand, 2), True),  # draws from the global generator
        (("call_function", torch._assert, True, "checked"), True),  # a side-effectful function
        # a functionalized call of a side-effectful op: torch reads the op from the call's first argument
        (("call_function", torch.ops.higher_order.auto_functionalized, torch.ops.aten._assert_async.msg), True),
        (("call_module", "impure", "x"), True),
        (("call_module", "act", "x"), False),
        (("call_method", "add_", "x", 1), False),  # call_method nodes are never impure, in-place or not
    ],
    ids=["pure-function", "in-place-op", "random", "effectful", "functionalized-effectful", "impure-module", "pure-module",
         "in-place-method"],
)
def test_an_unused_node_is_kept_exactly_when_torch_fx_keeps_it(node, kept):
    gm = one_unused(*node)
    expected = ["x", "unused", "output"] if kept else ["x", "output"]
    assert kept_by_torch(gm) == expected
    assert kept_by_fqlower(gm) == expected


def test_each_removed_node_is_one_change_of_the_pass_recorded_last_user_first():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    first = graph.create_node("call_function", torch.neg, (x,), name="first")
    graph.create_node("call_function", torch.sigmoid, (first,), name="second")  # unused, and the only user of first
    graph.output(x)
    result = ELIMINATE_DEAD_CODE.run(fqlower.from_fx(torch.fx.GraphModule(nn.Module(), graph)))
    # step 0, as every pass run on its own records (a pipeline stamps its own step)
    assert result.entries == tuple(
        Change(0, "eliminate-dead-code", "dead-code", name, FrozenDict(), (RemoveNode(name),)) for name in ("second", "first")
    )
    assert [node.name for node in result.program.nodes()] == ["x", "output"]
