"""Every edit kind, every rejection, and atomicity of `apply`."""

from __future__ import annotations

import operator

import attrs
import pytest
import torch
import torch.nn as nn
from helpers import call, names, tiny_program

import fqlower
from fqlower import (
    AddNode,
    Build,
    MoveNode,
    IRError,
    Original,
    Ref,
    RemoveNode,
    ReplaceUses,
    SetArgs,
    SetConstant,
    SetModule,
    SetTarget,
    apply,
)
from fqlower.compare import values_equal


def run(program, x):
    return fqlower.to_fx(program)(x)


X = torch.randn(3, 4)


def test_add_node_after_places_it_there_and_indexes_users():
    program = tiny_program()
    doubled = call("doubled", operator.mul, Ref("relu"), 2)
    after = apply(program, [AddNode(doubled, after="relu")])
    assert names(after)[:4] == ["x", "fc", "relu", "doubled"]
    assert after.users("relu") == ("doubled", "add")
    assert after.users("doubled") == ()


def test_nodes_added_after_the_same_node_keep_insertion_order():
    program = tiny_program()
    first = call("first", torch.neg, Ref("relu"))
    second = call("second", torch.neg, Ref("first"))
    inner = call("inner", torch.neg, Ref("first"))
    after = apply(program, [AddNode(first, "relu"), AddNode(second, "relu"), AddNode(inner, "first")])
    assert names(after)[2:6] == ["relu", "first", "inner", "second"]


def test_add_node_before_places_it_right_before():
    program = tiny_program()
    first = call("first", torch.neg, Ref("x"))
    second = call("second", torch.neg, Ref("first"))
    after = apply(program, [AddNode(first, before="fc"), AddNode(second, before="fc"), AddNode(fqlower.Node("z", "get_attr", "offset"), before="x")])
    assert names(after)[:5] == ["z", "x", "first", "second", "fc"]


def test_move_node_and_a_batch_may_pass_through_non_topological_orders():
    program = tiny_program()
    # move relu after the offset read, then make it read the offset: only valid together
    after = apply(program, [SetArgs("relu", (Ref("offset"),)), MoveNode("relu", after="offset"), SetArgs("add", (Ref("fc"), Ref("x")))])
    assert names(after) == ["x", "fc", "add", "offset", "relu", "add_1", "output"]
    assert after.users("offset") == ("relu", "add_1")


def test_moving_a_node_behind_its_users_is_rejected():
    program = tiny_program()
    with pytest.raises(IRError, match="node 'add' would use 'relu', which comes after it"):
        apply(program, [MoveNode("relu", after="offset")])


def test_remove_node_and_replace_uses_rewire_the_graph():
    program = tiny_program()
    # relu(fc(x)) + x  becomes  fc(x) + x
    after = apply(program, [ReplaceUses("relu", "fc"), RemoveNode("relu")])
    assert "relu" not in after
    assert after.node("add").args == (Ref("fc"), Ref("x"))
    assert after.users("fc") == ("add",)
    module = fqlower.to_fx(after)
    reference = fqlower.to_fx(program).fc(X) + X + program.constants["offset"]
    assert values_equal(module(X), reference)


def test_replace_uses_spares_the_replacement_itself():
    program = tiny_program()
    neg = call("neg", torch.neg, Ref("relu"))
    after = apply(program, [AddNode(neg, "relu"), ReplaceUses("relu", "neg")])
    assert after.node("neg").args == (Ref("relu"),)
    assert after.node("add").args == (Ref("neg"), Ref("x"))
    assert after.users("relu") == ("neg",)


def test_set_args_updates_the_users_index():
    program = tiny_program()
    after = apply(program, [SetArgs("add", (Ref("x"), Ref("x")))])
    assert after.users("relu") == ()
    assert after.users("x") == ("fc", "add")
    assert after.node("add").kwargs == {}


def test_set_target_changes_what_a_node_calls():
    program = tiny_program()
    after = apply(program, [SetTarget("add", "call_function", operator.sub)])
    relu = torch.relu(program.modules["fc"](X))
    assert values_equal(run(after, X), relu - X + program.constants["offset"])


def test_set_module_with_a_spec_is_materialised_by_the_emitter():
    program = tiny_program()
    spec = Build("torch.nn.modules.container.Sequential", (Original("fc"), Build("torch.nn.modules.activation.ReLU")))
    after = apply(program, [SetModule("fc", spec)])
    assert after.modules["fc"] == spec
    assert after.originals["fc"] is program.modules["fc"]
    module = fqlower.to_fx(after)
    assert isinstance(module.fc, nn.Sequential) and module.fc[0] is program.modules["fc"]


def test_set_module_and_constant_add_new_entries():
    program = tiny_program()
    scale = torch.tensor([2.0])
    after = apply(
        program,
        [
            SetModule("extra.act", nn.Tanh()),
            SetConstant("extra_scale", scale),
            AddNode(fqlower.Node("extra_scale", "get_attr", "extra_scale"), after="add_1"),
            AddNode(fqlower.Node("act", "call_module", "extra.act", (Ref("add_1"),)), after="extra_scale"),
            AddNode(call("scaled", operator.mul, Ref("act"), Ref("extra_scale")), after="act"),
            SetArgs("output", (Ref("scaled"),)),
        ],
    )
    expected = torch.tanh(run(program, X)) * scale
    assert values_equal(run(after, X), expected)
    assert isinstance(fqlower.to_fx(after).extra.act, nn.Tanh)


