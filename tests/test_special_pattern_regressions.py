"""Where torch's special-pattern lowering fails (crashes, or gives a model that crashes
or computes wrongly), and fqlower leaves the node with the reason and its code; and
the right calls next to them, which both lower."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import attrs

import copy

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping

import fqlower
from fqlower import Skip
from fqlower.compare import lowering_differences, values_equal
from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE
from fqlower.passes.special_patterns import LOWER_SPECIAL_PATTERNS
from fqlower.passes.static_modules import LOWER_STATIC_MODULES
from fqlower.reference import ReferenceModel, torch_lowering
from test_pass_special_patterns import X, Builder, around, assert_equals_torch, build, run_pass, torch_lowered

PASS = "lower-special-patterns"
PIPELINE = fqlower.Pipeline("t", (LOWER_STATIC_MODULES, LOWER_SPECIAL_PATTERNS, ELIMINATE_DEAD_CODE))

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


def only_skip(gm, inputs=X):
    """Run fqlower; return its one Skip after checking the result computes what `gm` does."""
    result = fqlower.lower(gm, pipeline=PIPELINE)
    skips = [entry for entry in result.log.entries if isinstance(entry, Skip)]
    assert len(skips) == 1 and not [c for c in result.log.changes if c.pass_name == PASS], result.log.entries
    if inputs is not None:
        with torch.no_grad():
            assert values_equal(result.module(*inputs), gm(*inputs))
    return skips[0]


def test_floordiv_has_no_quantized_kernel():
    class FloorDiv(nn.Module):
        def forward(self, x):
            return x // 2

    ref = build(FloorDiv, (4, 8))
    with pytest.raises(NotImplementedError, match="floor_divide"):
        torch_lowering(ref)(*ref.example_inputs)
    skip = only_skip(ref.module, ref.example_inputs)
    assert (skip.rule, skip.node) == ("reroute", "quantize_per_tensor_1") and "no quantized kernel" in skip.reason


def test_a_module_shared_by_calls_with_different_output_qparams():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.Hardswish()

        def forward(self, x):
            return self.act(self.act(x))

    ref = build(Shared, (4, 8))
    first, last = float(ref.module.act_scale_0), float(ref.module.act_scale_1)
    assert first != last
    lowered_by_torch = torch_lowering(ref)
    scales = []
    lowered_by_torch.act.register_forward_hook(lambda module, args, out: scales.append(out.q_scale()))
    lowered_by_torch(*ref.example_inputs)
    assert scales == [last, last]  # the first call's output should have had scale `first`
    result = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope, pipeline=PIPELINE)
    skips = result.log.skips
    assert [skip.rule for skip in skips] == ["swap-module", "swap-module"]
    assert "different output scales or zero points" in skips[0].reason
    assert type(result.module.act) is nn.Hardswish
    assert values_equal(result.module(*ref.example_inputs), ref.module(*ref.example_inputs))


def graph_with_other_ref_user():
    b = Builder()
    x = b.placeholder("x")
    relu = b.call("relu", F.relu, b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in")))
    return b.output((b.dequantize("dq_out", b.quantize("q", relu)), relu))


def graph_with_second_dequantized_input():
    b = Builder()
    x = b.placeholder("x")
    dq = b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in"))
    lo = b.dequantize("dq_lo", b.quantize("q_lo", b.call("neg", torch.neg, x), "scale_lo", "zp_lo"))
    return b.output(b.dequantize("dq_out", b.quantize("q", b.call("clamp", torch.clamp, dq, min=lo))))


def graph_with_scale_shared_by_two_quantizes():
    b = Builder()
    x = b.placeholder("x")
    scale, zp = b.constant("scale", 0.05), b.constant("zp", 64)
    relu = b.call("relu", F.relu, b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in")))
    q = b.quantize("q", relu, scale, zp)
    q_other = b.quantize("q_other", x, scale, zp)
    return b.output((b.dequantize("dq_out", q), b.dequantize("dq_other", q_other)))


def graph_with_qparam_inputs():
    b = Builder()
    x, scale, zp = b.placeholder("x"), b.placeholder("scale"), b.placeholder("zp")
    relu = b.call("relu", F.relu, b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in")))
    return b.output(b.dequantize("dq_out", b.quantize("q", relu, scale, zp)))


def graph_with_zero_point_first():
    b = Builder()
    zp = b.constant("zp", 64)
    x = b.placeholder("x")
    hardswish = b.call("hardswish", F.hardswish, b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in")))
    return b.output(b.dequantize("dq_out", b.quantize("q", hardswish, b.constant("scale", 0.05), zp)))


def graph_with_keyword_input():
    b = Builder()
    x = b.placeholder("x")
    scale, zp = b.constant("scale", 0.05), b.constant("zp", 64)
    q = b.call("q", torch.quantize_per_tensor, input=x, scale=scale, zero_point=zp, dtype=torch.quint8)
    return b.output(b.dequantize("dq_out", q))


def graph_quantizing_a_list():
    b = Builder()
    x = b.placeholder("x")
    scales, zps = b.constant("scales", [0.05, 0.05]), b.constant("zps", [64, 64])
    q = b.call("q", torch.quantize_per_tensor, [x, x], scales, zps, torch.quint8)
    return b.output(b.dequantize("dq_out", b.call("first", operator.getitem, q, 0)))


def graph_with_none_in_cat():
    b = Builder()
    x = b.placeholder("x")
    dq = b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in"))
    cat = b.call("cat", torch.cat, [dq, None], 1)  # (a graph that cannot run)
    return b.output(b.dequantize("dq_out", b.quantize("q", cat)))


def graph_with_nested_scale():
    b = Builder()
    x = b.placeholder("x")
    act = b.module("act", "act", nn.Hardswish(), b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in")))
    q = b.quantize("q", act, "qparams.scale", "qparams.zp")
    return b.output(b.dequantize("dq_out", q))


def graph_calling(fn, *args, **kwargs):
    return around(lambda b, dq: b.call("op", fn, dq, *args, **kwargs))


def wrong_type_of_second_output(lowered_by_torch):
    """torch hands the float user of the op the quantized tensor."""
    with torch.no_grad():
        assert lowered_by_torch(*X)[1].is_quantized


@attrs.frozen
class Regression:
    make: Callable[[], torch.fx.GraphModule]
    torch_fails: Any  # ("lowering" | "running", exception type), or a check of torch's result
    rule: str
    reason: str  # a fragment of the Skip's reason
    inputs: tuple = X
    runs: bool = True  # whether the graph itself runs (then fqlower's result must compute the same)


QPARAM_INPUTS = (*X, torch.tensor(0.05), torch.tensor(64))

REGRESSIONS = {
    "op-with-another-user": Regression(
        graph_with_other_ref_user, wrong_type_of_second_output, "reroute", "is also used by %output"
    ),
    "second-dequantized-input": Regression(
        graph_with_second_dequantized_input, ("running", RuntimeError), "reroute", "also reads the dequantized %dq_lo"
    ),
    "scale-shared-by-two-quantizes": Regression(
        graph_with_scale_shared_by_two_quantizes,
        ("lowering", RuntimeError),
        "reroute",
        "%scale, a parameter of %q, is also used by %q_other",
    ),
    "qparams-are-graph-inputs": Regression(
        graph_with_qparam_inputs, ("running", TypeError), "reroute", "is a graph input", QPARAM_INPUTS
    ),
    "zero-point-before-the-input": Regression(
        graph_with_zero_point_first, ("lowering", RuntimeError), "quantized-op", "comes after the zero point %zp"
    ),
    "quantize-input-by-keyword": Regression(
        graph_with_keyword_input, ("lowering", IndexError), "reroute", "gets its input by keyword"
    ),
    "quantize-of-a-list": Regression(graph_quantizing_a_list, ("lowering", AssertionError), "reroute", "not a node"),
    "none-in-cat": Regression(
        graph_with_none_in_cat, ("lowering", AttributeError), "reroute", "not a node", runs=False
    ),
    "nested-scale-attribute": Regression(
        graph_with_nested_scale, ("lowering", AttributeError), "swap-module", "not an attribute of the model itself"
    ),
    "leaky-relu-defaults": Regression(
        lambda: graph_calling(F.leaky_relu), ("running", RuntimeError), "quantized-op", "without 'negative_slope'"
    ),
    "elu-positional-alpha": Regression(
        lambda: graph_calling(F.elu, 0.5), ("running", RuntimeError), "quantized-op", "'alpha' as its 'output_scale'"
    ),
    "instance-norm-positional": Regression(
        lambda: graph_calling(F.instance_norm, None, None),
        ("running", RuntimeError),
        "quantized-op",
        "'running_mean' as its 'weight'",
    ),
    "elu-input-by-keyword": Regression(
        lambda: around(lambda b, dq: b.call("op", F.elu, input=dq)),
        ("running", RuntimeError),
        "quantized-op",
        "argument 'input' it does not have",
    ),
}


@pytest.mark.parametrize("case", REGRESSIONS.values(), ids=REGRESSIONS.keys())
def test_torch_fails_and_fqlower_leaves_the_node(case):
    if callable(case.torch_fails):
        case.torch_fails(torch_lowered(case.make(), case.inputs))
    else:
        stage, error = case.torch_fails
        if stage == "lowering":
            with pytest.raises(error):
                torch_lowered(case.make(), case.inputs)
        else:
            assert stage == "running", stage
            result = torch_lowered(case.make(), case.inputs)  # lowers, and the result fails to run
            with pytest.raises(error), torch.no_grad():
                result(*case.inputs)
    skip = only_skip(case.make(), case.inputs if case.runs else None)
    assert skip.rule == case.rule and case.reason in skip.reason, skip.reason


def test_a_right_call_is_not_missed():
    """The checks behind the regressions let torch's traced (keyword) calls through."""
    instance_norm = dict(running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True)
    for fn, kwargs in (
        (F.leaky_relu, dict(negative_slope=0.2, inplace=False)),
        (F.elu, dict(alpha=0.5, inplace=False)),
        (F.instance_norm, dict(instance_norm, momentum=0.1, eps=1e-5)),
    ):
        gm = graph_calling(fn, **kwargs)
        assert [entry.rule for entry in run_pass(gm).entries] == ["quantized-op"]
        assert_equals_torch(gm, X)


