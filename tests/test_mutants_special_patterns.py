"""The special-pattern pass, down to the exact outcome: tests written against
mutmut's survivors in fqlower.passes.special_patterns (`make mutation`,
docs/mutation.md).

Hand-built graphs (test_pass_special_patterns' Builder), each a case the pass's
other tests left open: a module shared by calls whose qparams are plain Python
numbers, a dead or doubly used call site, `cat` of a tuple or of nothing, a
dequantize of an op left in float, and quantizes whose scale or zero point are
given by keyword, as a literal or from a nested constant. Every test checks the
exact Change or the exact reason of the Skip.

Then every refusal of `classify` with its exact reason and code (a quantize of a
constant, an op without inputs, ops without quantized or float16 kernels, ...), the
casts that are no `.to(torch.float16)` anchor, a method named like a called module,
a view rerouted as a reshape, and, with `classify` counted, that the pass asks it once
per anchor and never about other nodes.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_pass_special_patterns import PASS, Builder, run_pass

import fqlower
from fqlower import Change, FrozenDict, Ref, RemoveNode, ReplaceUses, SetArgs, SetTarget, Skip
from fqlower.passes import special_patterns
from fqlower.passes.special_patterns import LOWER_SPECIAL_PATTERNS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


def outcomes(gm) -> list[tuple[str, str, str]]:
    """(kind, rule, reason) of each entry the special-pattern pass records on `gm`."""
    result = run_pass(gm)
    assert all(entry.pass_name == PASS for entry in result.entries)
    return [(type(entry).__name__, entry.rule, getattr(entry, "reason", "")) for entry in result.entries]


def quantized_input(b: Builder, name="dq"):
    x = b.placeholder("x")
    return b.dequantize(name, b.quantize("q_in", x, "scale_in", "zp_in"))


# --- a module shared by several calls --------------------------------------------------------


def shared_hardswish(first, second, *, plain: bool, dead_first_call: bool = False):
    """act(act(x)) with the output (scale, zero point) of each call given; `plain` keeps
    them as Python numbers (get_attr of plain attributes), else as tensor buffers."""
    b = Builder()
    dq = quantized_input(b)
    b.root.add_module("act", nn.Hardswish())
    if dead_first_call:
        b.node("act_dead", "call_module", "act", dq)

    def qparams(index, values):
        if plain:
            setattr(b.root, f"s{index}", values[0])
            setattr(b.root, f"z{index}", values[1])
            return b.node(f"s{index}", "get_attr", f"s{index}"), b.node(f"z{index}", "get_attr", f"z{index}")
        return b.constant(f"s{index}", values[0]), b.constant(f"z{index}", values[1])

    act_1 = b.node("act_1", "call_module", "act", dq)
    q_1 = b.call("q_1", torch.quantize_per_tensor, act_1, *qparams(1, first), torch.quint8)
    act_2 = b.node("act_2", "call_module", "act", b.dequantize("dq_1", q_1))
    q_2 = b.call("q_2", torch.quantize_per_tensor, act_2, *qparams(2, second), torch.quint8)
    return b.output(b.dequantize("dq_out", q_2))


DIFFERENT_QPARAMS = (
    "module 'act' is called by %act_1, %act_2 with different output scales or zero points; "
    "torch would give every call those of the last"
)


@pytest.mark.parametrize("plain", [True, False], ids=["python-numbers", "tensors"])
def test_a_shared_module_whose_calls_have_equal_qparams_is_swapped_at_both(plain):
    assert outcomes(shared_hardswish((0.05, 64), (0.05, 64), plain=plain)) == [
        ("Change", "swap-module", ""), ("Change", "swap-module", "")
    ]


@pytest.mark.parametrize(
    "second", [(0.06, 64), (0.05, 65), (0.05, 64.0)], ids=["other-scale", "other-zero-point", "int-vs-float-zero-point"]
)
def test_a_shared_module_whose_python_number_qparams_differ_is_left_with_the_exact_reason(second):
    assert outcomes(shared_hardswish((0.05, 64), second, plain=True)) == [
        ("Skip", "swap-module", DIFFERENT_QPARAMS), ("Skip", "swap-module", DIFFERENT_QPARAMS)
    ]


def test_a_dead_call_of_a_shared_module_does_not_hide_the_live_calls_qparams():
    gm = shared_hardswish((0.05, 64), (0.06, 64), plain=False, dead_first_call=True)
    reason = DIFFERENT_QPARAMS.replace("%act_1, %act_2", "%act_dead, %act_1, %act_2")
    assert outcomes(gm) == [("Skip", "swap-module", reason), ("Skip", "swap-module", reason)]


@pytest.mark.parametrize(
    "second_user",
    [lambda b, act: b.call("other_user", torch.neg, act), lambda b, act: b.method("other_user", "size", act)],
    ids=["float-user", "size-query"],
)
def test_a_shared_module_call_with_two_users_keeps_the_module_float_naming_that_call(second_user):
    # torch lowers a call only through its single user; a size query that the
    # quantized output would answer alike does not make a second user harmless here
    b = Builder()
    dq = quantized_input(b)
    b.root.add_module("act", nn.Hardswish())
    act_1 = b.node("act_1", "call_module", "act", dq)
    q_1 = b.quantize("q_1", act_1, "s1", "z1")
    other_user = second_user(b, act_1)
    act_2 = b.node("act_2", "call_module", "act", b.dequantize("dq_1", q_1))
    q_2 = b.quantize("q_2", act_2, "s2", "z2")
    gm = b.output((b.dequantize("dq_out", q_2), other_user))
    reason = (
        "module 'act' is called by %act_1, %act_2; torch would swap it for a Hardswish, "
        "and %act_1, which it does not lower, would then run it on a float input"
    )
    assert [entry[2] for entry in outcomes(gm) if entry[1] == "swap-module"][-1] == reason


def test_a_shared_module_call_whose_scale_is_a_literal_keeps_the_module_float():
    b = Builder()
    dq = quantized_input(b)
    b.root.add_module("act", nn.Hardswish())
    act_1 = b.node("act_1", "call_module", "act", dq)
    q_1 = b.call("q_1", torch.quantize_per_tensor, act_1, 0.05, b.constant("z1", 64), torch.quint8)
    act_2 = b.node("act_2", "call_module", "act", b.dequantize("dq_1", q_1))
    q_2 = b.quantize("q_2", act_2, "s2", "z2")
    gm = b.output(b.dequantize("dq_out", q_2))
    assert outcomes(gm) == [
        ("Skip", "swap-module", "the scale of %q_1 is not read from a constant: torch would fail reading it"),
        ("Skip", "swap-module",
         "module 'act' is called by %act_1, %act_2; torch would swap it for a Hardswish, "
         "and %act_1, which it does not lower, would then run it on a float input"),
    ]


# --- the quantize's scale and zero point ----------------------------------------------------------


def hardswish_module_then(quantize):
    """x -> q_in -> dq -> act (nn.Hardswish) -> quantize(b, act) -> dequantize."""
    b = Builder()
    dq = quantized_input(b)
    act = b.module("act", "act", nn.Hardswish(), dq)
    return b.output(b.dequantize("dq_out", quantize(b, act)))


def hardswish_function_then(quantize):
    """x -> q_in -> dq -> F.hardswish -> quantize(b, hardswish) -> dequantize."""
    b = Builder()
    dq = quantized_input(b)
    hardswish = b.call("hardswish", F.hardswish, dq)
    return b.output(b.dequantize("dq_out", quantize(b, hardswish)))


def dtype_by_keyword(b, ref):
    return b.call("q", torch.quantize_per_tensor, ref, b.constant("scale", 0.05), b.constant("zp", 64), dtype=torch.quint8)


def qparams_by_keyword(b, ref):
    s, z = b.constant("scale", 0.05), b.constant("zp", 64)
    return b.call("q", torch.quantize_per_tensor, ref, scale=s, zero_point=z, dtype=torch.quint8)


@pytest.mark.parametrize("graph", [hardswish_module_then, hardswish_function_then], ids=["swap-module", "quantized-op"])
def test_a_quantize_with_only_its_dtype_by_keyword_is_lowered(graph):
    (entry,) = run_pass(graph(dtype_by_keyword)).entries
    assert type(entry) is Change and entry.bindings["scale"] == "scale" and entry.bindings["zero_point"] == "zp"


@pytest.mark.parametrize(
    "graph, rule", [(hardswish_module_then, "swap-module"), (hardswish_function_then, "quantized-op")],
    ids=["swap-module", "quantized-op"],
)
def test_a_quantize_with_its_qparams_by_keyword_is_left_with_the_exact_reason(graph, rule):
    assert outcomes(graph(qparams_by_keyword)) == [
        ("Skip", rule, "%q passes its scale or zero point by keyword: torch reads args[1:3] and fails")
    ]


@pytest.mark.parametrize(
    "quantize, reason",
    [
        (lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, 0.05, b.constant("zp", 64), torch.quint8),
         "the scale of %q is not read from a constant: torch would fail reading it"),
        (lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, b.constant("scale", 0.05),
                               b.call("zp", torch.add, b.constant("zp_base", 60), 4), torch.quint8),
         "the zero point of %q is not read from a constant: torch would fail reading it"),
        (lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, b.constant("scale", 0.05), b.constant("sub.zp", 64),
                               torch.quint8),
         "the zero point of %q is 'sub.zp', not an attribute of the model itself: torch would fail reading it"),
        (lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, b.constant("sub.scale", 0.05), b.constant("zp", 64),
                               torch.quint8),
         "the scale of %q is 'sub.scale', not an attribute of the model itself: torch would fail reading it"),
    ],
    ids=["literal-scale", "computed-zero-point", "nested-zero-point", "nested-scale"],
)
def test_a_module_swap_needs_top_level_constant_qparams_and_says_which_is_not(quantize, reason):
    assert outcomes(hardswish_module_then(quantize)) == [("Skip", "swap-module", reason)]


def test_a_quantized_op_needs_a_zero_point_node_to_insert_after():
    gm = hardswish_function_then(
        lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, b.constant("scale", 0.05), 64, torch.quint8)
    )
    assert outcomes(gm) == [
        ("Skip", "quantized-op", "the zero point of %q is 64, not a node: torch would fail inserting after it")
    ]


def layer_norm_after_its_qparams(*eps):
    """A layer_norm whose weight and bias are read after the output zero point."""
    b = Builder()
    dq = quantized_input(b)
    scale, zp = b.constant("scale", 0.05), b.constant("zp", 64)
    weight, bias = b.constant("weight", [1.0] * 6), b.constant("bias", [0.0] * 6)
    norm = b.call("norm", F.layer_norm, dq, [6], weight, bias, *eps)
    return b.output(b.dequantize("dq_out", b.call("q", torch.quantize_per_tensor, norm, scale, zp, torch.quint8)))


def test_a_quantized_op_that_torch_would_call_without_a_required_argument_is_left():
    assert outcomes(layer_norm_after_its_qparams()) == [
        ("Skip", "quantized-op", "torch would call quantized::layer_norm without 'eps'; the lowered %norm would fail")
    ]


def test_a_quantized_op_reading_nodes_after_the_zero_point_names_the_first_of_them():
    assert outcomes(layer_norm_after_its_qparams(1e-5)) == [
        ("Skip", "quantized-op",
         "%weight comes after the zero point %zp, after which torch inserts the quantized op: its graph fails lint")
    ]


# --- which inputs count as dequantized --------------------------------------------------------------


def test_cat_of_a_tuple_bypasses_every_dequantize_in_it():
    b = Builder()
    x = b.placeholder("x")
    dq_a = b.dequantize("dq_a", b.quantize("q_a", x, "scale_a", "zp_a"))
    dq_b = b.dequantize("dq_b", b.quantize("q_b", b.call("neg", torch.neg, x), "scale_b", "zp_b"))
    cat = b.call("cat", torch.cat, (dq_a, dq_b), 1)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", cat)))
    (change,) = run_pass(gm).entries
    assert (change.rule, dict(change.bindings)) == (
        "reroute", {"quantize": "q", "reference": "cat", "dequantize_0": "dq_a", "dequantize_1": "dq_b"}
    )


def test_cat_of_an_empty_list_is_left_with_the_exact_reason():
    b = Builder()
    b.placeholder("x")
    cat = b.call("cat", torch.cat, [], 1)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", cat)))
    assert outcomes(gm) == [("Skip", "reroute", "%cat has an empty list of inputs")]


def test_cat_whose_second_input_is_a_method_call_is_not_this_pattern():
    b = Builder()
    x = b.placeholder("x")
    dq_a = b.dequantize("dq_a", b.quantize("q_a", x, "scale_a", "zp_a"))
    cat = b.call("cat", torch.cat, [dq_a, b.method("neg", "neg", x)], 1)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", cat)))
    assert outcomes(gm) == []


def test_a_reference_also_read_by_a_method_other_than_a_size_query_is_left():
    b = Builder()
    relu = b.call("relu", F.relu, quantized_input(b))
    gm = b.output((b.dequantize("dq_out", b.quantize("q", relu)), b.method("neg", "neg", relu)))
    assert outcomes(gm) == [
        ("Skip", "reroute", "%relu is also used by %neg, which torch would hand its quantized output")
    ]


@pytest.mark.parametrize(
    "float_op",
    [lambda b, dq: b.call("inner", F.relu, dq), lambda b, dq: b.method("inner", "relu", dq)],
    ids=["function", "method"],
)
def test_a_dequantize_of_an_op_left_in_float_is_not_rerouted(float_op):
    b = Builder()
    inner = float_op(b, quantized_input(b))
    relu = b.call("relu", F.relu, b.dequantize("dq_2", inner))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    assert outcomes(gm) == [
        ("Skip", "reroute",
         "%dq_2 dequantizes %inner, which computes in float: torch would hand %relu a float tensor where it expects a "
         "quantized one")
    ]


def test_a_dequantize_of_a_requantized_value_is_rerouted():
    b = Builder()
    requantized = b.quantize("q_mid", quantized_input(b), "scale_mid", "zp_mid")
    relu = b.call("relu", F.relu, b.dequantize("dq_2", requantized))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    assert outcomes(gm) == [("Change", "reroute", "")]


def test_a_dequantize_of_a_float16_cast_is_rerouted():
    b = Builder()
    half = b.method("half", "to", quantized_input(b), torch.float16)
    relu = b.call("relu", F.relu, b.dequantize("dq_2", half))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    assert outcomes(gm) == [("Change", "reroute", "")]


def test_a_quantized_op_given_as_many_positional_arguments_as_it_takes_is_checked_argument_by_argument():
    b = Builder()
    hardswish = b.call("hardswish", F.hardswish, quantized_input(b), False, 7)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", hardswish)))
    assert outcomes(gm) == [
        ("Skip", "quantized-op",
         "torch would call quantized::hardswish with hardswish's 'inplace' as its 'output_scale'; "
         "the lowered %hardswish would fail")
    ]


# --- the code of each refusal -------------------------------------------------------------------------


def shared_call_with_two_users():
    b = Builder()
    b.root.add_module("act", nn.Hardswish())
    act_1 = b.node("act_1", "call_module", "act", quantized_input(b))
    q_1 = b.quantize("q_1", act_1, "s1", "z1")
    act_2 = b.node("act_2", "call_module", "act", b.dequantize("dq_1", q_1))
    return b.output((b.dequantize("dq_out", b.quantize("q_2", act_2, "s2", "z2")), b.call("float_user", torch.neg, act_1)))


@pytest.mark.parametrize(
    "graph, codes",
    [
        (lambda: shared_hardswish((0.05, 64), (0.06, 64), plain=False), ["torch-wrong-result", "torch-wrong-result"]),
        (shared_call_with_two_users, ["torch-model-crashes"]),
        (lambda: hardswish_module_then(qparams_by_keyword), ["torch-crashes"]),
        (lambda: hardswish_function_then(qparams_by_keyword), ["torch-crashes"]),
        (lambda: hardswish_module_then(
            lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, 0.05, b.constant("zp", 64), torch.quint8)),
         ["torch-crashes"]),
        (lambda: hardswish_function_then(
            lambda b, ref: b.call("q", torch.quantize_per_tensor, ref, b.constant("scale", 0.05), 64, torch.quint8)),
         ["torch-crashes"]),
    ],
    ids=["shared-different-qparams", "shared-call-with-two-users", "module-qparams-by-keyword", "op-qparams-by-keyword",
         "module-literal-scale", "op-literal-zero-point"],
)
def test_each_refusal_records_the_code_of_what_torch_would_do(graph, codes):
    skips = [entry for entry in run_pass(graph()).entries if isinstance(entry, Skip)]
    assert [skip.code.value for skip in skips][-len(codes):] == codes


# --- the exact reason and code of each refusal of `classify` --------------------------------------------


def skips(gm) -> list[tuple[str, str, str, str]]:
    """(rule, node, reason, code) of each Skip the special-pattern pass records on `gm`,
    failing on any Change."""
    result = run_pass(gm)
    assert all(isinstance(entry, Skip) for entry in result.entries), result.entries
    return [(entry.rule, entry.node, entry.reason, entry.code.value) for entry in result.entries]


def quantized(op):
    """x -> q_in -> dq -> op(b, dq) -> quantize "q" (scale, zp) -> dequantize."""
    b = Builder()
    ref = op(b, quantized_input(b))
    return b.output(b.dequantize("dq_out", b.quantize("q", ref)))


def test_a_quantize_of_a_constant_names_the_constant():
    # torch reads q.args[0].op, which a float does not have
    b = Builder()
    b.placeholder("x")
    q = b.call("q", torch.quantize_per_tensor, 2.5, b.constant("scale", 0.05), b.constant("zp", 64), torch.quint8)
    assert skips(b.output(b.dequantize("dq_out", q))) == [
        ("reroute", "q", "%q quantizes 2.5, not a node: torch would fail reading its op", "torch-crashes")
    ]


def test_a_reference_op_without_inputs_is_left_as_torch_asserts():
    # torch: `assert len(ref_node.args) > 0 or len(ref_node.kwargs) > 0`
    assert skips(quantized(lambda b, dq: b.call("relu", F.relu))) == [
        ("reroute", "q", "%relu has no inputs: torch asserts it has some", "torch-crashes")
    ]


def test_a_reference_op_whose_first_input_is_a_number_is_left_as_torch_asserts():
    # torch asserts its first input is a Node, a tuple or a list
    assert skips(quantized(lambda b, dq: b.call("relu", F.relu, 2.5))) == [
        ("reroute", "q", "the first input of %relu is 2.5: torch asserts a node, tuple or list", "torch-crashes")
    ]


@pytest.mark.parametrize(
    "op, what",
    [
        (lambda b, dq: b.call("floordiv", operator.floordiv, dq, 2), ("floordiv", "floordiv")),
        (lambda b, dq: b.method("sigmoid", "sigmoid_", dq), ("sigmoid", "sigmoid_")),
        (lambda b, dq: b.method("tanh", "tanh_", dq), ("tanh", "tanh_")),
    ],
    ids=["function", "method-sigmoid_", "method-tanh_"],
)
def test_an_op_without_quantized_kernel_is_named_by_its_function_name_or_its_method(op, what):
    # a quantized tensor has no floor_divide, sigmoid_ or tanh_ kernel (NotImplementedError
    # on QuantizedCPU): torch's rerouted model fails running them
    name, target = what
    assert skips(quantized(op)) == [
        ("reroute", "q", f"%{name} ({target}) has no quantized kernel: torch's lowered model would fail running it",
         "torch-model-crashes")
    ]


def test_avg_pool3d_read_by_a_float16_cast_is_left_as_a_model_that_fails():
    # torch reroutes it to read float16: "avg_pool3d_out_frame" not implemented for 'Half'
    b = Builder()
    dq = b.dequantize("dq", b.method("to_in", "to", b.placeholder("x"), torch.float16))
    pool = b.module("pool", "pool", nn.AvgPool3d(2), dq)
    gm = b.output(b.dequantize("dq_out", b.method("to_out", "to", pool, torch.float16)))
    assert skips(gm) == [
        ("reroute", "to_out",
         "%pool has no float16 CPU kernel: rerouting it to read float16 would fail at run time", "torch-model-crashes")
    ]


def test_a_dequantize_of_an_op_left_in_float_is_a_model_that_fails():
    b = Builder()
    inner = b.call("inner", F.relu, quantized_input(b))
    relu = b.call("relu", F.relu, b.dequantize("dq_2", inner))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    assert skips(gm) == [
        ("reroute", "q",
         "%dq_2 dequantizes %inner, which computes in float: torch would hand %relu a float tensor where it "
         "expects a quantized one",
         "torch-model-crashes")
    ]


def test_a_reference_op_with_two_other_users_lists_both():
    b = Builder()
    relu = b.call("relu", F.relu, quantized_input(b))
    q = b.quantize("q", relu)
    gm = b.output((b.dequantize("dq_out", q), b.method("neg", "neg", relu), b.call("absolute", torch.abs, relu)))
    assert skips(gm) == [
        ("reroute", "q", "%relu is also used by %neg, %absolute, which torch would hand its quantized output",
         "torch-wrong-result")
    ]


def test_a_quantize_whose_scale_is_its_own_input_is_left_as_torch_fails_erasing_it():
    # torch erases the quantize's Node arguments after handing its users the op: the op
    # (used by dq_out then) cannot be erased (checked: "Tried to erase Node relu")
    b = Builder()
    relu = b.call("relu", F.relu, quantized_input(b))
    q = b.call("q", torch.quantize_per_tensor, relu, relu, b.constant("zp", 64), torch.quint8)
    assert skips(b.output(b.dequantize("dq_out", q))) == [
        ("reroute", "q", "%q computes its parameters from its own input (%relu): torch would fail erasing them",
         "torch-crashes")
    ]


def test_a_dequantize_without_positional_input_is_left_as_torch_crashes():
    # torch reads dq_node.args[0]
    program = fqlower.from_fx(quantized(lambda b, dq: b.call("relu", F.relu, dq)))
    (source,) = program.node("dq").args
    program = fqlower.apply(program, [SetArgs("dq", (), FrozenDict({"self": source}))])
    result = LOWER_SPECIAL_PATTERNS.run(program)
    assert [(entry.rule, entry.node, entry.reason, entry.code.value) for entry in result.entries] == [
        ("reroute", "q", "%dq is a dequantize without positional input: torch would fail reading it", "torch-crashes")
    ]


# --- what `classify` reroutes, and how ---------------------------------------------------------------------


def test_a_dequantize_of_a_number_is_bypassed_as_torch_does():
    # torch replaces the dequantize by its input, whatever it is: relu(2.5)
    b = Builder()
    b.placeholder("x")
    relu = b.call("relu", F.relu, b.method("dq_2", "dequantize", 2.5))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    (change,) = run_pass(gm).entries
    assert (type(change), change.rule, change.edits) == (
        Change, "reroute",
        (SetArgs("relu", (2.5,), FrozenDict()), ReplaceUses("q", "relu"), RemoveNode("q"), RemoveNode("scale"),
         RemoveNode("zp")),
    )


def test_cat_of_a_list_of_one_dequantize_binds_it_by_index():
    b = Builder()
    cat = b.call("cat", torch.cat, [quantized_input(b, "dq_a")], 1)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", cat)))
    (change,) = run_pass(gm).entries
    assert dict(change.bindings) == {"quantize": "q", "reference": "cat", "dequantize_0": "dq_a"}


def test_a_view_of_a_conv_output_is_rerouted_as_a_reshape_with_its_reason():
    b = Builder()
    conv = b.call("conv", F.conv2d, b.placeholder("x"), b.constant("w", [[[[1.0]]]]))
    dq = b.dequantize("dq", b.quantize("q_mid", conv, "scale_mid", "zp_mid"))
    view = b.method("view", "view", dq, 1, -1)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", view)))
    (change,) = run_pass(gm).entries
    assert (change.rule, change.code.value, change.reason) == (
        "reroute", "torch-model-crashes",
        "%view views the output of a convolution, which is channels_last once quantized: a view that merges "
        "channels with positions fails on it, so torch's lowered model would fail running it; fqlower reshapes "
        "instead (the same values, copied when the layout needs it)",
    )
    assert change.edits[:2] == (SetTarget("view", "call_method", "reshape"), SetArgs("view", (Ref("q_mid"), 1, -1), FrozenDict()))


def test_a_method_named_like_a_module_is_not_that_module():
    # torch looks modules up for call_module nodes only: dq.mean(1) is rerouted even
    # though the model calls an AvgPool3d (no float16 kernel) at "mean" too
    b = Builder()
    x = b.placeholder("x")
    pooled = b.module("pooled", "mean", nn.AvgPool3d(2), x)
    dq = b.dequantize("dq", b.method("to_in", "to", x, torch.float16))
    mean = b.method("mean", "mean", dq, 1)
    gm = b.output((b.dequantize("dq_out", b.method("to_out", "to", mean, torch.float16)), pooled))
    (change,) = run_pass(gm).entries
    assert (type(change), change.rule, change.edits) == (
        Change, "reroute",
        (SetArgs("mean", (Ref("to_in"), 1), FrozenDict()), ReplaceUses("to_out", "mean"), RemoveNode("to_out")),
    )


@pytest.mark.parametrize(
    "cast",
    [
        lambda b, ref: b.method("cast", "to", ref, torch.float32),
        lambda b, ref: b.method("cast", "to", ref, dtype=torch.float16),
        lambda b, ref: b.method("cast", "type", ref, torch.float16),
    ],
    ids=["to-float32", "to-float16-by-keyword", "type-float16"],
)
def test_only_a_to_float16_with_two_positional_arguments_is_an_anchor(cast):
    # torch: op == "call_method" and target == "to" and len(args) == 2 and args[1] == torch.float16
    b = Builder()
    relu = b.call("relu", F.relu, quantized_input(b))
    assert run_pass(b.output(cast(b, relu))).entries == ()


def test_classify_passes_by_an_op_whose_input_is_not_dequantized():
    b = Builder()
    relu = b.call("relu", F.relu, b.placeholder("x"))
    program = fqlower.from_fx(b.output(b.dequantize("dq_out", b.quantize("q", relu))))
    start = special_patterns.PassStart.of(program)
    assert special_patterns.classify(start, program, program.node("q")) is None
    assert special_patterns.classify(start, program, program.node("relu")) is None


# --- modules called once, or read by something else than a quantize --------------------------------------


def test_a_module_called_once_with_a_size_query_beside_its_quantize_is_swapped():
    # the size of the quantized output is the size of the float one: torch's lowering is right
    b = Builder()
    act = b.module("act", "act", nn.Hardswish(), quantized_input(b))
    q = b.quantize("q", act)
    gm = b.output((b.dequantize("dq_out", q), b.method("size", "size", act)))
    assert outcomes(gm) == [("Change", "swap-module", "")]


def test_a_shared_module_whose_other_call_feeds_a_clamp_keeps_the_module_float():
    # the clamp reads act_1 with two constants, as a quantize reads its scale and zero
    # point, but is no quantize: torch does not lower act_1, yet swaps the module for act_2
    b = Builder()
    b.root.add_module("act", nn.Hardswish())
    act_1 = b.node("act_1", "call_module", "act", quantized_input(b))
    clamp = b.call("clamp", torch.clamp, act_1, b.constant("lo", 0.05), b.constant("hi", 64))
    act_2 = b.node("act_2", "call_module", "act", b.dequantize("dq_1", b.quantize("q_1", clamp, "s1", "z1")))
    gm = b.output(b.dequantize("dq_out", b.quantize("q_2", act_2, "s2", "z2")))
    assert outcomes(gm) == [
        ("Skip", "swap-module",
         "module 'act' is called by %act_1, %act_2; torch would swap it for a Hardswish, "
         "and %act_1, which it does not lower, would then run it on a float input"),
    ]


# --- each anchor is classified once, and nothing else ------------------------------------------------------


def test_the_pass_classifies_each_anchor_once_and_no_other_node(monkeypatch):
    asked = []
    classify = special_patterns.classify

    def counting(start, program, node, check_shared=True):
        asked.append(node.name)
        return classify(start, program, node, check_shared)

    monkeypatch.setattr(special_patterns, "classify", counting)
    b = Builder()
    dq = quantized_input(b)
    relu = b.call("relu", F.relu, dq)  # rerouted: a Change
    floordiv = b.call("floordiv", operator.floordiv, dq, 2)  # a Skip
    half = b.method("half", "to", b.call("neg", torch.neg, dq), torch.float16)  # passed by: float input
    q, q_f = b.quantize("q", relu), b.quantize("q_f", floordiv, "scale_f", "zp_f")
    gm = b.output((b.dequantize("dq_out", q), b.dequantize("dq_f", q_f), half))
    assert [type(entry).__name__ for entry in run_pass(gm).entries] == ["Change", "Skip"]
    assert asked == ["q_in", "half", "q", "q_f"]
