"""The module-lowering passes (static, dynamic, two-input, weight-only), down to the
exact outcome: tests written against mutmut's survivors in
fqlower.passes.static_modules, dynamic_modules, two_input_modules and
weight_only_modules (`make mutation`, docs/mutation.md).

Reference models from torch's own convert, edited where a case needs a graph torch
never writes (arguments by keyword, a malformed dequantize, a fused module around a
float module); each test checks the exact Change or the exact reason of the Skip.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.quantized.reference as nnqr
import torch.fx
import torch.nn as nn
from test_pass_modules import conv_add_reference, hand_built_linear_relu, program_of, static_linear
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    get_default_qconfig_mapping,
)

import fqlower
from fqlower import Build, Original, Ref, RemoveNode, ReplaceUses, SetArgs, SetModule
from fqlower.engine.edits import AddNode
from fqlower.passes import LOWER_DYNAMIC_MODULES, LOWER_STATIC_MODULES, LOWER_TWO_INPUT_MODULES, LOWER_WEIGHT_ONLY_MODULES
from fqlower.reference import reference_model


def entries(fx_pass, gm, qconfig_map=None):
    """(kind, anchor, reason) of what `fx_pass` records on `gm`."""
    return [entry[:3] for entry in entries_with_codes(fx_pass, gm, qconfig_map)]


def entries_with_codes(fx_pass, gm, qconfig_map=None):
    """(kind, anchor, reason, code) of what `fx_pass` records on `gm`."""
    result = fx_pass.run(fqlower.from_fx(gm, qconfig_map or {}))
    return [
        (type(entry).__name__, getattr(entry, "anchor", getattr(entry, "node", None)), entry.reason, entry.code.value)
        for entry in result.entries
    ]


def node_named(gm, name):
    return next(node for node in gm.graph.nodes if node.name == name)


# --- dynamic modules --------------------------------------------------------------------------------


def dynamic_linear():
    """x -> quantize_per_tensor_dynamic -> dequantize -> fc, as torch's convert writes it."""
    gm = copy.deepcopy(static_linear(QConfigMapping().set_global(default_dynamic_qconfig)).module)
    dynamic = next(node for node in gm.graph.nodes if node.target is torch.quantize_per_tensor_dynamic)
    dequantize = next(node for node in gm.graph.nodes if node.target == "dequantize")
    return gm, dynamic, dequantize


def test_a_dynamic_quantize_with_every_argument_by_keyword_is_lowered_reading_its_input():
    gm, dynamic, _ = dynamic_linear()
    (x,), (dtype, reduce_range) = dynamic.args[:1], dynamic.args[1:]
    dynamic.args, dynamic.kwargs = (), {"input": x, "dtype": dtype, "reduce_range": reduce_range}
    result = LOWER_DYNAMIC_MODULES.run(fqlower.from_fx(gm))
    (change,) = result.entries
    assert change.edits == (
        SetModule("fc", Build("torch.ao.nn.quantized.dynamic.modules.linear.Linear.from_reference", (Original("fc"),))),
        SetArgs("fc", (Ref(x.name),)),
    )


def test_a_dynamic_reference_module_given_its_input_by_keyword_is_left_with_the_exact_reason():
    gm, _, dequantize = dynamic_linear()
    fc = node_named(gm, "fc")
    fc.args, fc.kwargs = (), {"input": dequantize}
    assert entries_with_codes(LOWER_DYNAMIC_MODULES, gm) == [
        ("Skip", "fc", "'fc' takes its input as a keyword: torch reads args[0] and fails", "torch-crashes")
    ]


def test_the_dynamic_pass_leaves_a_statically_quantized_module_alone():
    assert entries(LOWER_DYNAMIC_MODULES, static_linear().module) == []


def test_a_dynamic_module_reading_another_method_of_the_quantized_input_is_not_this_pattern():
    gm, _, dequantize = dynamic_linear()
    dequantize.target = "contiguous"
    assert entries(LOWER_DYNAMIC_MODULES, gm) == []