@pytest.mark.parametrize("form", ["function", "module"])
def test_regression_float16_avg_pool3d_stays_float(form):
    """Static fp16: torch reroutes avg_pool3d (F.avg_pool3d or nn.AvgPool3d, the latter
    found by the generator sweep) to read float16, which has no CPU kernel
    ("avg_pool3d_out_frame" not implemented for 'Half'); fqlower leaves it, with the reason."""
    root = torch.nn.Module()
    root.pool = torch.nn.AvgPool3d(2)
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    half = graph.call_method("to", (x, torch.float16))
    dequantized = graph.call_method("dequantize", (half,))
    if form == "function":
        pooled = graph.call_function(torch._C._nn.avg_pool3d, (dequantized, 2))
    else:
        pooled = graph.call_module("pool", (dequantized,))
    graph.output(graph.call_method("dequantize", (graph.call_method("to", (pooled, torch.float16)),)))
    gm = torch.fx.GraphModule(root, graph)
    x_value = torch.randn(1, 2, 4, 4, 4)
    from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

    with pytest.raises(RuntimeError, match="Half"):
        _lower_to_native_backend(copy.deepcopy(gm), {}, {})(x_value)
    result = fqlower.lower(gm)
    assert any("no float16 CPU kernel" in skip.reason for skip in result.log.skips)
    assert torch.equal(result.module(x_value), gm(x_value))


