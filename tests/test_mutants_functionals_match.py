"""The matchers of the static and dynamic functional passes, down to the exact outcome:
tests written against mutmut's survivors in `match` of
fqlower.passes.static_functionals and fqlower.passes.dynamic_functionals
(`make mutation`, docs/mutation.md).

Every graph is built by hand, as small as the check needs, and only the one pass
runs on it. Each refusal is pinned by its rule, node, exact reason and code; each
boolean check gets a case where exactly one side holds, so that swapping `and` and
`or` changes the outcome; a match is pinned by its exact bindings and code.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_pass_special_patterns import Builder

import fqlower
from fqlower.log import Change, Skip
from fqlower.passes import LOWER_DYNAMIC_FUNCTIONALS, LOWER_STATIC_FUNCTIONALS
from fqlower.passes import dynamic_functionals
from fqlower.reasons import Code

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

STATIC = "lower-static-functionals"
DYNAMIC = "lower-dynamic-functionals"

WEIGHTS = {
    F.linear: [[1.0, 2.0], [3.0, 4.0]],
    F.conv2d: [[[[1.0]]]],
    F.conv_transpose2d: [[[[1.0]]]],
    F.conv1d: [[[1.0]]],
    F.conv3d: [[[[[1.0]]]]],
}


def quantized_weight(b, kind, fn):
    """The node a weight's dequantize reads, built as `kind` says."""
    if kind == "input":
        w = b.placeholder("w")
    else:
        w = b.constant("w", WEIGHTS[fn])
    if kind in ("per-tensor", "input"):
        return b.call("qw", torch.quantize_per_tensor, w, b.constant("sw", 0.1), b.constant("zw", 0), torch.qint8)
    if kind == "quint8":
        return b.call("qw", torch.quantize_per_tensor, w, b.constant("sw", 0.1), b.constant("zw", 0), torch.quint8)
    if kind == "float-zero-point":
        return b.call("qw", torch.quantize_per_tensor, w, b.constant("sw", 0.1), b.constant("zw", 0.0), torch.qint8)
    if kind == "keywords":
        return b.call(
            "qw", torch.quantize_per_tensor, input=w, scale=b.constant("sw", 0.1), zero_point=b.constant("zw", 0), dtype=torch.qint8
        )
    if kind == "neg":  # a call_function that is no weight quantizer
        return b.call("qw", torch.neg, w)
    if kind == "get_attr":  # the float weight itself
        return w
    raise AssertionError(kind)


def bias_node(b, bias):
    if bias == "const":
        return b.constant("b", [0.5, -0.5])
    if bias == "input":
        return b.placeholder("b")
    return None


# --- static -----------------------------------------------------------------------------------------


def static_graph(
    fn=F.linear,
    *,
    name="linear",
    relu=False,
    weight="per-tensor",
    bias="const",
    input_dequantized=True,
    weight_dequantized=True,
    extra_user=None,
    out_scale="const",
    out_zero_point=64,
    fn_kwargs=None,
    extra_args=(),
):
    """x -> quantize -> dequantize -> fn(·, dequantize(quantize(w)), b) -> [relu] -> quantize -> dequantize.

    `extra_user` ("function" or "relu") gives that node a second user, torch.neg."""
    b = Builder()
    x = b.placeholder("x")
    q_in = b.quantize("q_in", x, "scale_in", "zp_in", values=(0.02, 128))
    dq = b.dequantize("dq", q_in) if input_dequantized else x
    qw = quantized_weight(b, weight, fn)
    dqw = b.dequantize("dqw", qw) if weight_dequantized else qw
    bias_arg = bias_node(b, bias)
    out = b.call(name, fn, dq, dqw, bias_arg, *extra_args, **(fn_kwargs or {}))
    nodes = {"function": out}
    if relu:
        out = nodes["relu"] = b.call("relu", F.relu, out)
    scale = b.constant("scale", 0.05) if out_scale == "const" else out_scale
    q = b.call("q", torch.quantize_per_tensor, out, scale, b.constant("zp", out_zero_point), torch.quint8)
    result = b.dequantize("dq_out", q)
    if extra_user is not None:
        result = (result, b.call("other", torch.neg, nodes[extra_user]))
    return b.output(result)


