"""Pins of `fqlower.engine.draft.Draft` that the mutation run found unpinned: the reads a
draft shares with `Program` (`in`, `node`'s error, `users` of an unknown name,
`module`, `str`, the graph of an unchanged draft), the program an `IRError` carries
when an earlier batch was committed (the committed tables, not the refused batch's,
with the input's originals, qconfig, scope and context, the right order and the
input's order as hint when the draft only removed nodes), and the order check of a
node that reads itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import call, names, tiny_gm

import fqlower
from fqlower import AddNode, Draft, IRError, Ref, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetMeta, SetModule
from fqlower.ir import format_program

ORDER = ["x", "fc", "relu", "add", "offset", "add_1", "output"]


def program_with_tables() -> fqlower.Program:
    """The tiny program, with a qconfig and a scope entry, its order computed."""
    program = fqlower.from_fx(tiny_gm(), {"fc": None}, {"fc": ("fc", nn.Linear)})
    assert names(program) == ORDER  # computes program.graph.order
    return program


# --- reads ---------------------------------------------------------------------------------------


def test_in_tells_the_nodes_the_draft_has_now():
    program = program_with_tables()
    draft = Draft(program)
    assert "relu" in draft and "ghost" not in draft
    draft.apply([AddNode(call("neg", torch.neg, Ref("relu")), after="relu")])
    assert "neg" in draft and "neg" not in program


def test_node_of_a_missing_name_raises_an_ir_error_naming_it():
    draft = Draft(program_with_tables())
    with pytest.raises(IRError) as info:
        draft.node("ghost")
    assert info.value.message == "node 'ghost' does not exist"
    assert str(info.value.args[0]) == "node 'ghost' does not exist"
    assert info.value.node == "ghost"


def test_users_of_an_unknown_or_removed_name_are_empty_as_in_a_program():
    program = program_with_tables()
    draft = Draft(program)
    assert draft.users("ghost") == () == program.users("ghost")
    draft.apply([ReplaceUses("relu", "fc"), RemoveNode("relu")])
    assert draft.users("relu") == ()
    assert draft.users("fc") == ("add",)


def test_module_of_a_call_module_node_is_the_module_at_its_target():
    program = program_with_tables()
    draft = Draft(program)
    assert draft.module(draft.node("fc")) is program.modules["fc"]
    replacement = nn.Linear(4, 4)
    draft.apply([SetModule("fc", replacement)])
    assert draft.module(draft.node("fc")) is replacement
    assert draft.module(draft.node("relu")) is None


def test_str_of_a_draft_prints_the_program_as_it_stands():
    draft = Draft(program_with_tables())
    draft.apply([AddNode(call("neg", torch.neg, Ref("relu")), after="relu")])
    text = str(draft)
    assert text == format_program(draft.freeze())
    assert text.splitlines()[3] == "%neg = torch.neg(%relu)"


def test_an_unchanged_draft_reads_its_inputs_graph_itself():
    program = program_with_tables()
    draft = Draft(program)
    assert draft.graph is program.graph
    assert draft.freeze() is program


# --- the program an error carries ----------------------------------------------------------------


def test_an_error_after_a_committed_batch_carries_the_committed_program():
    program = program_with_tables()
    draft = Draft(program)
    kept_module, kept_constant = nn.Identity(), torch.ones(2)
    draft.apply([
        AddNode(call("neg", torch.neg, Ref("relu")), after="relu"),
        ReplaceUses("relu", "neg"),
        SetModule("kept", kept_module),
        SetConstant("kept_c", kept_constant),
    ])
    committed = draft.freeze()
    with pytest.raises(IRError) as info:
        # the refused batch's own changes must not show in the error's program
        draft.apply([
            AddNode(call("neg2", torch.neg, Ref("neg")), after="neg"),
            SetModule("dropped", nn.ReLU()),
            SetConstant("dropped_c", 3),
            RemoveNode("ghost"),
        ])
    error = info.value
    assert error.message == "node to remove 'ghost' does not exist" and error.node == "ghost"
    shown = error.program
    assert shown is not None and shown is not committed
    assert shown == committed
    assert shown.graph == committed.graph
    assert shown.graph.next_serial == committed.graph.next_serial == draft.graph.next_serial
    # a batch that added a node came before: the order is sorted, not the input's filtered
    assert names(shown) == ["x", "fc", "relu", "neg", "add", "offset", "add_1", "output"]
    assert shown.users("neg") == ("add",) and shown.users("relu") == ("neg",)
    assert shown.position("neg") == committed.position("neg")
    assert dict(shown.modules) == dict(committed.modules) and shown.modules["kept"] is kept_module
    assert "dropped" not in shown.modules
    assert dict(shown.constants) == dict(committed.constants) and shown.constants["kept_c"] is kept_constant
    assert "dropped_c" not in shown.constants
    assert shown.originals is program.originals
    assert shown.qconfig is program.qconfig and dict(shown.qconfig) == {"fc": None}
    assert shown.scope is program.scope and dict(shown.scope) == {"fc": ("fc", nn.Linear)}
    assert shown.context is program.context
    # the draft itself is as it was committed
    assert draft.freeze() == committed and "neg2" not in draft and "dropped" not in draft.modules


def test_an_error_after_a_batch_that_only_removed_nodes_keeps_the_inputs_order_as_hint():
    program = program_with_tables()
    draft = Draft(program)
    draft.apply([ReplaceUses("relu", "fc"), RemoveNode("relu")])
    with pytest.raises(IRError) as info:
        draft.apply([SetMeta("fc", "note", 1), RemoveNode("ghost")])
    shown = info.value.program
    # nothing was added or moved: the input's order is a valid hint (no re-sort)
    assert shown.graph.known_order() == program.graph.order
    assert names(shown) == ["x", "fc", "add", "offset", "add_1", "output"]
    assert shown.node("fc").meta.get("note") is None


def test_an_error_in_the_first_batch_carries_the_input_program_itself():
    program = program_with_tables()
    draft = Draft(program)
    with pytest.raises(IRError) as info:
        draft.apply([RemoveNode("ghost")])
    assert info.value.program is program


# --- the order check ----------------------------------------------------------------------------


def test_a_node_that_reads_itself_first_is_refused_at_its_self_reference():
    program = program_with_tables()
    draft = Draft(program)
    # %relu would read itself, then %add (which comes after it): the self-reference,
    # the first ref, is what the order check names
    with pytest.raises(IRError) as info:
        draft.apply([SetArgs("relu", (Ref("relu"), Ref("add")))])
    assert info.value.message == "node 'relu' would use 'relu', which comes after it"
    assert info.value.node == "relu"
    assert draft.node("relu").args == (Ref("fc"),)
    assert draft.users("relu") == ("add",) and draft.users("add") == ("add_1",) and draft.users("fc") == ("relu",)
    assert draft.freeze() is program


def test_a_node_that_reads_itself_alone_is_refused():
    draft = Draft(program_with_tables())
    with pytest.raises(IRError) as info:
        draft.apply([SetArgs("relu", (Ref("relu"),))])
    assert info.value.message == "node 'relu' would use 'relu', which comes after it"
    assert info.value.node == "relu"
    assert draft.users("relu") == ("add",)
