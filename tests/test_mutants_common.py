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

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import call, tiny_program
from test_pass_binary_ops import chain, run_pass, the_skip
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


# --- the default pipeline's name ---------------------------------------------------------------------


def test_the_default_pipeline_is_named_after_torchs_lowering_in_its_refusals():
    from fqlower.passes import default_pipeline

    pipeline = default_pipeline()
    with pytest.raises(fqlower.FqlowerError) as raised:
        pipeline.without("no-such-pass")
    assert raised.value.message == (
        f"pipeline 'lower-to-native-backend' has no pass named ['no-such-pass']; it has {list(pipeline.names)}"
    )


# --- binary ops: the exact refusals, nodes given by keyword ---------------------------------------------


def chain_node(gm, name):
    return next(node for node in gm.graph.nodes if node.name == name)


def binary_skip(gm):
    """(reason, code) of the one entry the binary-op pass records on `gm`: a Skip at qout."""
    skip = the_skip(run_pass(gm)[1])
    return skip.reason, skip.code.value


def test_a_relu_given_its_input_by_keyword_is_left_as_torch_reads_its_first_positional_argument():
    gm = chain(torch.add, relu=torch.relu)
    relu = chain_node(gm, "relu")
    relu.args, relu.kwargs = (), {"input": chain_node(gm, "op")}
    assert binary_skip(gm) == ("relu 'relu' takes its input by keyword (torch reads args[0])", "torch-crashes")


def test_a_binary_op_with_three_positional_arguments_is_left_naming_how_many():
    gm = chain(torch.add)
    op = chain_node(gm, "op")
    op.args = (*op.args, 2)
    # the reason only: torch lowers it to quantized.add(qa, qb, 2, scale, zero_point), which cannot run,
    # so the code (as-torch) is in doubt
    assert binary_skip(gm)[0] == "'op' has 3 positional arguments, not 2"


QUANTIZE_UNPACKED = (
    "quantize node 'qout' does not take input, scale, zero point and dtype as its four positional "
    "arguments (torch unpacks args[1:] and fails)"
)


def test_a_quantize_without_its_dtype_is_left_as_torch_cannot_unpack_it():
    gm = chain(operator.add)
    qout = chain_node(gm, "qout")
    qout.args = qout.args[:3]  # no dtype, and no keyword either
    assert binary_skip(gm) == (QUANTIZE_UNPACKED, "torch-crashes")


def test_a_quantize_given_every_argument_by_keyword_is_read_through_its_input_keyword():
    gm = chain(operator.add)
    qout = chain_node(gm, "qout")
    qout.kwargs = dict(zip(("input", "scale", "zero_point", "dtype"), qout.args))
    qout.args = ()
    # the op behind it is found (by its `input` keyword), so the quantize itself is what is refused
    assert binary_skip(gm) == (QUANTIZE_UNPACKED, "torch-crashes")


@pytest.fixture
def quantized_engine():
    saved = torch.backends.quantized.engine
    yield lambda name: setattr(torch.backends.quantized, "engine", name)
    torch.backends.quantized.engine = saved


def test_a_transposed_convs_weight_per_channel_cannot_be_packed_but_by_qnnpack_as_torch_would_fail(quantized_engine):
    weight = call("q", torch.quantize_per_channel, Ref("w"), Ref("scales"), Ref("zp_int"), 0, torch.qint8)
    quantized_engine("x86")
    miss = weight_quantization_problem(weight_graph(), weight, F.conv_transpose2d)
    assert (miss.reason, miss.code.value) == (
        "%q quantizes a transposed conv's weight per channel, which the x86 engine cannot pack (only qnnpack can): "
        "torch would fail packing it",
        "torch-crashes",
    )
    quantized_engine("qnnpack")
    assert weight_quantization_problem(weight_graph(), weight, F.conv_transpose2d) is None


# --- modules called from several places, and the nodes a module-swapping pass looks at -----------------


class LinearThrice(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(self.fc(x)))


def test_a_module_called_three_times_departs_at_each_call_naming_every_call_and_its_path():
    from torch.ao.quantization import get_default_qconfig_mapping

    from fqlower.passes import LOWER_STATIC_MODULES
    from fqlower.reference import reference_model

    reference = reference_model(LinearThrice(), (torch.randn(8, 4),), get_default_qconfig_mapping("fbgemm"))
    calls = [node.name for node in reference.module.graph.nodes if node.op == "call_module" and node.target == "fc"]
    assert len(calls) == 3
    result = LOWER_STATIC_MODULES.run(fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope))
    paths = dict(zip(calls, ("fc_1", "fc_2", "fc")))
    reason = (
        f"module 'fc' is called by {', '.join('%' + call for call in calls)} with different output qparams: each call "
        f"gets a quantized module of its own ({', '.join(f'%{call} -> {paths[call]!r}' for call in calls)}); "
        "torch would give every call those of the last"
    )
    assert [(change.anchor, change.reason, change.code.value) for change in result.entries] == [
        (change.anchor, reason, "torch-wrong-result") for change in result.changes
    ]
    assert len(result.changes) == 3 and len(result.entries) == 3


def test_a_module_swapping_pass_tries_its_rule_on_its_candidates_only():
    from fqlower.passes.common import is_call_module
    from fqlower.passes.module_calls import ModuleSwapPass
    from fqlower.engine.pipeline import Miss

    def looked_at(program, node):
        return Miss(f"looked at {node.name}")

    swap = ModuleSwapPass("toy-swap", looked_at, lambda program, found: [], is_call_module)
    result = swap.run(tiny_program())
    assert [(skip.node, skip.reason) for skip in result.entries] == [("fc", "looked at fc")]
