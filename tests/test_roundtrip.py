"""`to_fx(from_fx(m))` is `m` again, for every reference model and float graph in the zoo.

Same graph (node names included), same module types at the same paths, the same
state_dict keys and values, bit-identical outputs, same fingerprint — and the
input provably unchanged.
"""

from __future__ import annotations

import copy

import pytest
import torch
import zoo

import fqlower
from fqlower.compare import (
    ModelSnapshot,
    graph_differences,
    module_type_differences,
    state_dict_differences,
    values_equal,
)


@pytest.fixture(scope="module", params=zoo.ALL_CASES, ids=lambda case: case.id)
def reference(request):
    return request.param.build()


def test_round_trip_is_exact(reference):
    model = reference.module
    snapshot = ModelSnapshot.of(model)
    program = fqlower.from_fx(model, reference.qconfig_map, reference.node_name_to_scope)
    rebuilt = fqlower.to_fx(program)

    assert graph_differences(model, rebuilt) == []
    assert [node.name for node in rebuilt.graph.nodes] == [node.name for node in model.graph.nodes]
    assert module_type_differences(model, rebuilt) == []
    assert state_dict_differences(model, rebuilt) == []
    assert rebuilt.code == model.code
    with torch.no_grad():
        assert values_equal(rebuilt(*reference.example_inputs), model(*reference.example_inputs))
    again = fqlower.from_fx(rebuilt, reference.qconfig_map, reference.node_name_to_scope)
    assert fqlower.fingerprint(again) == fqlower.fingerprint(program)
    assert snapshot.differences(model) == []


def test_fingerprint_equals_for_a_deep_copy(reference):
    model = reference.module
    maps = (reference.qconfig_map, reference.node_name_to_scope)
    assert fqlower.fingerprint(fqlower.from_fx(model, *maps)) == fqlower.fingerprint(
        fqlower.from_fx(copy.deepcopy(model), *maps)
    )


def test_the_zoo_covers_every_recipe():
    ids = " ".join(case.id for case in zoo.CASES)
    for recipe in ("static", "dynamic", "fp16", "weight_only"):
        assert recipe in ids, recipe
    assert len(zoo.FLOAT_GRAPHS) >= 5
