"""Edits, down to the exact result: tests written against mutmut's survivors in
fqlower.engine.edits (`make mutation`, docs/mutation.md).

`SetMeta` is the one edit kind no pass test applies on its own (the pipeline's
provenance goes through `apply_marked`), so its result is pinned here field by field;
the other tests pin the exact message of refusals the suite only matched in part.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import call, names, tiny_program

import fqlower
from fqlower import (
    AddNode,
    FrozenDict,
    IRError,
    MoveNode,
    Ref,
    RemoveNode,
    ReplaceUses,
    SetArgs,
    SetConstant,
    SetMeta,
    SetModule,
    SetTarget,
    apply,
)
from fqlower.engine.draft import apply_marked


def refusal(program, edits) -> IRError:
    with pytest.raises(IRError) as raised:
        apply(program, edits)
    return raised.value


def test_set_meta_sets_one_entry_and_keeps_everything_else_of_the_node():
    program = tiny_program()
    before = program.node("relu")
    after = apply(program, [SetMeta("relu", "note", (1, "two"))])
    node = after.node("relu")
    assert node.meta == before.meta.set("note", (1, "two"))
    assert list(node.meta)[-1] == "note" and node.meta["note"] == (1, "two")
    assert (node.name, node.op, node.target, node.args, node.kwargs, node.type) == (
        before.name, before.op, before.target, before.args, before.kwargs, before.type
    )
    assert names(after) == names(program) and after.users("relu") == program.users("relu")
    assert "note" not in program.node("relu").meta  # programs are values


def test_set_meta_replaces_an_existing_entry_in_place():
    program = apply(tiny_program(), [SetMeta("fc", "a", 1), SetMeta("fc", "b", 2)])
    after = apply(program, [SetMeta("fc", "a", 3)])
    assert [(key, after.node("fc").meta[key]) for key in ("a", "b")] == [("a", 3), ("b", 2)]
    assert list(after.node("fc").meta) == list(program.node("fc").meta)


def test_set_meta_on_a_missing_node_is_refused_naming_it():
    error = refusal(tiny_program(), [SetMeta("ghost", "note", 1)])
    assert (error.message, error.node) == ("node 'ghost' does not exist", "ghost")


def test_a_module_that_is_no_module_is_refused_naming_its_type():
    error = refusal(tiny_program(), [SetModule("fc", 42)])
    assert (error.message, error.node) == (
        "module path 'fc': expected a torch.nn.Module or a Build spec, got int", None
    )


def test_a_module_at_an_invalid_path_is_refused_naming_the_path():
    program = tiny_program()
    error = refusal(program, [SetModule("a..b", nn.ReLU())])
    assert (error.message, error.node) == ("invalid attribute path 'a..b': a part is empty", None)
    assert error.program is program


@pytest.mark.parametrize(
    "edit, message, node",
    [
        (MoveNode("ghost", after="x"), "node to move 'ghost' does not exist", "ghost"),
        (MoveNode("relu", after="ghost"), "node 'relu' is to follow node 'ghost' does not exist", "ghost"),
        (MoveNode("x", after="fc"), "cannot move node 'x'", "x"),
        (MoveNode("relu", after="relu"), "cannot move node 'relu'", "relu"),
    ],
    ids=["missing-node", "missing-anchor", "placeholder", "after-itself"],
)
def test_a_move_that_cannot_be_made_is_refused_with_the_exact_message(edit, message, node):
    error = refusal(tiny_program(), [edit])
    assert (error.message, error.node) == (message, node)


@pytest.mark.parametrize(
    "edits, message, node",
    [
        ([AddNode(fqlower.Node("n", "call_method", 3, (Ref("x"),)), after="x")],
         "node 'n': call_method target must be a string, got 3", "n"),
        ([SetTarget("relu", "call_method", torch.neg)],
         f"node 'relu': call_method target must be a string, got {torch.neg!r}", "relu"),
        ([AddNode(call("n", torch.neg, Ref("x")), after="ghost")], "node 'n' is to follow node 'ghost' does not exist", "ghost"),
        ([AddNode(call("n", torch.neg, Ref("x")), before="ghost")], "node 'n' is to precede node 'ghost' does not exist", "ghost"),
        ([SetTarget("ghost", "call_function", torch.neg)], "node 'ghost' does not exist", "ghost"),
    ],
    ids=["method-target-not-a-string", "set-method-target-not-a-string", "add-after-missing", "add-before-missing",
         "set-target-of-missing"],
)
def test_a_call_that_cannot_be_made_is_refused_with_the_exact_message(edits, message, node):
    error = refusal(tiny_program(), edits)
    assert (error.message, error.node) == (message, node)


def test_nodes_added_before_an_added_node_in_later_batches_go_right_before_it():
    program = tiny_program()
    first = apply(program, [AddNode(call("first", torch.neg, Ref("x")), before="fc")])
    second = apply(first, [AddNode(call("second", torch.neg, Ref("x")), before="first")])
    third = apply(second, [AddNode(call("third", torch.neg, Ref("x")), before="first")])
    assert names(third)[:5] == ["x", "second", "third", "first", "fc"]
    assert names(apply(third, [AddNode(call("fourth", torch.neg, Ref("x")), before="second")]))[:3] == ["x", "fourth", "second"]


# --- second round: the survivors of the whole run (docs/mutation.md, "Third run") -----------


@pytest.mark.parametrize(
    "edit, message",
    [
        (RemoveNode("ghost"), "node to remove 'ghost' does not exist"),
        (SetArgs("ghost", (Ref("x"),)), "node 'ghost' does not exist"),
        (ReplaceUses("ghost", "x"), "node whose uses are replaced, 'ghost' does not exist"),
        (ReplaceUses("relu", "ghost"), "replacement node 'ghost' does not exist"),
    ],
    ids=["remove", "set-args", "replace-uses-old", "replace-uses-new"],
)
def test_an_edit_of_a_missing_node_is_refused_naming_the_nodes_role(edit, message):
    error = refusal(tiny_program(), [edit])
    assert (error.message, error.node) == (message, "ghost")


def test_a_user_left_before_a_moved_node_is_the_node_the_refusal_names():
    error = refusal(tiny_program(), [MoveNode("relu", after="offset")])
    assert (error.message, error.node) == ("node 'add' would use 'relu', which comes after it", "add")


def test_a_node_added_and_removed_in_the_same_batch_does_not_end_the_order_check():
    edits = [AddNode(call("tmp", torch.neg, Ref("x")), after="x"), RemoveNode("tmp"), MoveNode("relu", after="offset")]
    error = refusal(tiny_program(), edits)
    assert (error.message, error.node) == ("node 'add' would use 'relu', which comes after it", "add")


@pytest.mark.parametrize(
    "edit, message, node",
    [
        (SetArgs("fc", [Ref("relu")]), "node 'fc' would use 'relu', which comes after it", "fc"),
        (SetArgs("relu", [Ref("relu")]), "node 'relu' would use 'relu', which comes after it", "relu"),
        (SetArgs("fc", [Ref("x")], FrozenDict({"other": Ref("relu")})), "node 'fc' would use 'relu', which comes after it", "fc"),
    ],
    ids=["later-node-in-list", "itself-in-list", "later-node-in-kwargs-beside-a-list"],
)
def test_the_refs_of_list_args_given_to_set_args_are_checked_for_order(edit, message, node):
    error = refusal(tiny_program(), [edit])
    assert (error.message, error.node) == (message, node)


def test_list_args_given_to_set_args_become_a_tuple():
    after = apply(tiny_program(), [SetArgs("add", [Ref("fc"), Ref("x")])])
    assert after.node("add").args == (Ref("fc"), Ref("x")) and type(after.node("add").args) is tuple


def test_set_args_turns_dict_kwargs_into_a_frozen_dict_whose_refs_are_inputs():
    after = apply(tiny_program(), [SetArgs("add", (Ref("relu"),), {"other": Ref("fc")})])
    kwargs = after.node("add").kwargs
    assert type(kwargs) is FrozenDict and kwargs == FrozenDict({"other": Ref("fc")})
    assert after.users("fc") == ("relu", "add")
    assert after.users("x") == ("fc",)


def test_set_args_keeps_the_frozen_dict_it_is_given():
    kwargs = FrozenDict({"other": Ref("fc")})
    after = apply(tiny_program(), [SetArgs("add", (Ref("relu"),), kwargs)])
    assert after.node("add").kwargs is kwargs


def test_replace_uses_rewires_keyword_arguments_too():
    program = apply(tiny_program(), [AddNode(call("n", torch.add, Ref("x"), other=Ref("relu")), after="relu")])
    after = apply(program, [ReplaceUses("relu", "fc")])
    node = after.node("n")
    assert (node.args, node.kwargs) == ((Ref("x"),), FrozenDict({"other": Ref("fc")}))
    assert after.node("add").args == (Ref("fc"), Ref("x"))
    assert after.users("relu") == ()
    assert after.users("fc") == ("relu", "n", "add")


def test_a_rewired_user_keeps_its_other_inputs_for_the_order_check():
    # add_1 reads (add, offset); rewired to read relu, then moved before offset
    error = refusal(tiny_program(), [ReplaceUses("add", "relu"), MoveNode("add_1", after="relu")])
    assert (error.message, error.node) == ("node 'add_1' would use 'offset', which comes after it", "add_1")


def test_added_and_moved_nodes_take_the_anchors_position_plus_the_next_serial():
    program = tiny_program()
    serial = program.graph.next_serial
    edits = [
        AddNode(call("a", torch.neg, Ref("relu")), after="relu"),
        AddNode(call("b", torch.neg, Ref("relu")), before="add"),
        MoveNode("offset", after="x"),
    ]
    after = apply(program, edits)
    assert [after.position(name) for name in ("relu", "a", "b", "add", "x", "offset")] == [
        (2,), (2, serial), (2, serial + 1), (3,), (0,), (0, serial + 2)
    ]
    assert after.graph.next_serial == serial + 3


@pytest.mark.parametrize(
    "anchors, order",
    [
        ([("a", "after"), ("b", "after"), ("c", "before")], ["relu", "a", "b", "c", "add"]),
        ([("a", "after"), ("c", "before"), ("d", "after")], ["relu", "a", "c", "d", "add"]),
    ],
    ids=["after-after-before", "after-before-after"],
)
def test_nodes_added_after_a_node_and_before_the_next_go_in_the_order_given(anchors, order):
    edits = [
        AddNode(call(name, torch.neg, Ref("relu")), after="relu") if side == "after"
        else AddNode(call(name, torch.neg, Ref("relu")), before="add")
        for name, side in anchors
    ]
    after = apply(tiny_program(), edits)
    assert names(after)[2:7] == order


class _PathLike:
    """Not a string, but hashes and compares like the path it holds."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __eq__(self, other: object) -> bool:
        return other == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"_PathLike({self.path!r})"