def run_static(gm, qconfig_map=None):
    return LOWER_STATIC_FUNCTIONALS.run(fqlower.from_fx(gm, qconfig_map or {}))


def only_skip(result):
    (entry,) = result.entries
    assert isinstance(entry, Skip), entry
    return (entry.rule, entry.node, entry.reason, entry.code)


def only_change(result):
    (entry,) = result.entries
    assert isinstance(entry, Change), entry
    return entry


def static_bindings(name="linear", relu=False):
    found = {"quantize": "q", "function": name, "input_dequantize": "dq", "weight_quantize": "qw", "scale": "scale", "zero_point": "zp"}
    if relu:
        found["relu"] = "relu"
    return found


@pytest.mark.parametrize("bias", ["const", None], ids=["constant-bias", "no-bias"])
@pytest.mark.parametrize("weight", ["per-tensor", "keywords"])
def test_static_linear_with_a_constant_weight_and_bias_or_none_matches(bias, weight):
    # a None bias is no node name (`isinstance(name, str) and ...`), a constant one is made of constants
    change = only_change(run_static(static_graph(bias=bias, weight=weight)))
    assert (change.rule, change.anchor, dict(change.bindings), change.code, change.reason) == (
        STATIC, "q", static_bindings(), Code.AS_TORCH, ""
    )
    assert change.edits[1].target is torch.ops.quantized.linear


def test_static_linear_relu_matches_as_torch_even_when_the_zero_point_does_not_clamp():
    # linear has a fused relu op, so the relu is never kept, whatever the zero point
    change = only_change(run_static(static_graph(relu=True, out_zero_point=64)))
    assert (change.anchor, dict(change.bindings), change.code, change.reason) == ("q", static_bindings(relu=True), Code.AS_TORCH, "")
    assert change.edits[1].target is torch.ops.quantized.linear_relu


def test_static_conv_transpose_without_relu_is_not_marked_even_when_the_zero_point_does_not_clamp():
    change = only_change(run_static(static_graph(F.conv_transpose2d, name="conv_transpose2d", out_zero_point=64)))
    assert (dict(change.bindings), change.code, change.reason) == (static_bindings("conv_transpose2d"), Code.AS_TORCH, "")


def test_static_conv_transpose_with_a_relu_the_zero_point_does_not_imply_keeps_it():
    change = only_change(run_static(static_graph(F.conv_transpose2d, name="conv_transpose2d", relu=True, out_zero_point=64)))
    assert (dict(change.bindings), change.code) == (static_bindings("conv_transpose2d", relu=True), Code.TORCH_WRONG_RESULT)
    assert change.reason.startswith("relu 'relu' stays after the quantized op")


def test_static_conv_transpose_relu_with_a_literal_output_scale_is_refused_not_kept():
    # the qparams Miss is no Match: it must be returned as it is, relu or not
    gm = static_graph(F.conv_transpose2d, name="conv_transpose2d", relu=True, out_scale=0.05)
    assert only_skip(run_static(gm)) == (STATIC, "q", "the output scale of 'q' is not read from a constant", Code.TORCH_CRASHES)


def test_a_quantize_of_a_literal_a_placeholder_or_another_function_is_not_looked_at():
    # a literal has no node; a placeholder is no call_function; neg is a call_function but no functional
    b = Builder()
    x = b.placeholder("x")
    literal = b.call("q_literal", torch.quantize_per_tensor, 1.5, b.constant("s", 0.1), b.constant("z", 0), torch.quint8)
    direct = b.call("q_direct", torch.quantize_per_tensor, x, b.constant("s2", 0.1), b.constant("z2", 0), torch.quint8)
    neg = b.call("q_neg", torch.quantize_per_tensor, b.call("neg", torch.neg, x), b.constant("s3", 0.1), b.constant("z3", 0), torch.quint8)
    assert run_static(b.output((literal, direct, neg))).entries == ()