# --- a dequantize of a float (found by the fuzzer) ------------------------------------------------


def dequantize_reads_pool(extra_float_user: bool):
    """NormPoolReshape with `dequantize_4` reading `pool` itself (its quantize is dead);
    optionally `pool` also feeds a float add that the model returns."""
    import zoo

    case = zoo.case_by_id("NormPoolReshape-static_fbgemm").build()
    gm = copy.deepcopy(case.module)
    nodes = {n.name: n for n in gm.graph.nodes}
    nodes["dequantize_4"].args = (nodes["pool"],)
    if extra_float_user:
        output = nodes["output"]
        with gm.graph.inserting_before(output):
            plus_one = gm.graph.call_function(operator.add, (nodes["pool"], 1.0))
        output.args = ((output.args[0], plus_one),)
    gm.recompile()
    return case, gm


def test_regression_dequantize_and_size_users_take_the_rerouted_quantized_output():
    # Was: the reroute of %pool was skipped because %dequantize_4 and %size also read
    # it; downstream, quantized.linear then got a float. Both work on quantized
    # tensors, and torch's lowering (which reroutes) is right here.
    case, gm = dequantize_reads_pool(extra_float_user=False)
    ours = fqlower.lower(gm, case.qconfig_map, case.node_name_to_scope)
    assert [skip.reason for skip in ours.log.skips] == []
    theirs = torch_lowering(ReferenceModel(gm, case.qconfig_map, case.node_name_to_scope, case.example_inputs))
    assert lowering_differences(theirs, ours.module, case.example_inputs) == []


