"""Functional linear / conv / conv-transpose in 1-d, 2-d and 3-d, with and without
bias and relu, per-tensor and per-channel weights, fbgemm and qnnpack, dynamic int8
and fp16: fqlower's lowering equals torch's."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    default_qconfig,
    float16_dynamic_qconfig,
    get_default_qconfig_mapping,
)

import fqlower
from fqlower.compare import ModelSnapshot, lowering_differences
from fqlower.reference import reference_model, torch_lowering

RECIPES = {
    "fbgemm": lambda: get_default_qconfig_mapping("fbgemm"),  # per-channel weights
    "x86": lambda: get_default_qconfig_mapping("x86"),
    "qnnpack": lambda: get_default_qconfig_mapping("qnnpack"),
    "per_tensor": lambda: QConfigMapping().set_global(default_qconfig),
    "dynamic_int8": lambda: QConfigMapping().set_global(default_dynamic_qconfig),
    "dynamic_fp16": lambda: QConfigMapping().set_global(float16_dynamic_qconfig),
}


class Functional(nn.Module):
    """One functional layer with parameter weights, all arguments spelled out."""

    def __init__(self, kind: str, dims: int, bias: bool, relu: bool):
        super().__init__()
        torch.manual_seed(dims)
        self.kind, self.dims, self.relu = kind, dims, relu
        shape = {"linear": (4, 6), "conv": (4, 3) + (3,) * dims, "conv_transpose": (3, 4) + (3,) * dims}[kind]
        self.weight = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(torch.randn(4)) if bias else None

    def forward(self, x):
        ones, zeros = (1,) * self.dims, (0,) * self.dims
        if self.kind == "linear":
            y = F.linear(x, self.weight, self.bias)
        elif self.kind == "conv":
            y = getattr(F, f"conv{self.dims}d")(x, self.weight, self.bias, ones, zeros, ones, 1)
        else:
            y = getattr(F, f"conv_transpose{self.dims}d")(x, self.weight, self.bias, ones, zeros, zeros, 1, ones)
        return F.relu(y) if self.relu else y

    def example(self):
        generator = torch.Generator().manual_seed(7)
        shape = (2, 6) if self.kind == "linear" else (2, 3) + (5,) * self.dims
        return torch.randn(shape, generator=generator)


LAYERS = [("linear", 1)] + [(kind, dims) for kind in ("conv", "conv_transpose") for dims in (1, 2, 3)]
CASES = [(kind, dims, bias, relu, "fbgemm") for (kind, dims), bias, relu in itertools.product(LAYERS, (True, False), (True, False))]
CASES += [(kind, dims, True, index % 2 == 0, recipe) for index, ((kind, dims), recipe) in enumerate(itertools.product(LAYERS, list(RECIPES)[1:]))]


@pytest.mark.parametrize("kind, dims, bias, relu, recipe", CASES, ids=lambda v: str(v))
def test_functional_lowering_equals_torch(kind, dims, bias, relu, recipe):
    model = Functional(kind, dims, bias, relu)
    x = model.example()
    reference = reference_model(model, (x,), RECIPES[recipe]())
    snapshot = ModelSnapshot.of(reference.module)
    ours = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope).module
    assert snapshot.differences(reference.module) == []
    assert lowering_differences(torch_lowering(reference), ours, (x,)) == []
    assert lowering_differences(torch_lowering(reference), ours, (x * 2 - 0.5,)) == []
