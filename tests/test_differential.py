"""fqlower's lowering equals torch 2.13's wherever torch's succeeds.

For every zoo case: same graph up to node names, same module types at the same
paths, same state_dict keys and values, bit-identical outputs on fresh inputs, and
the caller's model unchanged.
"""

from __future__ import annotations

import pytest
import torch
import zoo

import fqlower
from fqlower.compare import (
    ModelSnapshot,
    graph_differences,
    lowering_differences,
    module_type_differences,
    state_dict_differences,
)
from fqlower.reference import torch_lowering

LOWERED_BY_TORCH = [case for case in zoo.CASES if case.torch_lowers]


def fresh_inputs(inputs, seed=1234):
    generator = torch.Generator().manual_seed(seed)

    def fresh(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return torch.randn(value.shape, generator=generator, dtype=value.dtype)
        if isinstance(value, tuple):
            return tuple(fresh(item) for item in value)
        return value

    return tuple(fresh(item) for item in inputs)


@pytest.mark.parametrize("case", LOWERED_BY_TORCH, ids=lambda case: case.id)
def test_lowering_equals_torch(case):
    reference = case.build()
    snapshot = ModelSnapshot.of(reference.module)
    expected = torch_lowering(reference)
    lowered = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    assert snapshot.differences(reference.module) == []
    if not case.runnable:
        structure = graph_differences(expected, lowered.module) + module_type_differences(expected, lowered.module)
        assert structure + state_dict_differences(expected, lowered.module) == []
        return
    for inputs in (reference.example_inputs, fresh_inputs(reference.example_inputs)):
        differences = lowering_differences(expected, lowered.module, inputs)
        assert differences == [], "\n".join(differences) + "\n\ntorch:\n" + expected.code + "\nfqlower:\n" + lowered.module.code