def test_regression_a_dequantize_of_an_op_left_in_float_is_not_bypassed():
    # %pool stays float (a float add reads it too), so bypassing %dequantize_4 for the
    # flatten would hand the quantized linear after it a float tensor.
    case, gm = dequantize_reads_pool(extra_float_user=True)
    ours = fqlower.lower(gm, case.qconfig_map, case.node_name_to_scope)
    reasons = [skip.reason for skip in ours.log.skips]
    assert "%dequantize_4 dequantizes %pool, which computes in float: torch would hand %flatten a float tensor where it expects a quantized one" in reasons
    out, expected = ours.module(*case.example_inputs), gm(*case.example_inputs)
    for got, want in zip(out, expected):
        assert (got - want).abs().max() <= 0.1 * want.abs().max() + 1e-3


class _UnquantizedRelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class _ReluChainWithAFloatBlock(nn.Module):
    """A relu in a block whose qconfig is None, read by a quantized relu and a float one."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = _UnquantizedRelu()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v1 = self.b1(F.relu(x))
        return F.relu(v1), torch.relu(v1)


def test_regression_generated_float_relu_read_twice_keeps_its_float_output():
    # found by the oracle law (1,000 generated examples): torch reroutes the unquantized
    # block's relu to read the quantized input and so returns a quantized second output;
    # fqlower keeps it float, with the reason, and the law now accepts such a departure
    # only when fqlower still computes what the reference model computes
    from fqlower.reference import reference_model, torch_lowering

    torch.manual_seed(0)
    qconfig_mapping = get_default_qconfig_mapping("fbgemm").set_module_name("b1", None)
    ref = reference_model(_ReluChainWithAFloatBlock().eval(), (torch.randn(256, 4),), qconfig_mapping)
    x = torch.randn(2, 4)
    theirs = torch_lowering(ref)(x)
    assert theirs[1].is_quantized  # torch: the float relu's output became quantized
    lowering = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    assert any("which torch would hand its quantized output" in skip.reason for skip in lowering.log.skips)
    ours, expected = lowering.module(x), ref.module(x)
    assert not ours[1].is_quantized
    assert torch.equal(ours[1], expected[1])
    assert (ours[0] - expected[0]).abs().max() <= 0.05


class _DropoutLeftFloat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b1_dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v1 = self.b1_dropout(F.relu(x))
        return F.relu(torch.relu(v1)), v1.contiguous()


def test_regression_generated_float_dropout_read_twice_runs_where_torchs_model_fails():
    # found by the oracle law (1,000 generated examples): torch swaps the unquantized
    # dropout for a quantized one and feeds its output to quantize_per_tensor, so its
    # lowered model raises NotImplementedError; fqlower leaves the dropout float, with the
    # reason, and its model computes what the reference computes
    from fqlower.reference import reference_model, torch_lowering

    torch.manual_seed(0)
    qconfig_mapping = get_default_qconfig_mapping("fbgemm").set_module_name("b1_dropout", None)
    ref = reference_model(_DropoutLeftFloat().eval(), (torch.randn(256, 4),), qconfig_mapping)
    x = torch.randn(2, 4)
    with pytest.raises(NotImplementedError):
        torch_lowering(ref)(x)
    lowering = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    assert any("which torch would hand its quantized output" in skip.reason for skip in lowering.log.skips)
    ours, expected = lowering.module(x), ref.module(x)
    assert all((a - b).abs().max() <= 0.05 for a, b in zip(ours, expected))
