"""fqlower.compare, down to the exact answer: tests written against mutmut's
survivors in fqlower.compare (`make mutation`, docs/mutation.md).

Graphs that differ only in their input names have the same shape, and a snapshot
sees a module's unreadable packed weight replaced by another one (by identity,
since it cannot be read back to be compared).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
from test_pass_functionals import dynamic_linear_over, unreadable_packed_weight

from fqlower.compare import ModelSnapshot, graph_differences, graph_shape


def one_input_graph(input_name: str) -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    x = graph.placeholder(input_name)
    graph.output(graph.call_function(torch.neg, (x,)))
    return torch.fx.GraphModule(nn.Module(), graph)


def test_graphs_that_differ_only_in_their_input_names_have_the_same_shape():
    a, b = one_input_graph("x"), one_input_graph("images")
    assert graph_shape(a) == graph_shape(b)
    assert graph_differences(a, b) == []
    assert graph_shape(a)[0][:2] == ("placeholder", repr("placeholder"))


def test_a_snapshot_sees_an_unreadable_packed_weight_replaced_by_another():
    gm = dynamic_linear_over(unreadable_packed_weight())
    snapshot = ModelSnapshot.of(gm)
    assert snapshot.differences(gm) == []
    gm.packed = unreadable_packed_weight()  # the same values, another object
    assert snapshot.differences(gm) == ["configuration changed"]
