"""fqlower.passes.kernel_bugs, function by function: tests written against mutmut's
survivors (`make mutation`, docs/mutation.md).

Hand-built FX graphs (test_pass_special_patterns' Builder) read into programs, and
the checks called directly on their nodes: which clamps count (function, method,
module), which bounds make a clamp one-sided, how far back a convolution is found
(module, functional, quantized op, a Build spec, a memory-format change), and which
PReLU weights and EmbeddingBag modes make torch's kernel compute something else.
The end-to-end versions are in test_reason_codes.
"""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
import torch.nn.functional as F
from test_pass_special_patterns import Builder
from torch.ao.quantization import MinMaxObserver, QConfig, default_qconfig

import fqlower
from fqlower import Build, Original, SetModule
from fqlower.passes.module_options import option_problem
from fqlower.passes.kernel_bugs import (
    _after_a_conv,
    _clamps,
    _is_conv_module,
    _one_sided_clamp,
    _prelu_problem,
    kernel_problem,
    view_of_channels_last,
)
from fqlower.engine.pipeline import Miss
from fqlower.reasons import Code
from fqlower.reference import quantized_engine

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


def program_of(build):
    """The program of the graph `build(b)` makes with a Builder (it returns the output value)."""
    b = Builder()
    return fqlower.from_fx(b.output(build(b)))


def one_op(make):
    """(program, node "op") for x -> [conv or not] -> op, where `make(b, x)` adds "op"."""
    program = program_of(lambda b: make(b, b.placeholder("x")))
    return program, program.node("op")


CONV_CLAMP_REASON = (
    "%op clamps the output of a convolution, which is channels_last, and qnnpack's quantized clamp, hardtanh "
    "and relu6 read a channels_last tensor as if it were contiguous: torch's lowered model would compute "
    "something else"
)
ONE_SIDED_REASON = (
    "%op clamps one side only, and qnnpack's quantized clamp needs both bounds: torch's lowered model would "
    "fail running it"
)


# --- _clamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, clamps",
    [
        (lambda b, x: b.call("op", torch.clamp, x, -1.0, 1.0), True),
        (lambda b, x: b.call("op", F.hardtanh, x), True),
        (lambda b, x: b.call("op", F.hardtanh_, x), True),
        (lambda b, x: b.call("op", F.relu6, x), True),
        (lambda b, x: b.call("op", torch.relu, x), False),
        (lambda b, x: b.method("op", "clamp", x, -1.0, 1.0), True),
        (lambda b, x: b.method("op", "clamp_", x, -1.0, 1.0), True),
        (lambda b, x: b.method("op", "clamp_min", x, 0.0), False),
        (lambda b, x: b.module("op", "op", nn.Hardtanh(), x), True),
        (lambda b, x: b.module("op", "op", nn.ReLU6(), x), True),
        (lambda b, x: b.module("op", "op", nn.ReLU(), x), False),
    ],
    ids=["torch.clamp", "F.hardtanh", "F.hardtanh_", "F.relu6", "torch.relu", "method-clamp", "method-clamp_",
         "method-clamp_min", "nn.Hardtanh", "nn.ReLU6", "nn.ReLU"],
)
def test_which_ops_clamp(make, clamps):
    program, op = one_op(make)
    module = program.modules.get(op.target) if op.op == "call_module" else None
    assert _clamps(op, module) is clamps


def test_a_function_or_method_is_judged_by_its_target_not_by_the_module_passed_along():
    _, function = one_op(lambda b, x: b.call("op", torch.neg, x))
    _, method = one_op(lambda b, x: b.method("op", "neg", x))
    assert not _clamps(function, nn.Hardtanh())
    assert not _clamps(method, nn.Hardtanh())