REJECTED = [
    ("duplicate name", [AddNode(call("relu", torch.neg, Ref("x")), "x")], "relu", "name is taken"),
    ("dangling reference", [AddNode(call("neg", torch.neg, Ref("ghost")), "x")], "neg", "does not exist"),
    ("forward reference", [AddNode(call("neg", torch.neg, Ref("add")), "x")], "neg", "comes after it"),
    ("insert after missing node", [AddNode(call("neg", torch.neg, Ref("x")), "ghost")], "ghost", "does not exist"),
    ("second output", [AddNode(fqlower.Node("out2", "output", "output", (Ref("x"),)), "add_1")], "out2", "already has an output"),
    ("remove used node", [RemoveNode("relu")], "relu", "still used by ['add']"),
    ("remove missing node", [RemoveNode("ghost")], "ghost", "does not exist"),
    ("remove output", [RemoveNode("output")], "output", "output node"),
    ("set args dangling", [SetArgs("add", (Ref("ghost"), 1))], "add", "does not exist"),
    ("set args forward", [SetArgs("relu", (Ref("add"),))], "relu", "comes after it"),
    ("missing module", [SetTarget("relu", "call_module", "nowhere")], "relu", "module 'nowhere'"),
    ("missing constant", [AddNode(fqlower.Node("w", "get_attr", "nowhere"), "x")], "w", "constant 'nowhere'"),
    ("unknown op", [SetTarget("relu", "call_everything", "x")], "relu", "unknown op"),
    ("non-callable function", [SetTarget("relu", "call_function", 3)], "relu", "not callable"),
    ("output to function", [SetTarget("output", "call_function", torch.neg)], "output", "cannot turn output"),
    ("replace uses by later node", [ReplaceUses("fc", "add")], "relu", "would use 'add', which comes after it"),
    ("add with both anchors", [AddNode(call("n", torch.neg, Ref("x")), after="x", before="fc")], "n", "exactly one of"),
    ("add with no anchor", [AddNode(call("n", torch.neg, Ref("x")))], "n", "exactly one of"),
    ("move output", [MoveNode("output", after="x")], "output", "cannot move"),
    ("move missing", [MoveNode("ghost", after="x")], "ghost", "does not exist"),
    ("replace uses of missing", [ReplaceUses("ghost", "x")], "ghost", "does not exist"),
    ("invalid node name", [AddNode(call("not-a-name", torch.neg, Ref("x")), "x")], "not-a-name", "valid identifier"),
    ("module that is no module", [SetModule("fc", 42)], None, "expected a torch.nn.Module or a Build spec"),
    ("invalid path", [SetConstant("a..b", 1.0)], None, "invalid attribute path"),
]


@pytest.mark.parametrize("label, edits, node, message", REJECTED, ids=[case[0] for case in REJECTED])
def test_rejected_edits_name_the_node_and_leave_the_program_unchanged(label, edits, node, message):
    program = tiny_program()
    before = (fqlower.fingerprint(program), program)
    # a valid edit first: the batch must be all-or-nothing
    batch = [AddNode(call("fresh", torch.neg, Ref("x")), "x"), *edits]
    with pytest.raises(IRError) as raised:
        apply(program, batch)
    assert message in raised.value.message
    assert raised.value.node == node
    assert (fqlower.fingerprint(program), program) == before
    assert "fresh" not in program


def test_error_text_shows_the_program_around_the_node():
    program = tiny_program()
    with pytest.raises(IRError) as raised:
        apply(program, [RemoveNode("relu")])
    text = str(raised.value)
    assert "--> %relu = torch.relu(%fc)" in text
    assert "%fc = fc(%x)" in text


def test_unknown_edit_type_is_rejected():
    with pytest.raises(IRError, match="not an edit"):
        apply(tiny_program(), ["RemoveNode('relu')"])


def test_edits_are_values():
    edit = AddNode(call("n", torch.neg, Ref("x")), "x")
    assert edit == AddNode(call("n", torch.neg, Ref("x")), "x")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        edit.after = "y"  # type: ignore[misc]


def test_order_after_removals_reuses_the_earlier_order_and_after_a_move_sorts_again():
    program = tiny_program()
    names(program)  # computes the order
    moved = apply(program, [SetArgs("relu", (Ref("offset"),)), MoveNode("relu", after="offset"), SetArgs("add", (Ref("fc"), Ref("x")))])
    assert moved.graph.order_hint is None
    assert names(moved) == [name for name, _ in sorted(moved.graph.positions.items(), key=lambda item: item[1])]
    removed = apply(moved, [RemoveNode("relu")])
    assert removed.graph.order_hint == tuple(names(moved))
    assert names(removed) == [name for name in names(moved) if name != "relu"]
