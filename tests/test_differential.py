"""fqlower's lowering equals torch 2.13's wherever torch's succeeds.

For every zoo case: same graph up to node names, same module types at the same
paths, same state_dict keys and values, bit-identical outputs on fresh inputs, and
the caller's model unchanged. The zoo's `torch_lowers` flag is checked both ways:
a case with the default must lower with torch (here), and one marked False must
make torch's lowering raise the error the case names.
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
from fqlower.departures import departed_nodes, differences_outside
from fqlower.reasons import is_departure
from fqlower.reference import torch_lowering

LOWERED_BY_TORCH = [case for case in zoo.ALL_CASES if case.torch_lowers]
NOT_LOWERED_BY_TORCH = [case for case in zoo.ALL_CASES if not case.torch_lowers]


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
    assert {entry.code for entry in lowered.log.entries if is_departure(entry.code)} == ({case.departs} if case.departs else set())
    if case.departs:
        assert_departs_and_computes_the_reference(reference, expected, lowered)
        return
    for inputs in (reference.example_inputs, fresh_inputs(reference.example_inputs)):
        differences = lowering_differences(expected, lowered.module, inputs)
        assert differences == [], "\n".join(differences) + "\n\ntorch:\n" + expected.code + "\nfqlower:\n" + lowered.module.code


def assert_departs_and_computes_the_reference(reference, expected, lowered):
    """A case where fqlower departs from torch on purpose: outside the departed nodes'
    regions it equals torch's lowering, and its outputs are closer to the reference
    model's than torch's are (torch's lowering computes something else there)."""
    assert differences_outside(expected, lowered.module, departed_nodes(lowered)) == []
    inputs = fresh_inputs(reference.example_inputs)
    with torch.no_grad():
        want, ours, theirs = (model(*inputs) for model in (reference.module, lowered.module, expected))
    assert (ours - want).abs().max() < (theirs - want).abs().max()


@pytest.mark.parametrize("case", NOT_LOWERED_BY_TORCH, ids=lambda case: case.id)
def test_a_case_marked_as_not_lowered_by_torch_makes_torchs_lowering_fail(case):
    """`torch_lowers=False` is measured: torch's lowering raises the error the case
    names (a case torch learned to lower would fail here, not drop out of the
    differential test silently)."""
    assert case.torch_error, f"{case.id}: name the error torch raises (torch_error)"
    reference = case.build()  # building is not what has to fail
    with pytest.raises(Exception) as raised:
        torch_lowering(reference)
    assert case.torch_error in str(raised.value), str(raised.value)


def test_the_torch_lowers_flag_splits_the_zoo():
    assert NOT_LOWERED_BY_TORCH and {case.id for case in LOWERED_BY_TORCH} >= {case.id for case in zoo.FLOAT_GRAPHS}
    assert all(not case.torch_error for case in LOWERED_BY_TORCH)