def test_static_qconfig_none_is_refused_naming_the_function():
    result = run_static(static_graph(), {"linear": None})
    assert only_skip(result) == (STATIC, "q", "qconfig of 'linear' is None", Code.AS_TORCH)


def test_static_call_bind_cannot_read_is_refused_with_binds_reason():
    gm = static_graph(extra_args=(1, 2))  # linear takes three arguments
    assert only_skip(run_static(gm)) == (STATIC, "q", "'linear' has more positional arguments than linear takes", Code.AS_TORCH)


def test_static_input_not_dequantized_is_refused():
    gm = static_graph(input_dequantized=False)
    assert only_skip(run_static(gm)) == (STATIC, "q", "the input of 'linear' is not dequantized", Code.AS_TORCH)


def test_static_weight_not_dequantized_is_refused():
    gm = static_graph(weight_dequantized=False)
    assert only_skip(run_static(gm)) == (STATIC, "q", "the weight of 'linear' is not dequantized", Code.AS_TORCH)


@pytest.mark.parametrize("weight", ["neg", "get_attr"], ids=["call-function", "get-attr"])
def test_static_weight_not_quantized_by_a_weight_quantizer_is_refused(weight):
    # neg is a call_function (only the target check holds); get_attr fails both checks
    gm = static_graph(weight=weight)
    assert only_skip(run_static(gm)) == (
        STATIC, "q", "the weight of 'linear' is not quantized with quantize_per_tensor or quantize_per_channel", Code.AS_TORCH
    )


@pytest.mark.parametrize("role", ["weight", "bias"])
def test_static_weight_or_bias_computed_from_an_input_is_refused_naming_the_role(role):
    gm = static_graph(weight="input") if role == "weight" else static_graph(bias="input")
    assert only_skip(run_static(gm)) == (
        STATIC, "q", f"the {role} of 'linear' is computed from the model's inputs, so it cannot be prepacked", Code.AS_TORCH
    )


def test_static_weight_with_float_zero_points_is_refused_with_the_problem():
    gm = static_graph(weight="float-zero-point")
    assert only_skip(run_static(gm)) == (
        STATIC,
        "q",
        "%qw quantizes the weight with floating-point zero points: torch would pack it "
        "into a weight that cannot be read back and computes garbage",
        Code.TORCH_WRONG_RESULT,
    )


def test_static_prepack_problem_is_refused_prefixed_with_the_function():
    gm = static_graph(F.conv2d, name="conv2d", fn_kwargs={"stride": (1, "2")})
    assert only_skip(run_static(gm)) == (
        STATIC, "q", "'conv2d': stride=(1, '2') is not a constant int or tuple of ints", Code.AS_TORCH
    )


def test_static_prepack_kernel_missing_keeps_its_code():
    gm = static_graph(weight="quint8")
    assert only_skip(run_static(gm)) == (
        STATIC, "q", "'linear': no linear prepack op for weight dtype torch.quint8", Code.KERNEL_MISSING
    )


OUTSIDE_USER = (
    "the output of 'linear' is also used outside the quantized pattern: torch would hand "
    "that user the quantized output"
)


@pytest.mark.parametrize(
    "relu, extra_user",
    [(False, "function"), (True, "function"), (True, "relu")],
    ids=["function-without-relu", "function-before-relu-only", "relu-only"],
)
def test_static_output_used_outside_the_pattern_is_refused(relu, extra_user):
    # with a relu: the function's other user alone, or the relu's other user alone, refuses
    gm = static_graph(relu=relu, extra_user=extra_user)
    assert only_skip(run_static(gm)) == (STATIC, "q", OUTSIDE_USER, Code.TORCH_WRONG_RESULT)


# --- dynamic ----------------------------------------------------------------------------------------