# --- _one_sided_clamp ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, one_sided",
    [
        (lambda b, x: b.call("op", torch.clamp, x, 0.0), True),
        (lambda b, x: b.call("op", torch.clamp, x, None, 1.0), True),
        (lambda b, x: b.call("op", torch.clamp, x, 0.0, None), True),
        (lambda b, x: b.call("op", torch.clamp, x, min=0.0), True),
        (lambda b, x: b.call("op", torch.clamp, x, max=1.0), True),
        (lambda b, x: b.call("op", torch.clamp, x, min=None, max=1.0), True),
        (lambda b, x: b.call("op", torch.clamp, x, 0.0, 1.0), False),
        (lambda b, x: b.call("op", torch.clamp, x, 0.0, max=1.0), False),
        (lambda b, x: b.call("op", torch.clamp, x, min=0.0, max=1.0), False),
        (lambda b, x: b.method("op", "clamp", x, min=0.0), True),
        (lambda b, x: b.method("op", "clamp", x, 0.0, 1.0), False),
        (lambda b, x: b.method("op", "clamp_", x, 0.0), True),
        (lambda b, x: b.method("op", "clamp_", x, min=0.0, max=1.0), False),
        # hardtanh and relu6 always have both bounds
        (lambda b, x: b.call("op", F.hardtanh, x), False),
        (lambda b, x: b.call("op", F.relu6, x), False),
        (lambda b, x: b.method("op", "clamp_min", x, 0.0), False),
        (lambda b, x: b.module("op", "op", nn.Hardtanh(), x), False),
    ],
    ids=["min-positional", "none-max", "min-none", "min-keyword", "max-keyword", "min-none-keyword",
         "both-positional", "min-positional-max-keyword", "both-keyword", "method-min", "method-both",
         "method_-min", "method_-both", "hardtanh", "relu6", "clamp_min-method", "hardtanh-module"],
)
def test_which_clamps_are_one_sided(make, one_sided):
    _, op = one_op(make)
    assert _one_sided_clamp(op) is one_sided


# --- _is_conv_module ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, conv",
    [
        (nn.Conv2d(2, 2, 1), True),
        (nn.ConvTranspose1d(2, 2, 1), True),
        (nnqr.Conv2d(2, 2, 1), True),
        (nni.ConvReLU2d(nn.Conv2d(2, 2, 1), nn.ReLU()), True),
        (nnq.Conv2d(2, 2, 1), True),
        (Build("torch.ao.nn.quantized.modules.conv.Conv2d.from_reference", (Original("conv"),)), True),
        (nn.Linear(2, 2), False),
        (Build("torch.ao.nn.quantized.modules.linear.Linear.from_reference", (Original("fc"),)), False),
        (None, False),
    ],
    ids=["float", "transpose", "reference", "fused", "quantized", "build-conv", "linear", "build-linear", "none"],
)
def test_which_modules_are_convolutions(module, conv):
    assert _is_conv_module(module) is conv


# --- _after_a_conv ----------------------------------------------------------------------------------


def relu_after(upstream):
    """(program, node "op"): x -> upstream(b, x) -> relu "op"."""
    return one_op(lambda b, x: b.call("op", torch.relu, upstream(b, x)))


def through_quantize(b, value):
    return b.dequantize("dq", b.quantize("q", value))


@pytest.mark.parametrize(
    "upstream, after",
    [
        (lambda b, x: b.module("conv", "conv", nn.Conv2d(2, 2, 1), x), True),
        (lambda b, x: b.module("conv", "conv", nnqr.Conv2d(2, 2, 1), x), True),
        (lambda b, x: through_quantize(b, b.module("conv", "conv", nn.Conv2d(2, 2, 1), x)), True),
        (lambda b, x: b.call("neg", torch.neg, through_quantize(b, b.call("conv", F.conv2d, x, b.constant("w", [[[[1.0]]]])))),
         True),
        (lambda b, x: b.call("conv", torch.ops.quantized.conv2d.default, x, b.constant("packed", 0.0), 0.1, 0), True),
        (lambda b, x: b.call("conv", torch.ops.quantized.conv2d, x, b.constant("packed", 0.0), 0.1, 0), True),
        (lambda b, x: b.method("cl", "contiguous", x, memory_format=torch.channels_last), True),
        (lambda b, x: b.method("cl", "to", x, memory_format=torch.channels_last), True),
        (lambda b, x: b.method("cl", "clone", x, memory_format=torch.channels_last), True),
        (lambda b, x: b.call("cl", torch.clone, x, memory_format=torch.channels_last), True),
        (lambda b, x: b.method("cl", "contiguous", x), False),
        (lambda b, x: b.method("cl", "to", x, torch.float), False),
        (lambda b, x: b.module("lin", "lin", nn.Linear(2, 2), x), False),
        (lambda b, x: through_quantize(b, b.call("neg", torch.neg, x)), False),
        (lambda b, x: x, False),
    ],
    ids=["float-module", "reference-module", "module-through-quantize", "functional-several-back",
         "quantized-op-overload", "quantized-op-packet", "contiguous-channels-last", "to-channels-last",
         "clone-method-channels-last", "clone-function-channels-last",
         "plain-contiguous", "to-dtype", "linear", "no-conv", "placeholder"],
)
def test_a_conv_or_memory_format_change_upstream_is_found(upstream, after):
    program, op = relu_after(upstream)
    assert _after_a_conv(program, op) is after


