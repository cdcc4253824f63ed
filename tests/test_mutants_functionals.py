"""The functional passes, weight folding and prepack arguments, down to the exact
outcome: tests written against mutmut's survivors in
fqlower.passes.static_functionals, dynamic_functionals, fold_weights and prepack
(`make mutation`, docs/mutation.md).

A relu kept after a conv-transpose (no fused op) pins the edits that move it; the
folding tests pin the exact edits (which producers go, in which order) and the
attribute name a dotted scope gives; the prepack tests pin which stride values
count as ints; the dynamic tests pin which user of a linear counts as its relu.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig
import torch.nn as nn
import torch.nn.functional as F
from test_pass_functionals import CONV_X, LINEAR_X, FunctionalConvTranspose, FunctionalLinear, static
from test_pass_special_patterns import Builder

import fqlower
from fqlower import FrozenDict, ListArg, MoveNode, Ref, RemoveNode, ReplaceUses, SetConstant
from fqlower.engine.edits import AddNode
from fqlower.compare import lowering_differences
from fqlower.passes import FOLD_WEIGHTS, LOWER_DYNAMIC_FUNCTIONALS, LOWER_STATIC_FUNCTIONALS
from fqlower.passes.fold_weights import attribute_name, expression
from fqlower.passes.prepack import bind, prepack_call
from fqlower.reference import reference_model, torch_lowering

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


# --- a relu after an op with no fused relu ------------------------------------------------------


class ConvTransposeRelu(FunctionalConvTranspose):
    def forward(self, x):
        return F.relu(super().forward(x))


def conv_transpose_then_relu(out_zero_point):
    """conv_transpose2d -> relu -> quantize, the relu reading the op directly."""
    reference = static(ConvTransposeRelu(), CONV_X)
    gm = copy.deepcopy(reference.module)
    nodes = {node.name: node for node in gm.graph.nodes}
    nodes["relu"].args = (nodes["conv_transpose2d"],)
    for name in ("dequantize_2", "quantize_per_tensor_2", "_scale_1", "_zero_point_1"):
        gm.graph.erase_node(nodes[name])
    gm._zero_point_2 = torch.tensor(out_zero_point)
    gm.recompile()
    return LOWER_STATIC_FUNCTIONALS.run(fqlower.from_fx(gm, reference.qconfig_map, reference.node_name_to_scope))


def test_a_relu_the_output_zero_point_does_not_imply_is_moved_after_the_op_and_replaces_the_quantize():
    (change,) = conv_transpose_then_relu(64).changes
    assert change.edits[-4:] == (
        MoveNode("conv_transpose2d", after="_zero_point_2"),
        MoveNode("relu", after="conv_transpose2d"),
        ReplaceUses("quantize_per_tensor_3", "relu"),
        RemoveNode("quantize_per_tensor_3"),
    )
    assert change.reason.startswith("relu 'relu' stays after the quantized op")


def test_a_relu_the_output_zero_point_implies_is_dropped_with_the_quantize():
    (change,) = conv_transpose_then_relu(0).changes
    assert change.edits[-4:] == (
        MoveNode("conv_transpose2d", after="_zero_point_2"),
        ReplaceUses("quantize_per_tensor_3", "conv_transpose2d"),
        RemoveNode("quantize_per_tensor_3"),
        RemoveNode("relu"),
    )
    assert change.reason == ""


# --- weight folding ----------------------------------------------------------------------------


def prepack_graph(*, weight_from_input: bool = False, read: bool = True):
    """w -> quantize_per_tensor -> linear_prepack(·, None) -> quantized.linear(x, ·)."""
    b = Builder()
    x = b.placeholder("x")
    w = b.placeholder("w") if weight_from_input else b.constant("w", [[1.0, 2.0], [3.0, 4.0]])
    qw = b.call("qw", torch.quantize_per_tensor, w, b.constant("sw", 0.1), b.constant("zw", 0), torch.qint8)
    prepack = b.call("prepack", torch.ops.quantized.linear_prepack, qw, None)
    out = b.call("linear", torch.ops.quantized.linear, x, prepack, 1.0, 0) if read else x
    return fqlower.from_fx(b.output(out))


def test_folding_a_prepack_removes_its_producers_last_first():
    result = FOLD_WEIGHTS.run(prepack_graph())
    (change,) = result.entries
    assert (change.rule, change.anchor, dict(change.bindings)) == (
        "fold-packed-weight-unscoped", "prepack", {"prepack": "prepack", "reader": "linear"}
    )
    assert change.edits[1:] == (
        AddNode(fqlower.Node("linear_packed_weight_0", "get_attr", "linear_packed_weight_0"), after="prepack"),
        ReplaceUses("prepack", "linear_packed_weight_0"),
        RemoveNode("prepack"),
        RemoveNode("qw"),
        RemoveNode("zw"),
        RemoveNode("sw"),
        RemoveNode("w"),
    )
    assert isinstance(change.edits[0], SetConstant) and change.edits[0].attr == "linear_packed_weight_0"


def test_a_prepack_of_a_weight_computed_from_an_input_is_only_skipped():
    result = FOLD_WEIGHTS.run(prepack_graph(weight_from_input=True))
    assert [(type(entry).__name__, entry.reason) for entry in result.entries] == [
        ("Skip", "'prepack' packs a weight computed from the model's inputs; it stays a call at run time")
    ]


def test_a_dead_prepack_is_left_to_dead_code_elimination():
    assert FOLD_WEIGHTS.run(prepack_graph(read=False)).entries == ()


def test_a_packed_weight_attribute_is_named_after_the_scope_path_with_underscores():
    program = prepack_graph()
    assert attribute_name(program, "block.fc") == "block_fc_packed_weight_0"
    taken = fqlower.apply(program, [SetConstant("block_fc_packed_weight_0", 1.0)])
    assert attribute_name(taken, "block.fc") == "block_fc_packed_weight_1"


def test_the_spec_of_a_method_call_keeps_its_keyword_arguments():
    b = Builder()
    w = b.constant("w", [1.0, 2.0])
    half = b.method("half", "to", w, dtype=torch.float16)
    program = fqlower.from_fx(b.output(half))
    spec = expression(program, "half")
    assert (spec.factory, spec.args[0], spec.kwargs) == ("fqlower.emit.call_method", "to", FrozenDict({"dtype": torch.float16}))


# --- prepack arguments ----------------------------------------------------------------------------


def conv_call(**kwargs):
    return fqlower.Node("conv", "call_function", F.conv2d, (Ref("x"), Ref("w")), FrozenDict(kwargs))


def test_a_stride_given_as_a_list_is_prepacked_as_a_tuple():
    op, args = prepack_call(F.conv2d, bind(conv_call(stride=ListArg((2, 1)))), Ref("qw"), torch.qint8)
    assert op is torch.ops.quantized.conv2d_prepack
    assert args == (Ref("qw"), None, (2, 1), (0, 0), (1, 1), 1)


@pytest.mark.parametrize("stride", [(1, True), (1, "2"), (1, Ref("s"))], ids=["bool", "string", "node"])
def test_a_stride_holding_anything_but_ints_is_refused_naming_it(stride):
    miss = prepack_call(F.conv2d, bind(conv_call(stride=stride)), Ref("qw"), torch.qint8)
    assert miss.reason == f"stride={stride!r} is not a constant int or tuple of ints"


# --- dynamic functionals: which user is the relu torch fuses --------------------------------------


class LinearThen(FunctionalLinear):
    """F.linear followed by `after` (a module or a function)."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def forward(self, x):
        return self.after(F.linear(x, self.weight, self.bias))