def dynamic_graph(
    fn=F.linear,
    *,
    name="linear",
    relu=None,
    weight="per-tensor",
    bias="const",
    activation_dtype=torch.quint8,
    dynamic_args=None,
    dynamic_kwargs=None,
    dynamic_target=torch.quantize_per_tensor_dynamic,
    input_dequantized=True,
    weight_dequantized=True,
    fn_kwargs=None,
    extra_args=(),
):
    """x -> quantize_per_tensor_dynamic(·, dtype, False) -> dequantize -> fn(·, dequantize(quantize(w)), b) -> [relu]."""
    b = Builder()
    x = b.placeholder("x")
    if dynamic_target is torch.quantize_per_tensor:
        qd = b.call("qd", torch.quantize_per_tensor, x, b.constant("scale_in", 0.1), b.constant("zp_in", 0), torch.quint8)
    else:
        args = (x, activation_dtype, False) if dynamic_args is None else (x, *dynamic_args)
        qd = b.call("qd", dynamic_target, *args, **(dynamic_kwargs or {}))
    dq = b.dequantize("dq", qd) if input_dequantized else x
    if weight == "fp16":
        qw = b.method("qw", "to", b.constant("w", WEIGHTS[fn]), torch.float16)
    else:
        qw = quantized_weight(b, weight, fn)
    dqw = b.dequantize("dqw", qw) if weight_dequantized else qw
    out = b.call(name, fn, dq, dqw, bias_node(b, bias), *extra_args, **(fn_kwargs or {}))
    if relu == "function":
        out = b.call("relu", F.relu, out)
    elif relu == "module":
        out = b.module("relu", "relu", nn.ReLU(), out)
    return b.output(out)


def run_dynamic(gm, qconfig_map=None):
    return LOWER_DYNAMIC_FUNCTIONALS.run(fqlower.from_fx(gm, qconfig_map or {}))


def dynamic_bindings(relu=False, name="linear"):
    found = {"function": name, "dynamic_quantize": "qd", "weight_quantize": "qw"}
    if relu:
        found["relu"] = "relu"
    return found


@pytest.mark.parametrize("bias", ["const", None], ids=["constant-bias", "no-bias"])
def test_dynamic_linear_matches(bias):
    change = only_change(run_dynamic(dynamic_graph(bias=bias)))
    assert (change.rule, change.anchor, dict(change.bindings), change.code) == (DYNAMIC, "linear", dynamic_bindings(), Code.AS_TORCH)
    assert change.edits[1].target is torch.ops.quantized.linear_dynamic


def test_dynamic_linear_with_a_weight_quantized_by_keywords_only_matches():
    # the weight quantizer has kwargs and no args: still quantized
    change = only_change(run_dynamic(dynamic_graph(weight="keywords")))
    assert dict(change.bindings) == dynamic_bindings()


def test_dynamic_fp16_linear_matches():
    change = only_change(run_dynamic(dynamic_graph(weight="fp16", activation_dtype=torch.float16)))
    assert dict(change.bindings) == dynamic_bindings()
    assert change.edits[1].target is torch.ops.quantized.linear_dynamic_fp16


@pytest.mark.parametrize("relu", ["function", "module"])
def test_dynamic_linear_relu_fuses(relu):
    change = only_change(run_dynamic(dynamic_graph(relu=relu)))
    assert dict(change.bindings) == dynamic_bindings(relu=True)
    assert change.edits[1].target is torch.ops.quantized.linear_relu_dynamic


def test_dynamic_pass_leaves_a_static_pattern_and_undequantized_operands_alone():
    assert run_dynamic(dynamic_graph(dynamic_target=torch.quantize_per_tensor)).entries == ()
    assert run_dynamic(dynamic_graph(weight_dequantized=False, weight="get_attr")).entries == ()
    assert run_dynamic(dynamic_graph(input_dequantized=False)).entries == ()


def test_dynamic_qconfig_none_is_refused_naming_the_function():
    assert only_skip(run_dynamic(dynamic_graph(), {"linear": None})) == (DYNAMIC, "linear", "qconfig of 'linear' is None", Code.AS_TORCH)


def test_dynamic_call_bind_cannot_read_is_refused_with_binds_reason():
    gm = dynamic_graph(extra_args=(1, 2))
    assert only_skip(run_dynamic(gm)) == (DYNAMIC, "linear", "'linear' has more positional arguments than linear takes", Code.AS_TORCH)


