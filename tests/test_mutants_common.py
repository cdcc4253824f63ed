"""The queries the passes share (fqlower.passes.common) and the binary-op pass's
messages, down to the exact answer: tests written against mutmut's survivors
(`make mutation`, docs/mutation.md).

The helpers are called directly on small programs, on the inputs the passes'
own tests never give them: a method call named like a module, a module that is
neither the input's nor a spec, inputs that are no dequantize, a node still used
outside the nodes going away, taken names, and weights whose dtype is missing or
whose zero points are literals, integers or floats.
"""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import call, tiny_program
from test_pass_special_patterns import Builder

import fqlower
from fqlower import Ref, SetModule, apply
from fqlower.passes import LOWER_BINARY_OPS
from fqlower.passes.common import (
    dequantize_sources,
    fresh_name,
    module_of,
    removable,
    source_of_module,
    weight_dtype,
    weight_quantization_problem,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


def test_module_of_a_method_call_named_like_a_module_is_none():
    program = tiny_program()
    method = fqlower.Node("fc_call", "call_method", "fc", (Ref("x"),))
    assert module_of(program, method) is None
    assert module_of(program, program.node("fc")) is program.modules["fc"]


def test_source_of_a_module_that_is_neither_the_inputs_nor_a_spec_is_refused_naming_its_path():
    program = apply(tiny_program(), [SetModule("fc", nn.ReLU())])
    with pytest.raises(ValueError) as raised:
        source_of_module(program, "fc")
    assert str(raised.value) == "module at 'fc' is neither from the input nor a spec"


def test_dequantize_sources_maps_only_dequantize_method_calls_to_their_input():
    b = Builder()
    x = b.placeholder("x")
    dq = b.dequantize("dq", x)
    neg_method = b.method("neg_method", "neg", x)
    neg_function = b.call("neg_function", torch.neg, x)
    gm = b.output((dq, neg_method, neg_function))
    program = fqlower.from_fx(gm)
    args = (Ref("dq"), Ref("neg_method"), [Ref("neg_function")])
    assert dequantize_sources(program, args) == {"dq": "x"}


def test_a_node_with_a_user_outside_the_nodes_going_away_is_not_removable():
    program = tiny_program()  # relu is used by add only; x by fc and add
    assert removable(program, "relu", {"add"})
    assert not removable(program, "x", {"fc"})
    assert not removable(program, "relu", set())


def test_matmul_with_a_relu_is_left_naming_the_op_torch_has_no_fused_kernel_for():
    b = Builder()
    x = b.placeholder("x")
    dq_a = b.dequantize("dq_a", b.quantize("q_a", x, "scale_a", "zp_a"))
    dq_b = b.dequantize("dq_b", b.quantize("q_b", b.call("t", torch.transpose, x, 2, 3), "scale_b", "zp_b"))
    relu = b.call("relu", F.relu, b.call("matmul", torch.matmul, dq_a, dq_b))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    result = LOWER_BINARY_OPS.run(fqlower.from_fx(gm))
    assert [entry.reason for entry in result.entries] == [
        "no quantized matmul fused with relu for 'matmul' + 'relu' (torch: KeyError)"
    ]


def test_a_fresh_name_is_the_first_free_one_counting_from_one():
    program = tiny_program()
    assert fresh_name(program, "new") == "new"
    assert fresh_name(program, "fc") == "fc_1"
    assert fresh_name(program, "new", {"new"}) == "new_1"
    assert fresh_name(program, "fc", {"fc_1", "fc_2"}) == "fc_3"


# --- weights: their dtype and whether they can be packed ------------------------------------------


def weight_graph():
    """x; w = get_attr w; s, zp_float, zp_int constants; for the weight helpers."""
    b = Builder()
    b.placeholder("x")
    b.constant("w", [[1.0, 2.0], [3.0, 4.0]])
    b.constant("scales", [0.1, 0.1])
    b.constant("zp_float", [0.5, 0.5])
    b.constant("zp_int", [0, 0])
    return fqlower.from_fx(b.output(None))


@pytest.mark.parametrize(
    "node, dtype",
    [
        (call("q", torch.quantize_per_tensor, Ref("w"), 0.1, 0, torch.qint8), torch.qint8),
        (fqlower.Node("q", "call_function", torch.quantize_per_channel, (Ref("w"),),
                      fqlower.FrozenDict({"scales": Ref("s"), "zero_points": Ref("z"), "axis": 0, "dtype": torch.quint8})), torch.quint8),
        (fqlower.Node("half", "call_method", "to", (Ref("w"), torch.float16)), torch.float16),
        (call("added", torch.add, Ref("w"), 1, torch.float16), torch.float16),
        (fqlower.Node("same", "call_method", "to", (Ref("w"),)), None),
    ],
    ids=["per-tensor", "per-channel-by-keyword", "to-float16", "other-function-last-argument", "no-dtype"],
)
def test_the_dtype_a_weight_node_produces(node, dtype):
    assert weight_dtype(node) == dtype


def test_a_weight_that_names_no_dtype_cannot_be_packed_as_torch_would_fail_reading_it():
    miss = weight_quantization_problem(weight_graph(), fqlower.Node("same", "call_method", "to", (Ref("w"),)))
    assert (miss.reason, miss.code.value) == ("%same names no dtype for the weight: torch would fail reading it", "torch-crashes")


@pytest.mark.parametrize(
    "weight",
    [
        call("added", torch.add, Ref("w"), 1, torch.float16),
        call("q", torch.quantize_per_tensor, Ref("w"), 0.1, 0, torch.qint8),
        call("q", torch.quantize_per_channel, Ref("w"), Ref("scales"), Ref("zp_int"), 0, torch.qint8),
    ],
    ids=["not-a-quantizer", "literal-zero-point", "integer-zero-points"],
)
def test_weights_that_can_be_packed_have_no_problem(weight):
    assert weight_quantization_problem(weight_graph(), weight) is None


def test_a_weight_with_floating_point_zero_points_cannot_be_packed_as_torch_computes_garbage():
    weight = call("q", torch.quantize_per_channel, Ref("w"), Ref("scales"), Ref("zp_float"), 0, torch.qint8)
    miss = weight_quantization_problem(weight_graph(), weight)
    assert (miss.reason, miss.code.value) == (
        "%q quantizes the weight with floating-point zero points: torch would pack it into a weight that cannot be "
        "read back and computes garbage",
        "torch-wrong-result",
    )
