"""The two-way registry of qualified names."""

from __future__ import annotations

import builtins
import operator

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.nn.functional as F

from fqlower import ChangeLogError
from fqlower.names import qualified_name, resolve

CALLABLES = [
    (operator.add, "operator.add"),
    (operator.getitem, "operator.getitem"),
    (builtins.getattr, "builtins.getattr"),
    (F.linear, "torch.nn.functional.linear"),
    (F.relu, "torch.nn.functional.relu"),
    (torch.relu, "torch.relu"),
    (torch.quantize_per_tensor, "torch.quantize_per_tensor"),
    (torch.ops.quantized.add, "torch.ops.quantized.add"),
    (torch.ops.quantized.linear_prepack.default, "torch.ops.quantized.linear_prepack.default"),
    (nnq.Linear, "torch.ao.nn.quantized.modules.linear.Linear"),
]


@pytest.mark.parametrize("obj, name", CALLABLES, ids=[name for _, name in CALLABLES])
def test_names_resolve_back_to_the_same_object(obj, name):
    assert qualified_name(obj) == name
    assert resolve(name) is obj


def test_bound_class_methods_are_named_through_their_class():
    name = qualified_name(nnq.Linear.from_reference)
    assert name == "torch.ao.nn.quantized.modules.linear.Linear.from_reference"
    assert resolve(name) == nnq.Linear.from_reference


def test_lambdas_and_unknown_names_are_refused():
    with pytest.raises(ChangeLogError, match="cannot name"):
        qualified_name(lambda x: x)
    with pytest.raises(ChangeLogError, match="cannot resolve 'torch.ops.quantized.no_such_op'"):
        resolve("torch.ops.quantized.no_such_op")
