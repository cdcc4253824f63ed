"""Matching, down to the exact outcome: tests written against mutmut's survivors in
fqlower.passes.two_input_modules (`match`) and in fqlower.passes.special_patterns
(`_dequantize_list`, `_computes_in_float`) (`make mutation`, docs/mutation.md).

- Two-input fused modules: torch's conv-add reference model, edited where a case
  needs a graph torch never writes (a float conv in the fused module, padding by
  name, inputs by keyword or of the wrong count, an input that is not dequantized);
  `match` is called on the output quantize and its exact Match or Miss checked.
  Each operand of each boolean test has a case where it alone is true.
- Special patterns: hand-built graphs (test_pass_special_patterns' Builder) run
  through LOWER_SPECIAL_PATTERNS; each checks the exact Skip (rule, node, reason, code)
  or Change.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
import torch.nn.functional as F
from test_pass_modules import conv_add_reference
from test_pass_special_patterns import Builder, run_pass

import fqlower
from fqlower import Change, FrozenDict, SetArgs
from fqlower.passes.special_patterns import LOWER_SPECIAL_PATTERNS
from fqlower.passes.two_input_modules import match
from fqlower.engine.pipeline import Match, Miss
from fqlower.reasons import Code

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


# --- two-input fused modules: match ------------------------------------------------------------


@pytest.fixture(scope="module")
def conv_add():
    return conv_add_reference()


def edited(reference, edit=None, qconfig_map=None):
    """(program, node name -> fx node) of a copy of the conv-add reference model after `edit(gm, nodes)`."""
    gm = copy.deepcopy(reference.module)
    nodes = {node.name: node for node in gm.graph.nodes}
    if edit is not None:
        edit(gm, nodes)
        gm.recompile()
    qconfigs = dict(reference.qconfig_map) if qconfig_map is None else qconfig_map
    return fqlower.from_fx(gm, qconfigs, reference.node_name_to_scope)


def match_at(program, name="quantize_per_tensor_2"):
    return match(program, program.node(name))


def test_the_output_quantize_of_a_conv_add_matches_binding_its_qparams(conv_add):
    found = match_at(edited(conv_add))
    assert isinstance(found, Match)
    assert found.anchor == "quantize_per_tensor_2"
    assert dict(found.bindings) == {
        "quantize": "quantize_per_tensor_2",
        "reference": "conv",
        "scale": "conv_scale_0",
        "zero_point": "conv_zero_point_0",
    }


def test_a_conv_add_without_an_entry_in_the_qconfig_map_matches(conv_add):
    assert isinstance(match_at(edited(conv_add, qconfig_map={})), Match)


@pytest.mark.parametrize(
    "name", ["dequantize_2", "quantize_per_tensor"], ids=["not-a-quantize", "quantize-of-a-placeholder"]
)
def test_other_anchors_are_not_this_pattern(conv_add, name):
    assert match_at(edited(conv_add), name) is None


def test_a_quantize_of_a_constant_is_not_this_pattern(conv_add):
    def edit(gm, nodes):
        nodes["quantize_per_tensor_2"].args = (1.5, *nodes["quantize_per_tensor_2"].args[1:])

    assert match_at(edited(conv_add, edit)) is None


def test_a_quantize_of_a_function_is_not_this_pattern(conv_add):
    def edit(gm, nodes):
        with gm.graph.inserting_before(nodes["quantize_per_tensor_2"]):
            neg = gm.graph.call_function(torch.neg, (nodes["conv"],))
        nodes["quantize_per_tensor_2"].args = (neg, *nodes["quantize_per_tensor_2"].args[1:])

    assert match_at(edited(conv_add, edit)) is None


def test_a_quantize_of_another_module_is_not_this_pattern(conv_add):
    def edit(gm, nodes):
        gm.conv = gm.conv[0]  # the reference conv alone

    assert match_at(edited(conv_add, edit)) is None


@pytest.mark.parametrize("fused", [nni.ConvAdd2d, nni.ConvAddReLU2d])
def test_a_fused_module_around_a_float_conv_is_left_with_the_exact_reason(conv_add, fused):
    def edit(gm, nodes):
        conv = nn.Conv2d(2, 2, 1)
        gm.conv = fused(conv, torch.add) if fused is nni.ConvAdd2d else fused(conv, torch.add, nn.ReLU())

    assert match_at(edited(conv_add, edit)) == Miss(f"fused {fused.__name__} holds a Conv2d, not a reference Conv2d")


def test_a_fused_module_around_a_subclass_of_the_reference_conv_is_left_naming_it(conv_add):
    class MyConv(nnqr.Conv2d):
        pass

    def edit(gm, nodes):
        gm.conv = nni.ConvAdd2d(MyConv(2, 2, 1), torch.add)

    assert match_at(edited(conv_add, edit)) == Miss("fused ConvAdd2d holds a MyConv, not a reference Conv2d")


def test_a_fused_conv_add_relu_around_a_reference_conv_matches(conv_add):
    def edit(gm, nodes):
        gm.conv = nni.ConvAddReLU2d(gm.conv[0], torch.add, nn.ReLU())

    assert isinstance(match_at(edited(conv_add, edit)), Match)


def reference_conv_padded(padding):
    def edit(gm, nodes):
        gm.conv = nni.ConvAdd2d(nnqr.Conv2d(2, 2, 1, padding=padding), torch.add)

    return edit


def test_a_fused_module_whose_conv_pads_by_name_is_left_as_torch_crashes(conv_add):
    assert match_at(edited(conv_add, reference_conv_padded("same"))) == Miss(
        "the conv pads 'same', which quantized convolutions do not support (torch fails packing it)", Code.TORCH_CRASHES
    )


def test_padding_by_name_is_reported_before_a_none_qconfig(conv_add):
    qconfigs = {**conv_add.qconfig_map, "conv": None}
    assert match_at(edited(conv_add, reference_conv_padded("valid"), qconfigs)).code is Code.TORCH_CRASHES


def test_a_fused_module_whose_conv_pads_by_number_matches(conv_add):
    assert isinstance(match_at(edited(conv_add, reference_conv_padded(1))), Match)


def test_a_fused_module_whose_qconfig_is_none_is_left_with_the_exact_reason(conv_add):
    qconfigs = {**conv_add.qconfig_map, "conv": None}
    assert match_at(edited(conv_add, qconfig_map=qconfigs)) == Miss("qconfig of 'conv' is None", Code.AS_TORCH)


def inputs(args=None, kwargs=None):
    """An edit giving the fused module's call `args(nodes)` and `kwargs(nodes)`."""

    def edit(gm, nodes):
        conv = nodes["conv"]
        conv.args = conv.args if args is None else args(nodes)
        conv.kwargs = conv.kwargs if kwargs is None else kwargs(nodes)

    return edit