@pytest.mark.parametrize(
    "after, ops",
    [
        (nn.ReLU(), [torch.ops.quantized.linear_relu_dynamic]),
        (torch.neg, [torch.ops.quantized.linear_dynamic, torch.neg]),
        (nn.Hardtanh(), [torch.ops.quantized.linear_dynamic]),
    ],
    ids=["relu-module-fuses", "other-function-does-not", "other-module-does-not"],
)
def test_a_dynamic_linear_fuses_only_a_relu_that_follows_it(after, ops):
    reference = reference_model(LinearThen(after), (LINEAR_X,), QConfigMapping().set_global(default_dynamic_qconfig))
    program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    (change,) = LOWER_DYNAMIC_FUNCTIONALS.run(program).changes
    assert ("relu" in change.bindings) == (type(after) is nn.ReLU)
    ours = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope).module
    assert [n.target for n in ours.graph.nodes if n.op == "call_function"] == ops
    assert lowering_differences(torch_lowering(reference), ours, (LINEAR_X,)) == []


def test_a_linear_weight_of_a_dtype_with_no_prepack_op_is_refused_as_kernel_missing():
    linear = fqlower.Node("linear", "call_function", F.linear, (Ref("x"), Ref("w")))
    miss = prepack_call(F.linear, bind(linear), Ref("qw"), torch.quint8)
    assert (miss.reason, miss.code.value) == ("no linear prepack op for weight dtype torch.quint8", "kernel-missing")


def test_conv_groups_that_are_not_a_constant_int_are_refused_naming_them():
    miss = prepack_call(F.conv2d, bind(conv_call(groups=2.0)), Ref("qw"), torch.qint8)
    assert miss.reason == "groups=2.0 is not a constant int"