def test_a_conv_is_found_past_a_node_reached_twice():
    # op <- add(conv, add(neg_1(a), neg_2(a))): `a` is reached twice before the conv is
    def build(b, x):
        conv = b.module("conv", "conv", nn.Conv2d(2, 2, 1), x)
        a = b.call("a", torch.neg, x)
        both = b.call("both", torch.add, b.call("neg_1", torch.neg, a), b.call("neg_2", torch.neg, a))
        return b.call("op", torch.relu, b.call("total", torch.add, conv, both))

    program, op = one_op(build)
    assert _after_a_conv(program, op) is True


def test_a_conv_given_as_a_build_spec_is_found_and_one_of_another_module_is_not():
    program, op = relu_after(lambda b, x: b.module("m", "m", nn.Identity(), x))
    assert _after_a_conv(program, op) is False
    conv_spec = Build("torch.ao.nn.quantized.modules.conv.Conv2d.from_reference", (Original("m"),))
    linear_spec = Build("torch.ao.nn.quantized.modules.linear.Linear.from_reference", (Original("m"),))
    conv, linear = (fqlower.apply(program, [SetModule("m", spec)]) for spec in (conv_spec, linear_spec))
    assert _after_a_conv(conv, conv.node("op")) is True
    assert _after_a_conv(linear, linear.node("op")) is False


def test_only_the_inputs_of_the_node_count_not_the_node_itself():
    program, op = one_op(lambda b, x: b.module("op", "op", nn.Conv2d(2, 2, 1), x))
    assert _after_a_conv(program, op) is False


# --- kernel_problem ---------------------------------------------------------------------------------


def conv_then(make):
    return one_op(lambda b, x: make(b, b.module("conv", "conv", nn.Conv2d(2, 2, 1), x)))


def module_of(program, op):
    return program.modules.get(op.target) if op.op == "call_module" else None


@pytest.mark.parametrize(
    "make",
    [
        lambda b, x: b.call("op", torch.clamp, x, min=0.0),
        lambda b, x: b.method("op", "clamp", x, None, 1.0),
        lambda b, x: b.method("op", "clamp_", x, 0.0),
    ],
    ids=["function", "method", "method_"],
)
def test_a_one_sided_clamp_on_qnnpack_is_a_model_crash_even_after_a_conv(make):
    for program, op in (one_op(make), conv_then(make)):
        with quantized_engine("qnnpack"):
            assert kernel_problem(program, op, None) == Miss(ONE_SIDED_REASON, Code.TORCH_MODEL_CRASHES)
        with quantized_engine("x86"):
            assert kernel_problem(program, op, None) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda b, x: b.call("op", torch.clamp, x, -1.0, 1.0),
        lambda b, x: b.call("op", F.hardtanh, x),
        lambda b, x: b.call("op", F.hardtanh_, x),
        lambda b, x: b.call("op", F.relu6, x),
        lambda b, x: b.method("op", "clamp", x, min=-1.0, max=1.0),
        lambda b, x: b.method("op", "clamp_", x, -1.0, 1.0),
        lambda b, x: b.module("op", "op", nn.Hardtanh(), x),
        lambda b, x: b.module("op", "op", nn.ReLU6(), x),
    ],
    ids=["clamp", "hardtanh", "hardtanh_", "relu6", "method-clamp", "method-clamp_", "nn.Hardtanh", "nn.ReLU6"],
)
def test_a_two_sided_clamp_of_a_conv_output_on_qnnpack_computes_something_else(make):
    program, op = conv_then(make)
    with quantized_engine("qnnpack"):
        assert kernel_problem(program, op, module_of(program, op)) == Miss(CONV_CLAMP_REASON, Code.TORCH_WRONG_RESULT)
    with quantized_engine("x86"):
        assert kernel_problem(program, op, module_of(program, op)) is None
    program, op = one_op(make)  # no conv upstream
    with quantized_engine("qnnpack"):
        assert kernel_problem(program, op, module_of(program, op)) is None


def test_an_op_that_does_not_clamp_after_a_conv_is_fine_on_qnnpack():
    for make in (lambda b, x: b.call("op", torch.relu, x), lambda b, x: b.module("op", "op", nn.ReLU(), x)):
        program, op = conv_then(make)
        with quantized_engine("qnnpack"):
            assert kernel_problem(program, op, module_of(program, op)) is None


# --- PReLU ------------------------------------------------------------------------------------------


def prelu(init, qconfig=default_qconfig, cls=nn.PReLU):
    program, op = one_op(lambda b, x: b.module("op", "op", cls(init=init), x))
    module = program.modules["op"]
    if qconfig is not None:
        module.qconfig = qconfig
    return program, op, module