NOT_TWO_INPUTS = Miss("'conv' does not take exactly two dequantized positional inputs", Code.AS_TORCH)


@pytest.mark.parametrize(
    "edit",
    [
        # only the count is wrong
        inputs(args=lambda n: (n["dequantize"],)),
        inputs(args=lambda n: (n["dequantize"], n["dequantize_1"], n["dequantize_1"])),
        inputs(args=lambda n: ()),
        # only a keyword
        inputs(kwargs=lambda n: {"extra": 1}),
        # only an input that is not dequantized (the first, the second, both)
        inputs(args=lambda n: (n["x"], n["dequantize_1"])),
        inputs(args=lambda n: (n["dequantize"], n["y"])),
        inputs(args=lambda n: (n["x"], n["y"])),
        inputs(args=lambda n: (n["dequantize"], 2.0)),
        # the second input by keyword: count and keyword both wrong
        inputs(args=lambda n: (n["dequantize"],), kwargs=lambda n: {"input2": n["dequantize_1"]}),
    ],
    ids=["one-input", "three-inputs", "no-inputs", "extra-keyword", "first-not-dequantized",
         "second-not-dequantized", "neither-dequantized", "second-a-constant", "second-by-keyword"],
)
def test_a_fused_module_without_two_dequantized_positional_inputs_is_left_with_the_exact_reason(conv_add, edit):
    assert match_at(edited(conv_add, edit)) == NOT_TWO_INPUTS


