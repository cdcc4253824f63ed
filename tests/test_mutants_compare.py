"""fqlower.compare, down to the exact answer: tests written against mutmut's
survivors in fqlower.compare (`make mutation`, docs/mutation.md).

Graphs that differ only in their input names have the same shape, and a snapshot
sees a module's unreadable packed weight replaced by another one (by identity,
since it cannot be read back to be compared). `values_equal` is exact, and compares
item by item only two containers of one kind: a packed weight equals only a packed
weight, any other mixed pair goes to its own `==`, and a failing `==` means unequal.
"""

from __future__ import annotations

from collections import UserList

import torch
import torch.fx
import torch.nn as nn
from test_pass_functionals import dynamic_linear_over, unreadable_packed_weight

from fqlower.compare import ModelSnapshot, graph_differences, graph_shape, module_type_differences, module_types, values_equal


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


# --- values_equal: exactness and the pairs it has no rule for ----------------------------------------


def test_float_tensors_must_be_bit_identical_not_merely_close():
    assert not values_equal(torch.tensor([0.0]), torch.tensor([1e-9]))  # within allclose's default atol
    assert values_equal(torch.tensor([float("nan"), 1.0]), torch.tensor([float("nan"), 1.0]))


class ClaimsEqualityWithAnything:
    def __eq__(self, other):
        return True

    __hash__ = None


def test_a_packed_weight_equals_only_a_packed_weight_whatever_the_other_value_claims():
    packed = unreadable_packed_weight()
    assert values_equal(packed, packed)
    assert not values_equal(ClaimsEqualityWithAnything(), packed)
    assert not values_equal(packed, ClaimsEqualityWithAnything())


def test_a_container_and_a_value_of_another_kind_are_compared_by_their_own_equality():
    # item by item only when both sides are tuples or lists (of one type); any other pair is
    # compared with ==, as a list-like that is no list says whether it equals a list
    assert values_equal([1, 2], UserList([1, 2])) and values_equal(UserList([1, 2]), [1, 2])
    assert not values_equal([1, 2], UserList([1, 3]))
    assert not values_equal((1, 2), [1, 2])


def test_a_mapping_and_a_value_that_is_no_mapping_are_unequal():
    assert not values_equal({"w": 1}, 1)
    assert not values_equal(1, {"w": 1})
    assert not values_equal({"w": 1}, [("w", 1)])


class RefusesComparison:
    def __eq__(self, other):
        raise TypeError("cannot compare")

    __hash__ = None


def test_values_that_cannot_be_compared_are_unequal():
    assert not values_equal(RefusesComparison(), RefusesComparison())
    assert not values_equal(1, RefusesComparison())


# --- module types: every path, a module shared by two included ------------------------------------------


def shared_activation(second=None) -> nn.Module:
    model = nn.Module()
    model.first = nn.ReLU()
    model.second = second if second is not None else model.first  # the same module at a second path
    return model


def test_module_types_list_a_shared_module_at_every_path_it_is_reached_by():
    assert module_types(shared_activation()) == {"first": nn.ReLU, "second": nn.ReLU}
    assert module_type_differences(shared_activation(), shared_activation(nn.Tanh())) == [
        f"module at 'second': {nn.ReLU} vs {nn.Tanh}"
    ]
