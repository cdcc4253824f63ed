"""A get_attr that reads a non-persistent buffer lowers as torch lowers it, on either torch.

torch 2.13's `GraphModule(root, graph)` registered every tensor it copied for a get_attr
as a persistent buffer; torch 2.14's keeps a non-persistent one non-persistent
(torch/fx/graph_module.py `_copy_attr`). convert_fx builds the reference model with that
constructor and torch's lowering ends with it (`fold_weight`), so whether such a buffer
is in the lowered model's state_dict depends on the torch release. fqlower follows the
release it runs on (`fqlower.emit.to_fx.copies_keep_persistence`).
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping

import fqlower
from fqlower.compare import lowering_differences, state_dict_differences
from fqlower.emit.to_fx import copies_keep_persistence
from fqlower.log.fingerprint import non_persistent_buffers
from fqlower.reference import reference_model, torch_lowering


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gain", torch.rand(4) + 0.5, persistent=False)


class ReadsBuffers(nn.Module):
    """A root-level and a nested non-persistent buffer, both read by get_attr (the
    nested one's module is never called, so its path is rebuilt with a fresh module)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 4)
        self.register_buffer("shift", torch.rand(4), persistent=False)
        self.inner = Inner()

    def forward(self, x):
        return self.linear(x) * self.inner.gain + self.shift


def names(module: torch.nn.Module) -> list[str]:
    return [name for name, _ in non_persistent_buffers(module)]


def test_the_probe_matches_this_torch():
    traced = torch.fx.symbolic_trace(ReadsBuffers())
    assert copies_keep_persistence() == (names(traced) == ["shift", "inner.gain"])


def test_lowered_like_torch_with_the_same_non_persistent_buffers():
    ref = reference_model(ReadsBuffers(), (torch.randn(2, 4),), get_default_qconfig_mapping("fbgemm"))
    theirs = torch_lowering(ref)
    ours = fqlower.lower_to_native_backend(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    assert lowering_differences(theirs, ours, ref.example_inputs) == []
    assert names(ours) == names(theirs) == (["shift", "inner.gain"] if copies_keep_persistence() else [])


def test_round_trip_keeps_what_the_constructor_keeps():
    root = nn.Module()
    root.blocks = nn.Sequential(nn.Module())
    root.blocks[0].register_buffer("gain", torch.ones(4), persistent=False)
    root.register_buffer("shift", torch.ones(4), persistent=False)
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    scaled = graph.call_function(torch.mul, (x, graph.get_attr("blocks.0.gain")))
    graph.output(graph.call_function(torch.add, (scaled, graph.get_attr("shift"))))
    gm = torch.fx.GraphModule(root, graph)
    rebuilt = fqlower.to_fx(fqlower.from_fx(gm))
    assert state_dict_differences(gm, rebuilt) == []
    assert names(rebuilt) == names(gm)