def test_a_dequantize_of_a_constant_does_not_count_as_a_dequantized_input(conv_add):
    def edit(gm, nodes):
        with gm.graph.inserting_before(nodes["conv"]):
            constant = gm.graph.call_method("dequantize", (1.0,))
        nodes["conv"].args = (nodes["dequantize"], constant)

    assert match_at(edited(conv_add, edit)) == NOT_TWO_INPUTS


# --- special patterns: _dequantize_list ------------------------------------------------------------


def entries(gm):
    """(kind, rule, node, reason, code) of each entry the special-pattern pass records on `gm`."""
    return entries_of_program(fqlower.from_fx(gm))


def cat_of(items):
    """x -> q_a -> dq_a; cat(items(b, x, dq_a)) -> quantize "q" -> dequantize."""
    b = Builder()
    x = b.placeholder("x")
    dq_a = b.dequantize("dq_a", b.quantize("q_a", x, "scale_a", "zp_a"))
    cat = b.call("cat", torch.cat, items(b, x, dq_a), 1)
    return b.output(b.dequantize("dq_out", b.quantize("q", cat)))


def entries_of_program(program):
    return [
        (type(entry).__name__, entry.rule, getattr(entry, "node", getattr(entry, "anchor", None)),
         getattr(entry, "reason", ""), entry.code)
        for entry in LOWER_SPECIAL_PATTERNS.run(program).entries
    ]


def with_keyword_input(gm, name):
    """The program of `gm` with dequantize `name` given its input by keyword (FX cannot
    print a method call without positional arguments, so the program is edited)."""
    program = fqlower.from_fx(gm)
    (source,) = program.node(name).args
    return fqlower.apply(program, [SetArgs(name, (), FrozenDict({"self": source}))])


def test_a_dequantize_without_positional_input_is_left_as_torch_crashes():
    b = Builder()
    q_in = b.quantize("q_in", b.placeholder("x"), "scale_in", "zp_in")
    relu = b.call("relu", F.relu, b.dequantize("dq", q_in))
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    assert entries_of_program(with_keyword_input(gm, "dq")) == [
        ("Skip", "reroute", "q", "%dq is a dequantize without positional input: torch would fail reading it",
         Code.TORCH_CRASHES)
    ]


def test_a_dequantize_without_positional_input_later_in_a_list_is_left_as_torch_crashes():
    def items(b, x, dq_a):
        return [dq_a, b.dequantize("dq_b", b.quantize("q_b", x, "scale_b", "zp_b"))]

    assert entries_of_program(with_keyword_input(cat_of(items), "dq_b")) == [
        ("Skip", "reroute", "q", "%dq_b is a dequantize without positional input: torch would fail reading it",
         Code.TORCH_CRASHES)
    ]


@pytest.mark.parametrize("container", [list, tuple])
def test_cat_of_an_empty_list_or_tuple_is_left_with_the_exact_reason(container):
    assert entries(cat_of(lambda b, x, dq_a: container())) == [
        ("Skip", "reroute", "q", "%cat has an empty list of inputs", Code.AS_TORCH)
    ]


@pytest.mark.parametrize("container", [list, tuple])
def test_a_non_node_item_after_a_dequantize_is_left_as_torch_crashes(container):
    assert entries(cat_of(lambda b, x, dq_a: container([dq_a, 3]))) == [
        ("Skip", "reroute", "q", "an input of %cat is 3, not a node: torch would fail reading its op", Code.TORCH_CRASHES)
    ]


def test_the_items_are_read_up_to_the_first_that_is_not_a_dequantize():
    # torch's all(...) stops at the placeholder before reaching the constant
    assert entries(cat_of(lambda b, x, dq_a: [x, 3])) == []
    assert entries(cat_of(lambda b, x, dq_a: [dq_a, x, 3])) == []
    assert entries(cat_of(lambda b, x, dq_a: [dq_a, b.method("neg", "neg", x), 3])) == []