QUINT8_WEIGHT = QConfig(activation=default_qconfig.activation, weight=MinMaxObserver.with_args(dtype=torch.quint8))


@pytest.mark.parametrize("engine", ["x86", "qnnpack"])
def test_a_prelu_whose_weight_qparams_cannot_hold_one_shrinks_positive_inputs(engine):
    program, op, module = prelu(0.25)
    reason = (
        "%op is a PReLU whose weight quantizes with scale 0.00196 and zero point 0, which cannot hold 1.0 "
        "(it would be 510 > 255); quantized::prelu scales positive inputs by that 1.0, so torch's lowered "
        "model would shrink them"
    )
    with quantized_engine(engine):
        assert kernel_problem(program, op, module) == Miss(reason, Code.TORCH_WRONG_RESULT)
    assert _prelu_problem(op, module) == Miss(reason, Code.TORCH_WRONG_RESULT)


def test_the_zero_point_adds_to_the_one_a_prelu_weight_would_need():
    # quint8 weight -0.5: scale 0.5/255, zero point 255: 1.0 would be 510 + 255
    program, op, module = prelu(-0.5, QUINT8_WEIGHT)
    assert _prelu_problem(op, module) == Miss(
        "%op is a PReLU whose weight quantizes with scale 0.00196 and zero point 255, which cannot hold 1.0 "
        "(it would be 765 > 255); quantized::prelu scales positive inputs by that 1.0, so torch's lowered "
        "model would shrink them",
        Code.TORCH_WRONG_RESULT,
    )


@pytest.mark.parametrize("init", [0.6, 1.25], ids=["one-at-212", "one-at-102"])
def test_a_prelu_whose_weight_qparams_hold_one_is_fine(init):
    program, op, module = prelu(init)
    assert _prelu_problem(op, module) is None
    assert kernel_problem(program, op, module) is None


def test_a_prelu_without_a_qconfig_is_fine():
    program, op, module = prelu(0.25, qconfig=None)
    assert _prelu_problem(op, module) is None
    module.qconfig = None
    assert _prelu_problem(op, module) is None
    assert kernel_problem(program, op, module) is None


def test_only_an_nn_prelu_itself_is_checked():
    class MyPReLU(nn.PReLU):
        pass

    program, op, module = prelu(0.25, cls=MyPReLU)
    assert kernel_problem(program, op, module) is None


# --- view_of_channels_last ----------------------------------------------------------------------------


def test_a_view_of_a_conv_output_is_reshaped_with_the_exact_reason():
    program, op = conv_then(lambda b, x: b.method("op", "view", x, 1, -1))
    assert view_of_channels_last(program, op) == (
        "%op views the output of a convolution, which is channels_last once quantized: a view that merges "
        "channels with positions fails on it, so torch's lowered model would fail running it; fqlower reshapes "
        "instead (the same values, copied when the layout needs it)"
    )


@pytest.mark.parametrize(
    "graph",
    [
        lambda: one_op(lambda b, x: b.method("op", "view", x, 1, -1)),
        lambda: conv_then(lambda b, x: b.method("op", "reshape", x, 1, -1)),
        lambda: conv_then(lambda b, x: b.call("op", torch.flatten, x, 1)),
    ],
    ids=["view-without-conv", "reshape-of-conv", "function-of-conv"],
)
def test_other_views_need_no_reshape(graph):
    program, op = graph()
    assert view_of_channels_last(program, op) is None


# --- an EmbeddingBag's mode (module_options.option_problem) -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_a_reference_embedding_bag_that_does_not_sum_is_left_with_the_exact_reason(mode):
    program, op = one_op(lambda b, x: b.module("op", "bag", nnqr.EmbeddingBag(10, 4, mode=mode), x))
    assert option_problem(op, program.modules["bag"]) == Miss(
        f"EmbeddingBag 'bag' reduces with {mode!r}: the quantized EmbeddingBag always sums (torch 2.13 passes "
        "mode 0 to its kernel), so torch's lowered model would compute something else",
        Code.TORCH_WRONG_RESULT,
    )


@pytest.mark.parametrize(
    "module",
    [nnqr.EmbeddingBag(10, 4, mode="sum"), nn.EmbeddingBag(10, 4, mode="mean"), nn.Linear(2, 2)],
    ids=["reference-sum", "float-mean", "not-a-bag"],
)
def test_other_embedding_bags_are_fine(module):
    program, op = one_op(lambda b, x: b.module("op", "bag", module, x))
    assert option_problem(op, module) is None
