"""In-place relu forms after a quantized op: `F.relu(x, inplace=True)`, `x.relu_()`,
`torch.relu_(x)` and `nn.ReLU(inplace=True)`, after a module, a functional linear and
an add. torch 2.13 lowers each of these right (fusing or keeping the relu), and
fqlower's lowering must equal it, run, stay near the reference model and leave the
reference model as it was."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping

import fqlower
from fqlower.compare import ModelSnapshot, lowering_differences
from fqlower.reference import reference_model, torch_lowering

RELUS = {
    "F.relu(inplace=True)": lambda module, x: F.relu(x, inplace=True),
    "x.relu_()": lambda module, x: x.relu_(),
    "torch.relu_": lambda module, x: torch.relu_(x),
    "nn.ReLU(inplace=True)": lambda module, x: module.act(x),
}


class AfterLinear(nn.Module):
    def __init__(self, relu):
        super().__init__()
        torch.manual_seed(0)
        self.relu, self.fc, self.act = relu, nn.Linear(6, 5), nn.ReLU(inplace=True)

    def forward(self, x):
        return RELUS[self.relu](self, self.fc(x))


class AfterFunctional(nn.Module):
    def __init__(self, relu):
        super().__init__()
        torch.manual_seed(0)
        self.relu, self.act = relu, nn.ReLU(inplace=True)
        self.weight, self.bias = nn.Parameter(torch.randn(5, 6)), nn.Parameter(torch.randn(5))

    def forward(self, x):
        return RELUS[self.relu](self, F.linear(x, self.weight, self.bias))


class AfterAdd(nn.Module):
    def __init__(self, relu):
        super().__init__()
        torch.manual_seed(0)
        self.relu, self.fc, self.act = relu, nn.Linear(6, 6), nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.fc(x)
        return RELUS[self.relu](self, y + y.neg())


X = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("relu", list(RELUS))
@pytest.mark.parametrize("model", [AfterLinear, AfterFunctional, AfterAdd])
def test_inplace_relu_forms_lower_as_torch(model, relu):
    reference = reference_model(model(relu), (X,), get_default_qconfig_mapping("fbgemm"))
    snapshot = ModelSnapshot.of(reference.module)
    ours = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    assert snapshot.differences(reference.module) == []  # an in-place op in the graph is not run on the input
    expected = reference.module(X.clone())
    got = ours.module(X.clone())
    assert (got - expected).abs().max() <= 0.05 * expected.abs().max() + 1e-3
    assert lowering_differences(torch_lowering(reference), ours.module, (X.clone(),)) == []
