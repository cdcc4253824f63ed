"""One focused test per module-lowering rule: the exact rewrite, the recorded change,
and the smallest graph each rule must leave alone (with its reason)."""

from __future__ import annotations

import copy

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.nn.quantized.reference as nnqr
import torch.fx
import torch.nn as nn
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    get_default_qconfig_mapping,
)

import fqlower
from fqlower import Build, Original, Ref, RemoveNode, ReplaceUses, SetArgs, SetModule, Skip
from fqlower.passes import (
    ELIMINATE_DEAD_CODE,
    LOWER_DYNAMIC_MODULES,
    LOWER_STATIC_MODULES,
    LOWER_TWO_INPUT_MODULES,
    LOWER_WEIGHT_ONLY_MODULES,
)
from fqlower.patterns import STATIC_TWO_INPUT_FUSED_MODULES
from fqlower.compare import lowering_differences
from fqlower.reference import reference_model, torch_lowering


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def static_linear(qconfig_mapping=None):
    return reference_model(Linear(), (torch.randn(8, 4),), qconfig_mapping or get_default_qconfig_mapping("fbgemm"))


def program_of(reference):
    return fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)


# --- static modules ----------------------------------------------------------------------------


def test_static_module_rewrite_and_change():
    reference = static_linear()
    program = program_of(reference)
    result = LOWER_STATIC_MODULES.run(program)
    (change,) = result.changes
    assert (change.pass_name, change.rule, change.anchor) == ("lower-static-modules", "lower-static-modules", "quantize_per_tensor_1")
    assert dict(change.bindings) == {
        "quantize": "quantize_per_tensor_1",
        "reference": "fc",
        "dequantize": "dequantize",
        "scale": "fc_scale_0",
        "zero_point": "fc_zero_point_0",
    }
    spec = Build(
        "torch.ao.nn.quantized.modules.linear.Linear.from_reference",
        (Original("fc"), Original("fc_scale_0"), Original("fc_zero_point_0")),
    )
    assert change.edits == (
        SetModule("fc", spec),
        SetArgs("fc", (Ref("quantize_per_tensor"),)),
        ReplaceUses("quantize_per_tensor_1", "fc"),
        RemoveNode("quantize_per_tensor_1"),
        RemoveNode("fc_scale_0"),
        RemoveNode("fc_zero_point_0"),
    )
    after = result.program
    assert after.users("fc") == ("dequantize_1",)
    module = fqlower.to_fx(after)
    assert type(module.fc) is nnq.Linear
    assert module.fc.scale == float(program.constants["fc_scale_0"])


def test_static_fused_module_becomes_its_quantized_fused_module():
    class LinearRelu(Linear):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.fc(x))

    reference = reference_model(LinearRelu(), (torch.randn(8, 4),), get_default_qconfig_mapping("fbgemm"))
    lowered = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    assert type(lowered.module.fc) is nniq.LinearReLU


def test_static_module_with_none_qconfig_is_left_with_a_reason():
    reference = static_linear()
    program = program_of(reference)
    program = fqlower.from_fx(reference.module, {**reference.qconfig_map, "fc": None})
    result = LOWER_STATIC_MODULES.run(program)
    assert result.changes == ()
    (skip,) = result.entries
    assert skip == Skip(0, "lower-static-modules", "lower-static-modules", "quantize_per_tensor_1", "qconfig of 'fc' is None")


def test_static_module_whose_input_is_not_dequantized_is_left():
    reference = static_linear()
    gm = copy.deepcopy(reference.module)
    fc = next(node for node in gm.graph.nodes if node.name == "fc")
    fc.args = (next(node for node in gm.graph.nodes if node.op == "placeholder"),)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    result = LOWER_STATIC_MODULES.run(fqlower.from_fx(gm, reference.qconfig_map))
    assert [skip.reason for skip in result.entries] == ["the input of 'fc' is not dequantized"]