@pytest.mark.parametrize(
    "edit, message, node",
    [
        (AddNode(fqlower.Node("n", "call_module", _PathLike("fc"), (Ref("x"),)), after="x"),
         "node 'n': call_module target must be a string, got _PathLike('fc')", "n"),
        (SetTarget("offset", "get_attr", _PathLike("offset")),
         "node 'offset': get_attr target must be a string, got _PathLike('offset')", "offset"),
    ],
    ids=["call-module", "get-attr"],
)
def test_a_module_or_constant_target_that_only_compares_equal_to_a_path_is_refused(edit, message, node):
    error = refusal(tiny_program(), [edit])
    assert (error.message, error.node) == (message, node)


@pytest.mark.parametrize(
    "edit, message",
    [
        (SetModule(3, nn.ReLU()), "invalid attribute path 3: not a string"),
        (SetConstant(("offset",), 1.0), "invalid attribute path ('offset',): not a string"),
    ],
    ids=["module", "constant"],
)
def test_a_path_that_is_no_string_is_refused_as_invalid(edit, message):
    error = refusal(tiny_program(), [edit])
    assert (error.message, error.node) == (message, None)


def test_apply_marked_marks_exactly_the_nodes_added_given_args_or_a_target_or_moved_and_kept():
    program = tiny_program()
    edits = [
        AddNode(call("n", torch.neg, Ref("relu")), after="relu"),
        AddNode(call("tmp", torch.neg, Ref("x")), after="x"),
        RemoveNode("tmp"),
        SetArgs("add", (Ref("n"), Ref("x"))),
        SetTarget("relu", "call_function", torch.sigmoid),
        MoveNode("offset", after="x"),
        SetMeta("fc", "note", 1),
    ]
    after = apply_marked(program, edits, "origin", "pass-1")
    assert {node.name: node.meta["origin"] for node in after.nodes() if "origin" in node.meta} == {
        "n": "pass-1", "add": "pass-1", "relu": "pass-1", "offset": "pass-1"
    }
    assert after.node("fc").meta["note"] == 1 and list(after.node("add").meta)[-1] == "origin"
    assert names(after) == names(apply(program, edits))


def test_apply_keeps_the_programs_fx_context():
    program = tiny_program()
    after = apply(program, [SetMeta("fc", "note", 1)])
    assert after.context is program.context
    gm = fqlower.to_fx(after)
    assert (type(gm).__name__, gm.training) == ("TinyNet", True)


def test_edits_that_rebuild_a_node_keep_its_type_annotation():
    program = tiny_program()
    after = apply(program, [SetMeta("x", "note", 1), ReplaceUses("add_1", "add"), RemoveNode("add_1")])
    assert (after.node("x").type, after.node("output").type) == ("torch.Tensor", "torch.Tensor")
    assert after.node("output").args == (Ref("add"),)
