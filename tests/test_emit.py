"""The emitter: paths, specs, sharing without mutation, packed-weight state."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
from helpers import tiny_gm, tiny_program

import pytest

import fqlower
from fqlower import Build, EmitError, Original, SetConstant, SetModule, apply
from fqlower.compare import ModelSnapshot, state_dict_differences, values_equal


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 4))
        self.register_buffer("scale", torch.tensor(2.0))
        self.register_buffer("unused", torch.ones(1), persistent=False)

    def forward(self, x):
        return self.blocks(x) * self.scale + self.blocks[0][0].weight.sum() + self.blocks[0][0](x)


def test_paths_types_and_names_survive():
    gm = torch.fx.symbolic_trace(Nested())
    out = fqlower.to_fx(fqlower.from_fx(gm))
    assert [n.name for n in out.graph.nodes] == [n.name for n in gm.graph.nodes]
    assert dict(out.named_modules()).keys() == dict(gm.named_modules()).keys()
    assert isinstance(out.blocks, nn.Module) and type(out.blocks) is type(gm.blocks)
    assert out.get_submodule("blocks.0.0") is gm.get_submodule("blocks.0.0")
    assert state_dict_differences(gm, out) == []
    x = torch.randn(2, 4)
    assert values_equal(out(x), gm(x))


def test_emitting_never_writes_into_input_modules():
    gm = torch.fx.symbolic_trace(Nested())
    linear = gm.get_submodule("blocks.0.0")
    before = (dict(linear._parameters), dict(linear._buffers), set(linear._non_persistent_buffers_set))
    snapshot = ModelSnapshot.of(gm)
    out = fqlower.to_fx(fqlower.from_fx(gm))
    assert (dict(linear._parameters), dict(linear._buffers), set(linear._non_persistent_buffers_set)) == before
    assert out.get_submodule("blocks.0") is not gm.get_submodule("blocks.0")  # fresh intermediate
    assert snapshot.differences(gm) == []


def test_node_meta_and_placeholder_annotations_are_kept():
    gm = tiny_gm()
    for node in gm.graph.nodes:
        node.meta["custom"] = f"tag-{node.name}"
    out = fqlower.to_fx(fqlower.from_fx(gm))
    assert [n.meta.get("custom") for n in out.graph.nodes] == [f"tag-{n.name}" for n in gm.graph.nodes]
    assert [n.meta.get("stack_trace") for n in out.graph.nodes] == [n.meta.get("stack_trace") for n in gm.graph.nodes]
    assert out.code == gm.code


def test_training_flag_class_name_and_gm_meta_are_kept():
    gm = tiny_gm().train()
    gm.meta["owner"] = "me"
    out = fqlower.to_fx(fqlower.from_fx(gm))
    assert out.training and out.meta == {"owner": "me"} and type(out).__name__ == type(gm).__name__
    assert not fqlower.to_fx(fqlower.from_fx(tiny_gm().eval())).training


def test_build_specs_are_materialised_from_original_modules():
    program = tiny_program()
    reference_fc = program.modules["fc"]
    spec = Build("copy.deepcopy", (Original("fc"),))
    out = fqlower.to_fx(apply(program, [SetModule("fc", spec)]))
    assert out.fc is not reference_fc and values_equal(out.fc.weight, reference_fc.weight)


def test_a_spec_that_fails_to_build_names_its_path():
    program = apply(tiny_program(), [SetModule("fc", Build("torch.nn.modules.linear.Linear", ("not an int", 4)))])
    with pytest.raises(EmitError, match="cannot build the object at 'fc'"):
        fqlower.to_fx(program)


def test_packed_weights_are_saved_and_loaded_through_state_dict():
    weight = torch.quantize_per_tensor(torch.randn(4, 4), 0.05, 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(weight, torch.zeros(4))
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    w = graph.get_attr("fc_packed_weight_0")
    q = graph.call_function(torch.quantize_per_tensor, (x, 0.1, 0, torch.quint8))
    y = graph.call_function(torch.ops.quantized.linear, (q, w, 0.2, 0))
    graph.output(graph.call_method("dequantize", (y,)))
    root = nn.Module()
    root.fc_packed_weight_0 = packed
    gm = torch.fx.GraphModule(root, graph)

    out = fqlower.to_fx(fqlower.from_fx(gm))
    state = out.state_dict()
    assert list(state) == ["fc_packed_weight_0"] and state["fc_packed_weight_0"] is packed

    other_weight = torch.quantize_per_tensor(torch.randn(4, 4), 0.05, 0, torch.qint8)
    other = torch.ops.quantized.linear_prepack(other_weight, torch.zeros(4))
    out.load_state_dict({"fc_packed_weight_0": other})
    assert out.fc_packed_weight_0 is other
    assert gm.fc_packed_weight_0 is packed  # the input keeps its own


def test_constants_of_any_kind_are_installed():
    program = tiny_program()
    program = apply(program, [SetConstant("offset", torch.full((4,), 3.0))])
    out = fqlower.to_fx(program)
    assert "offset" in dict(out.named_buffers())
    x = torch.randn(2, 4)
    assert values_equal(out(x), torch.relu(program.modules["fc"](x)) + x + 3.0)


def test_unreferenced_table_entries_are_not_installed():
    program = apply(tiny_program(), [SetModule("spare", nn.ReLU())])
    assert not hasattr(fqlower.to_fx(program), "spare")
    assert fqlower.fingerprint(program) == fqlower.fingerprint(apply(program, [SetModule("spare", nn.Tanh())]))


def test_emitted_graph_lints():
    out = fqlower.to_fx(fqlower.from_fx(torch.fx.symbolic_trace(Nested())))
    out.graph.lint()


def test_regression_graph_shape_tells_true_from_one():
    # True == 1 in Python; keepdim=True and keepdim=1 must still compare as different graphs.
    from fqlower.compare import graph_differences

    def traced(keepdim):
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        graph.output(graph.call_function(torch.sum, (x,), {"dim": 1, "keepdim": keepdim}))
        return torch.fx.GraphModule(nn.Module(), graph)

    assert graph_differences(traced(True), traced(True)) == []
    assert graph_differences(traced(True), traced(1)) != []