def test_a_dynamic_module_called_on_a_literal_is_not_this_pattern():
    gm, _, _ = dynamic_linear()
    node_named(gm, "fc").args = (1.5,)
    assert entries(LOWER_DYNAMIC_MODULES, gm) == []


def test_a_dynamic_module_reading_a_dequantize_without_arguments_is_not_this_pattern():
    gm, _, dequantize = dynamic_linear()
    dequantize.args = ()
    assert entries(LOWER_DYNAMIC_MODULES, gm) == []


def test_a_fused_dynamic_module_around_a_float_linear_is_left_naming_what_it_holds():
    gm, _, _ = dynamic_linear()
    gm.fc = nni.LinearReLU(nn.Linear(4, 3), nn.ReLU())
    assert entries(LOWER_DYNAMIC_MODULES, gm) == [
        ("Skip", "fc", "fused LinearReLU holds a Linear, not a reference Linear")
    ]


# --- static modules ---------------------------------------------------------------------------------


def test_a_fused_static_module_around_a_float_linear_is_left_naming_what_it_holds():
    reference = static_linear()
    gm = copy.deepcopy(reference.module)
    gm.fc = nni.LinearReLU(nn.Linear(4, 3), nn.ReLU())
    assert entries(LOWER_STATIC_MODULES, gm, reference.qconfig_map) == [
        ("Skip", "quantize_per_tensor_1", "fused LinearReLU holds a Linear, not a reference Linear")
    ]


@pytest.mark.parametrize(
    "args, kwargs",
    [(("dequantize", "x"), {}), (("dequantize",), {"bias": False})],
    ids=["two-positional-inputs", "one-input-and-a-keyword"],
)
def test_a_static_module_called_with_more_than_its_one_input_is_left_with_the_exact_reason(args, kwargs):
    reference = static_linear()
    gm = copy.deepcopy(reference.module)
    fc = node_named(gm, "fc")
    fc.args, fc.kwargs = tuple(node_named(gm, name) for name in args), kwargs
    # the reason only: its code is in doubt (torch asserts on the first graph and lowers the second)
    assert entries(LOWER_STATIC_MODULES, gm, reference.qconfig_map) == [
        ("Skip", "quantize_per_tensor_1", "'fc' takes other inputs than one positional tensor")
    ]


class SamePadded(nn.Module):
    def __init__(self, fused: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 2, 3, padding="same")
        self.relu = nn.ReLU() if fused else nn.Identity()

    def forward(self, x):
        return self.relu(self.conv(x))


def test_a_conv_padded_by_name_stays_float_with_the_exact_reason():
    reference = reference_model(SamePadded(False), (torch.randn(1, 2, 5, 5),), get_default_qconfig_mapping("fbgemm"))
    gm = copy.deepcopy(reference.module)
    reason = "the conv pads 'same', which quantized convolutions do not support (torch fails packing it)"
    assert [entry[2:] for entry in entries_with_codes(LOWER_STATIC_MODULES, gm, reference.qconfig_map)] == [
        (reason, "torch-crashes")
    ]


def test_a_fused_conv_relu_padded_by_name_stays_float_with_the_exact_reason():
    reference = reference_model(SamePadded(True), (torch.randn(1, 2, 5, 5),), get_default_qconfig_mapping("fbgemm"))
    gm = copy.deepcopy(reference.module)
    assert type(gm.conv) is nni.ConvReLU2d and type(gm.conv[0]) is nnqr.Conv2d
    reason = "the conv pads 'same', which quantized convolutions do not support (torch fails packing it)"
    assert [entry[2] for entry in entries(LOWER_STATIC_MODULES, gm, reference.qconfig_map)] == [reason]