def hand_built_linear_relu(out_zero_point):
    """x -> q -> dq -> ref.Linear -> F.relu -> q -> dq, a pattern torch lowers
    without the relu."""
    torch.manual_seed(0)
    root = nn.Module()
    root.fc = nnqr.Linear.from_float(nn.Linear(4, 4), {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": 0.01, "zero_point": 0})
    for name, value in (("in_scale", 0.05), ("in_zp", 64), ("out_scale", 0.02), ("out_zp", out_zero_point)):
        setattr(root, name, torch.tensor(value))
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    q = graph.call_function(torch.quantize_per_tensor, (x, graph.get_attr("in_scale"), graph.get_attr("in_zp"), torch.quint8))
    fc = graph.call_module("fc", (graph.call_method("dequantize", (q,)),))
    relu = graph.call_function(torch.nn.functional.relu, (fc,))
    out = graph.call_function(torch.quantize_per_tensor, (relu, graph.get_attr("out_scale"), graph.get_attr("out_zp"), torch.quint8))
    graph.output(graph.call_method("dequantize", (out,)))
    return torch.fx.GraphModule(root, graph)


def torch_lower(gm):
    from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

    return _lower_to_native_backend(copy.deepcopy(gm), {}, {})


def test_relu_implied_by_the_output_zero_point_is_dropped_as_torch_does():
    gm = hand_built_linear_relu(out_zero_point=0)
    from fqlower.compare import lowering_differences

    assert lowering_differences(torch_lower(gm), fqlower.lower(gm).module, (torch.randn(16, 4) * 3,)) == []


def test_regression_relu_between_module_and_quantize_is_kept():
    gm = hand_built_linear_relu(out_zero_point=64)
    x = torch.randn(64, 4) * 3
    expected = gm(x)
    assert (expected >= 0).all()
    assert (torch_lower(gm)(x) < 0).any(), "torch 2.13 drops the relu and lets negative values through"
    ours = fqlower.lower(gm).module
    assert (ours(x) >= 0).all()
    assert torch.allclose(ours(x), expected, atol=0.02 + 1e-6)
    assert type(ours.fc) is nnq.Linear


# --- two-input modules ---------------------------------------------------------------------------


def conv_add_reference():
    from torch.ao.quantization.backend_config import get_onednn_backend_config

    class ConvAdd(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x, y):
            return torch.relu(self.conv(x) + y)

    inputs = (torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4))
    return reference_model(ConvAdd(), inputs, get_default_qconfig_mapping("onednn"), backend_config=get_onednn_backend_config())


def test_two_input_fused_module_rewrite_matches_torch():
    reference = conv_add_reference()
    program = program_of(reference)
    result = LOWER_TWO_INPUT_MODULES.run(program)
    (change,) = result.changes
    assert set(change.bindings) == {"quantize", "reference", "scale", "zero_point"}
    reference_node = program.node(change.bindings["reference"])
    assert all(program.node(arg.name).target == "dequantize" for arg in reference_node.args)
    rerouted = result.program.node(reference_node.name).args
    assert rerouted == tuple(program.node(arg.name).args[0] for arg in reference_node.args)
    lowered = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope).module
    fused_type = type(program.modules[reference_node.target])
    assert type(lowered.get_submodule(reference_node.target)) is STATIC_TWO_INPUT_FUSED_MODULES[fused_type][1]
    from fqlower.compare import graph_differences, module_type_differences, state_dict_differences

    # Only onednn has a conv-add kernel, and it crashes on CPUs without AVX-512 VNNI:
    # compare everything but outputs.
    expected = torch_lowering(reference)
    assert graph_differences(expected, lowered) == []
    assert module_type_differences(expected, lowered) == []
    assert state_dict_differences(expected, lowered) == []


# --- dynamic modules -----------------------------------------------------------------------------


def test_dynamic_module_rewrite_and_change():
    reference = static_linear(QConfigMapping().set_global(default_dynamic_qconfig))
    program = program_of(reference)
    result = LOWER_DYNAMIC_MODULES.run(program)
    (change,) = result.changes
    assert change.anchor == "fc" and set(change.bindings) == {"reference", "dequantize", "dynamic_quantize"}
    dynamic = program.node(change.bindings["dynamic_quantize"])
    assert change.edits == (
        SetModule("fc", Build("torch.ao.nn.quantized.dynamic.modules.linear.Linear.from_reference", (Original("fc"),))),
        SetArgs("fc", (dynamic.args[0],)),
    )
    module = fqlower.to_fx(ELIMINATE_DEAD_CODE.run(result.program).program)
    assert type(module.fc) is nnqd.Linear
    assert [n.target for n in module.graph.nodes if n.op == "call_method"] == []


def test_dynamic_module_with_an_unsupported_activation_dtype_is_left():
    reference = static_linear(QConfigMapping().set_global(default_dynamic_qconfig))
    gm = copy.deepcopy(reference.module)
    dynamic = next(n for n in gm.graph.nodes if n.target is torch.quantize_per_tensor_dynamic)
    dynamic.args = (dynamic.args[0], torch.qint32, dynamic.args[2])
    result = LOWER_DYNAMIC_MODULES.run(fqlower.from_fx(gm))
    assert result.changes == ()
    assert [skip.reason for skip in result.entries] == [f"{dynamic.name!r} quantizes to torch.qint32, which has no dynamic kernel"]


