"""F.linear and F.conv2d with parameter weights in a module nested two and three levels
deep (`mid.leaf`, `layer1.0`, `outer.mid.leaf`), under a static fbgemm and a dynamic
recipe: fqlower's lowering equals torch's and replays from its log.

Weight folding names a packed weight after the scope path of the op that reads it,
dots turned into underscores as torch does (`outer_mid_leaf_packed_weight_0`): a name
with dots is no attribute (regression: one level deep, `b3`, has no dot to turn).
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, get_default_qconfig_mapping

import fqlower
from fqlower.compare import lowering_differences, state_dict_differences
from fqlower.reference import reference_model, torch_lowering

RECIPES = {
    "static_fbgemm": lambda: get_default_qconfig_mapping("fbgemm"),
    "dynamic_int8": lambda: QConfigMapping().set_global(default_dynamic_qconfig),
}
PATHS = ("mid.leaf", "layer1.0", "outer.mid.leaf")


class Leaf(nn.Module):
    """One functional op whose weight and bias are this module's parameters."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        shape = (4, 6) if kind == "linear" else (4, 3, 3, 3)
        self.weight = nn.Parameter(torch.randn(shape) * 0.3)
        self.bias = nn.Parameter(torch.randn(4) * 0.1)

    def forward(self, x):
        if self.kind == "linear":
            return F.relu(F.linear(x, self.weight, self.bias))
        return F.conv2d(x, self.weight, self.bias, (1, 1), (1, 1), (1, 1), 1)  # tuples: torch's lowering cannot prepack ints


class Wrapper(nn.Module):
    """A container that calls its one child, as real models' stages do."""

    def __init__(self, name: str, child: nn.Module):
        super().__init__()
        self.add_module(name, child)
        self.name = name

    def forward(self, x):
        return getattr(self, self.name)(x)


class Nested(nn.Module):
    """The functional op at `path`, reached through forward calls of its containers
    (`layer1` is an nn.Sequential, as in torchvision's ResNet), then a mul on the model."""

    def __init__(self, kind: str, path: str):
        super().__init__()
        torch.manual_seed(len(path))
        first, *inner = path.split(".")
        module: nn.Module = Leaf(kind)
        for name in reversed(inner):
            module = nn.Sequential(module) if name.isdigit() else Wrapper(name, module)
        self.add_module(first, module)
        self.first = first

    def forward(self, x):
        return getattr(self, self.first)(x) * 2.0


def example(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.randn((8, 6) if kind == "linear" else (2, 3, 5, 5), generator=generator)


def attributes(module: torch.fx.GraphModule) -> set[str]:
    return {node.target for node in module.graph.nodes if node.op == "get_attr"}


def lower(reference):
    return fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("path", PATHS)
def test_nested_functional_lowers_as_torch_does_and_replays(path, kind, recipe):
    model = Nested(kind, path).eval()
    assert dict(model.named_modules())[path].__class__ is Leaf
    x = example(kind)
    reference = reference_model(model, (x,), RECIPES[recipe]())
    op = next(n.name for n in reference.module.graph.nodes if n.op == "call_function" and n.target in (F.linear, F.conv2d))
    assert reference.node_name_to_scope[op][0] == path

    lowering = lower(reference)
    expected = torch_lowering(reference)
    assert lowering_differences(expected, lowering.module, (x,)) == []
    assert lowering_differences(expected, lowering.module, (x * 2 - 0.5,)) == []

    if recipe == "static_fbgemm" or kind == "linear":  # dynamic recipes leave F.conv2d float
        assert f"{path.replace('.', '_')}_packed_weight_0" in attributes(lowering.module)

    replayed = fqlower.replay(reference.module, lowering.log.dumps(), reference.qconfig_map, reference.node_name_to_scope)
    assert fqlower.fingerprint(replayed.program) == lowering.log.header.output
    assert state_dict_differences(lowering.module, replayed.module) == []


def test_two_functionals_in_one_nested_scope_get_numbered_packed_weights():
    """Both F.linear calls read weights of `outer.mid.leaf`: `_0` and `_1`, as torch names them."""

    class TwoLinears(Leaf):
        def __init__(self):
            super().__init__("linear")
            self.weight2 = nn.Parameter(torch.randn(3, 4) * 0.3)

        def forward(self, x):
            return F.linear(super().forward(x), self.weight2)

    torch.manual_seed(0)
    model = Wrapper("outer", Wrapper("mid", Wrapper("leaf", TwoLinears()))).eval()
    x = example("linear")
    reference = reference_model(model, (x,), RECIPES["static_fbgemm"]())
    lowering = lower(reference)
    assert lowering_differences(torch_lowering(reference), lowering.module, (x,)) == []
    assert {"outer_mid_leaf_packed_weight_0", "outer_mid_leaf_packed_weight_1"} <= attributes(lowering.module)