def test_folding_a_prepack_read_by_a_scoped_op_is_anchored_at_the_prepack_and_named_after_the_scope():
    program = prepack_graph()
    program = fqlower.from_fx(fqlower.to_fx(program), {}, {"linear": ("block.fc", torch.nn.Linear)})
    (change,) = FOLD_WEIGHTS.run(program).entries
    assert (change.rule, change.anchor) == ("fold-packed-weight", "prepack")
    assert change.edits[0].attr == "block_fc_packed_weight_0"


def test_a_call_with_unknown_keywords_cannot_be_bound_and_says_which():
    assert bind(conv_call(fancy=1, extra=2)) == "'conv' passes unknown keywords ['extra', 'fancy']"


# --- static functional linear: each refusal, exactly ---------------------------------------------------


def static_linear_graph(*, input_dequantized=True, weight="quantized", bias="constant", out_qparams="constants", kwargs=None):
    """x -> q -> dq ─┐
    w -> q -> dq ─┼─> F.linear -> quantize(scale, zero point) -> dequantize, with one piece changed."""
    b = Builder()
    x = b.placeholder("x")
    dq_x = b.dequantize("dq_x", b.quantize("q_x", x, "scale_x", "zp_x")) if input_dequantized else x
    w = b.constant("w", [[1.0, 2.0], [3.0, 4.0]])
    if weight == "quantized":
        w_in = b.dequantize("dq_w", b.call("q_w", torch.quantize_per_tensor, w, b.constant("scale_w", 0.1), b.constant("zp_w", 0), torch.qint8))
    elif weight == "dequantized-input":
        w_in = b.dequantize("dq_w", b.placeholder("w_in"))
    else:
        w_in = w
    bias_in = b.constant("bias", [0.0, 0.0]) if bias == "constant" else b.call("bias", torch.neg, x)
    linear = b.call("linear", F.linear, dq_x, w_in, bias_in, **(kwargs or {}))
    if out_qparams == "constants":
        q = b.quantize("q", linear, "scale", "zp")
    elif out_qparams == "by-keyword":
        q = b.call("q", torch.quantize_per_tensor, linear, scale=b.constant("scale", 0.05), zero_point=b.constant("zp", 64),
                   dtype=torch.quint8)
    elif out_qparams == "literal-scale":
        q = b.call("q", torch.quantize_per_tensor, linear, 0.05, b.constant("zp", 64), torch.quint8)
    else:  # computed zero point
        q = b.call("q", torch.quantize_per_tensor, linear, b.constant("scale", 0.05), b.call("zp", torch.add, b.constant("zp_0", 60), 4),
                   torch.quint8)
    return b.output(b.dequantize("dq_out", q))


@pytest.mark.parametrize(
    "changes, qconfig_map, reason, code",
    [
        ({"input_dequantized": False}, {}, "the input of 'linear' is not dequantized", "as-torch"),
        ({"weight": "float"}, {}, "the weight of 'linear' is not dequantized", "as-torch"),
        ({"weight": "dequantized-input"}, {},
         "the weight of 'linear' is not quantized with quantize_per_tensor or quantize_per_channel", "as-torch"),
        ({"bias": "from-input"}, {}, "the bias of 'linear' is computed from the model's inputs, so it cannot be prepacked", "as-torch"),
        ({}, {"linear": None}, "qconfig of 'linear' is None", "as-torch"),
        ({"kwargs": {"fancy": 1}}, {}, "'linear' passes unknown keywords ['fancy']", "as-torch"),
        ({"out_qparams": "literal-scale"}, {}, "the output scale of 'q' is not read from a constant", "torch-crashes"),
        ({"out_qparams": "computed-zero-point"}, {}, "the output zero point of 'q' is not read from a constant", "torch-crashes"),
    ],
    ids=["input-not-dequantized", "weight-not-dequantized", "weight-not-quantized", "bias-from-input", "qconfig-none",
         "unknown-keyword", "literal-output-scale", "computed-output-zero-point"],
)
def test_a_static_functional_linear_that_cannot_be_lowered_is_skipped_with_the_exact_reason(changes, qconfig_map, reason, code):
    result = LOWER_STATIC_FUNCTIONALS.run(fqlower.from_fx(static_linear_graph(**changes), qconfig_map))
    assert [(type(entry).__name__, entry.reason, entry.code.value) for entry in result.entries] == [("Skip", reason, code)]


def test_a_static_functional_linear_whose_output_qparams_come_by_keyword_is_lowered_with_them():
    (change,) = LOWER_STATIC_FUNCTIONALS.run(fqlower.from_fx(static_linear_graph(out_qparams="by-keyword"))).entries
    assert (change.bindings["scale"], change.bindings["zero_point"]) == ("scale", "zp")
