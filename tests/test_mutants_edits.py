"""Edits, down to the exact result: tests written against mutmut's survivors in
fqlower.edits (`make mutation`, docs/mutation.md).

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
from fqlower import AddNode, IRError, MoveNode, Ref, SetMeta, SetModule, SetTarget, apply


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
    assert (error.message, error.node) == ("invalid attribute path 'a..b'", None)
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