def test_a_method_call_other_than_dequantize_is_no_dequantized_input():
    b = Builder()
    relu = b.call("relu", F.relu, b.method("neg", "neg", b.placeholder("x")))
    assert entries(b.output(b.dequantize("dq_out", b.quantize("q", relu)))) == []


def test_a_dequantize_listed_twice_is_bypassed_once():
    (change,) = run_pass(cat_of(lambda b, x, dq_a: [dq_a, dq_a])).entries
    assert type(change) is Change
    assert (change.rule, dict(change.bindings)) == ("reroute", {"quantize": "q", "reference": "cat", "dequantize_0": "dq_a"})


def test_a_single_dequantize_in_a_list_is_bound_by_index():
    (change,) = run_pass(cat_of(lambda b, x, dq_a: [dq_a])).entries
    assert dict(change.bindings) == {"quantize": "q", "reference": "cat", "dequantize_0": "dq_a"}


# --- special patterns: _computes_in_float -------------------------------------------------------------


def relu_of_dequantized(inner):
    """x -> q_in -> dq; relu(dequantize "dq_2"(inner(b, x, dq))) -> quantize "q" -> dequantize."""
    b = Builder()
    x = b.placeholder("x")
    dq = b.dequantize("dq", b.quantize("q_in", x, "scale_in", "zp_in"))
    relu = b.call("relu", F.relu, b.dequantize("dq_2", inner(b, x, dq)))
    return b.output(b.dequantize("dq_out", b.quantize("q", relu)))


def float_input_skip(inner_name):
    return [
        ("Skip", "reroute", "q",
         f"%dq_2 dequantizes %{inner_name}, which computes in float: torch would hand %relu a float tensor where it "
         "expects a quantized one",
         Code.TORCH_MODEL_CRASHES)
    ]


def test_a_dequantize_of_a_module_left_in_float_is_not_rerouted():
    assert entries(relu_of_dequantized(lambda b, x, dq: b.module("inner", "inner", nn.ReLU(), dq))) == float_input_skip("inner")


def test_a_dequantize_of_an_op_reading_a_dequantize_by_keyword_is_not_rerouted():
    assert entries(relu_of_dequantized(lambda b, x, dq: b.call("inner", torch.add, x, other=dq))) == float_input_skip("inner")


def test_a_float_input_later_in_a_list_is_named():
    def items(b, x, dq_a):
        inner = b.call("inner", torch.neg, dq_a)
        return [dq_a, b.dequantize("dq_b", inner)]

    assert entries(cat_of(items)) == [
        ("Skip", "reroute", "q",
         "%dq_b dequantizes %inner, which computes in float: torch would hand %cat a float tensor where it expects a "
         "quantized one",
         Code.TORCH_MODEL_CRASHES)
    ]


@pytest.mark.parametrize(
    "inner",
    [
        lambda b, x, dq: b.call("inner", torch.quantize_per_channel, dq, b.constant("scales", [0.1]),
                                b.constant("zps", [0]), 1, torch.quint8),
        lambda b, x, dq: b.call("inner", torch.neg, x),  # computes, but reads no dequantize
        lambda b, x, dq: x,  # a placeholder
        lambda b, x, dq: b.constant("inner", 1.0),  # a get_attr
    ],
    ids=["quantize-per-channel", "op-of-a-float-input", "placeholder", "get-attr"],
)
def test_a_dequantize_of_what_does_not_compute_on_dequantized_values_is_rerouted(inner):
    assert [entry[:2] for entry in entries(relu_of_dequantized(inner))] == [("Change", "reroute")]


def test_a_dequantize_of_a_constant_is_rerouted():
    b = Builder()
    dq = b.node("dq", "call_method", "dequantize", 1.0)
    relu = b.call("relu", F.relu, dq)
    gm = b.output(b.dequantize("dq_out", b.quantize("q", relu)))
    assert [entry[:2] for entry in entries(gm)] == [("Change", "reroute")]