@pytest.mark.parametrize("fn", [F.conv1d, F.conv2d, F.conv3d], ids=lambda fn: fn.__name__)
def test_dynamic_conv_is_refused_as_kernel_missing_for_its_clamping(fn):
    gm = dynamic_graph(fn, name="conv")
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC,
        "conv",
        f"quantized::{fn.__name__}_dynamic clamps its output to the input's range in torch 2.13; left in float",
        Code.KERNEL_MISSING,
    )


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((torch.quint8,), {}),  # too few by position, no keywords
        ((torch.quint8, False), {"out": None}),  # three by position, and a keyword
        ((), {"dtype": torch.quint8, "reduce_range": False}),  # both
    ],
    ids=["two-positional", "three-positional-and-a-keyword", "keywords"],
)
def test_dynamic_quantize_not_passing_three_positional_arguments_is_refused(args, kwargs):
    gm = dynamic_graph(dynamic_args=args, dynamic_kwargs=kwargs)
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC, "linear", "'qd' does not pass (input, dtype, reduce_range) by position", Code.AS_TORCH
    )


def test_dynamic_weight_not_quantized_is_refused():
    # dequantize(w) of the float weight: the quantized weight has no args
    gm = dynamic_graph(weight="get_attr")
    assert only_skip(run_dynamic(gm)) == (DYNAMIC, "linear", "the weight of 'linear' is not quantized", Code.AS_TORCH)


def test_dynamic_weight_quantization_problem_is_refused_with_the_problem():
    gm = dynamic_graph(weight="float-zero-point")
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC,
        "linear",
        "%qw quantizes the weight with floating-point zero points: torch would pack it "
        "into a weight that cannot be read back and computes garbage",
        Code.TORCH_WRONG_RESULT,
    )


def test_dynamic_dtype_pair_without_a_kernel_is_refused_as_kernel_missing():
    gm = dynamic_graph(weight="quint8")
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC, "linear", "no dynamic linear for activation torch.quint8 and weight torch.quint8", Code.KERNEL_MISSING
    )


@pytest.fixture
def linear_without_fused_relu(monkeypatch):
    """Pretend int8 dynamic linear has no relu-fused op (only conv lacks one, and conv is refused earlier)."""
    table = dynamic_functionals.DYNAMIC_FUNCTIONALS[F.linear]
    monkeypatch.setitem(table, (torch.quint8, torch.qint8), (torch.ops.quantized.linear_dynamic, None))


def test_dynamic_relu_without_a_fused_op_is_refused_as_kernel_missing(linear_without_fused_relu):
    gm = dynamic_graph(relu="function")
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC, "linear", "no dynamic linear fused with relu (relu 'relu')", Code.KERNEL_MISSING
    )


def test_dynamic_op_without_a_fused_relu_still_matches_without_a_relu(linear_without_fused_relu):
    change = only_change(run_dynamic(dynamic_graph()))
    assert dict(change.bindings) == dynamic_bindings()


@pytest.mark.parametrize("role", ["weight", "bias"])
def test_dynamic_weight_or_bias_computed_from_an_input_is_refused_naming_the_role(role):
    gm = dynamic_graph(weight="input") if role == "weight" else dynamic_graph(bias="input")
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC, "linear", f"the {role} of 'linear' is computed from the model's inputs, so it cannot be prepacked", Code.AS_TORCH
    )


def test_dynamic_prepack_problem_is_refused_prefixed_with_the_function(monkeypatch):
    # dynamic conv is refused before prepacking; without that refusal the prepack check speaks
    monkeypatch.delitem(dynamic_functionals.UNRELIABLE_KERNELS, F.conv2d)
    gm = dynamic_graph(F.conv2d, name="conv", fn_kwargs={"stride": (1, "2")})
    assert only_skip(run_dynamic(gm)) == (
        DYNAMIC, "conv", "'conv': stride=(1, '2') is not a constant int or tuple of ints", Code.AS_TORCH
    )