def linear_relu_quantized_with(zero_point, *, dtype_by_keyword: bool):
    gm = hand_built_linear_relu(out_zero_point=0)
    gm.out_zp = zero_point
    out = [node for node in gm.graph.nodes if node.target is torch.quantize_per_tensor][-1]
    if dtype_by_keyword:
        out.args, out.kwargs = out.args[:3], {"dtype": out.args[3]}
    return gm


def test_a_relu_implied_by_a_zero_point_given_with_its_dtype_by_keyword_is_dropped():
    result = LOWER_STATIC_MODULES.run(fqlower.from_fx(linear_relu_quantized_with(torch.tensor(0), dtype_by_keyword=True)))
    (change,) = result.changes
    assert "relu" in change.bindings and change.reason == ""


def test_a_relu_whose_zero_point_is_no_scalar_is_kept_with_the_reason():
    gm = linear_relu_quantized_with(torch.tensor([0, 0]), dtype_by_keyword=False)
    (change,) = LOWER_STATIC_MODULES.run(fqlower.from_fx(gm)).changes
    assert change.reason == (
        "relu 'relu' stays after the quantized op: the output zero point does not clamp at zero, "
        "and torch would drop it and let negative values through"
    )


# --- weight-only modules ----------------------------------------------------------------------------


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)

    def forward(self, indices):
        return self.emb(indices)


def test_a_weight_only_module_change_binds_the_reference_module():
    mapping = QConfigMapping().set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
    reference = reference_model(Embed(), (torch.tensor([1, 2, 3]),), mapping)
    (change,) = LOWER_WEIGHT_ONLY_MODULES.run(program_of(reference)).changes
    assert (change.anchor, dict(change.bindings)) == ("emb", {"reference": "emb"})


def test_output_qparams_also_read_by_another_quantize_stay_in_the_program():
    gm = hand_built_linear_relu(out_zero_point=0)
    nodes = {node.name: node for node in gm.graph.nodes}
    output = nodes["output"]
    with gm.graph.inserting_before(output):
        other = gm.graph.call_function(
            torch.quantize_per_tensor, (nodes["x"], nodes["out_scale"], nodes["out_zp"], torch.quint8)
        )
    output.args = ((output.args[0], other),)
    gm.recompile()
    (change,) = LOWER_STATIC_MODULES.run(fqlower.from_fx(gm)).changes
    # without the other reader, the change also removes out_scale and out_zp
    assert change.edits[2:] == (ReplaceUses("quantize_per_tensor_1", "fc"), RemoveNode("quantize_per_tensor_1"))


def test_a_dynamic_module_keeps_the_keyword_arguments_of_its_call():
    gm, _, dequantize = dynamic_linear()
    x = dequantize.args[0].args[0]
    fc = node_named(gm, "fc")
    fc.kwargs = {"extra": 3}
    (change,) = LOWER_DYNAMIC_MODULES.run(fqlower.from_fx(gm)).changes
    assert change.edits[-1] == SetArgs("fc", (Ref(x.name),), fqlower.FrozenDict({"extra": 3}))


def test_two_input_module_qparams_also_read_by_another_quantize_stay_in_the_program():
    reference = conv_add_reference()
    program = program_of(reference)
    (change,) = LOWER_TWO_INPUT_MODULES.run(program).changes
    scale, zero_point = change.bindings["scale"], change.bindings["zero_point"]
    assert change.edits[-2:] == (RemoveNode(scale), RemoveNode(zero_point))  # alone, they go
    x = next(node.name for node in program.nodes() if node.op == "placeholder")
    other = fqlower.Node("other", "call_function", torch.quantize_per_tensor, (Ref(x), Ref(scale), Ref(zero_point), torch.quint8))
    shared = fqlower.apply(program, [AddNode(other, after=zero_point)])
    (change,) = LOWER_TWO_INPUT_MODULES.run(shared).changes
    assert change.edits[-2:] == (ReplaceUses(change.anchor, change.bindings["reference"]), RemoveNode(change.anchor))