# --- weight-only modules -------------------------------------------------------------------------


def test_weight_only_module_swaps_only_the_module():
    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(10, 4)

        def forward(self, indices):
            return self.emb(indices)

    mapping = QConfigMapping().set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
    reference = reference_model(Embed(), (torch.tensor([1, 2, 3]),), mapping)
    program = program_of(reference)
    result = LOWER_WEIGHT_ONLY_MODULES.run(program)
    (change,) = result.changes
    assert change.edits == (SetModule("emb", Build("torch.ao.nn.quantized.modules.embedding_ops.Embedding.from_reference", (Original("emb"),))),)
    assert result.program.graph == program.graph
    assert type(fqlower.to_fx(result.program).emb) is nnq.Embedding


# --- dead code -----------------------------------------------------------------------------------


def test_dead_code_removes_chains_and_keeps_side_effects():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    dead = graph.call_function(torch.neg, (graph.call_function(torch.relu, (x,)),))  # noqa: F841
    graph.call_function(torch.ops.aten.add_.Tensor, (x, x))  # mutates: impure
    graph.call_method("add_", (x, x))  # call_method: never impure, as in torch
    graph.output(x)
    gm = torch.fx.GraphModule(nn.Module(), graph)
    result = ELIMINATE_DEAD_CODE.run(fqlower.from_fx(gm))
    assert [change.anchor for change in result.changes] == ["add_", "neg", "relu"]
    expected = copy.deepcopy(gm)
    expected.graph.eliminate_dead_code()
    assert [n.name for n in fqlower.to_fx(result.program).graph.nodes] == [n.name for n in expected.graph.nodes]


def test_regression_dynamic_quantize_without_an_input_is_left():
    # found by the fuzzer: the rewrite asserted that the dynamic quantize had an input node
    reference = static_linear(QConfigMapping().set_global(default_dynamic_qconfig))
    gm = copy.deepcopy(reference.module)
    dynamic = next(n for n in gm.graph.nodes if n.target is torch.quantize_per_tensor_dynamic)
    dynamic.args, dynamic.kwargs = (), {"dtype": torch.quint8, "reduce_range": True}
    result = LOWER_DYNAMIC_MODULES.run(fqlower.from_fx(gm))
    assert result.changes == ()
    assert [skip.reason for skip in result.entries] == [f"{dynamic.name!r} has no input node"]


# --- a module called from several places ----------------------------------------------------------


class LinearTwice(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


def test_regression_static_module_called_twice_runs_natively_at_both_calls():
    # Found by the fuzzer: swapping `fc` for the first call fed the quantized Linear a
    # float tensor at the second call, and the lowered model crashed. Then both calls
    # stayed float; now each call gets its own quantized module (tests/test_module_calls.py).
    x = torch.randn(8, 4)
    reference = reference_model(LinearTwice(), (x,), get_default_qconfig_mapping("fbgemm"))
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    changes = [change for change in lowering.log.changes if change.pass_name == "lower-static-modules"]
    assert len(changes) == 2 and not [skip for skip in lowering.log.skips if skip.pass_name == "lower-static-modules"]
    assert type(lowering.module.fc) is nnq.Linear and type(lowering.module.fc_1) is nnq.Linear
    expected = reference.module(x)
    assert (lowering.module(x) - expected).abs().max() <= 0.05 * expected.abs().max()


def test_dynamic_module_called_twice_is_lowered_as_torch_lowers_it():
    # A dynamic quantized module takes float input, so sharing it is safe.
    x = torch.randn(8, 4)
    reference = reference_model(LinearTwice(), (x,), QConfigMapping().set_global(default_dynamic_qconfig))
    ours = fqlower.lower_to_native_backend(copy.deepcopy(reference.module), reference.qconfig_map, reference.node_name_to_scope)
    theirs = torch_lowering(reference)
    assert type(ours.fc) is nnqd.Linear
    assert lowering_differences(theirs, ours, (x,)) == []


class EmbeddingTwice(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)

    def forward(self, indices):
        return self.emb(indices) + self.emb(indices.flip(0))


def test_weight_only_module_called_twice_is_lowered_as_torch_lowers_it():
    indices = torch.randint(0, 10, (6,))
    mapping = QConfigMapping().set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
    reference = reference_model(EmbeddingTwice(), (indices,), mapping)
    ours = fqlower.lower_to_native_backend(copy.deepcopy(reference.module), reference.qconfig_map, reference.node_name_to_scope)
    theirs = torch_lowering(reference)
    assert type(ours.emb) is nnq.Embedding
    assert lowering_differences(theirs, ours, (indices,)) == []
