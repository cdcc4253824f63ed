"""The draft: a pass's working copy of a program (fqlower.engine.draft). Reads see every
batch applied so far, a refused batch leaves it as it was, it never changes its
input, and a user's pass written against the public API runs on it as the built-in
ones do.
"""

from __future__ import annotations

import pytest
import torch
from helpers import call, names, tiny_program
from toy_passes import CANCEL_DOUBLE_NEG

import fqlower
from fqlower import AddNode, Draft, IRError, Match, Pipeline, Ref, RemoveNode, ReplaceUses, SetArgs, SetMeta, rule_pass


# --- the draft itself ---------------------------------------------------------------------------


def table_snapshot(program: fqlower.Program) -> tuple:
    graph = program.graph
    return (dict(graph.nodes), dict(graph.positions), dict(graph.users), graph.next_serial, dict(program.modules), dict(program.constants))


def test_a_draft_reads_every_batch_applied_so_far_and_leaves_its_input_alone():
    program = tiny_program()
    before = table_snapshot(program)
    draft = Draft(program)
    draft.apply([AddNode(call("neg", torch.neg, Ref("relu")), after="relu"), ReplaceUses("relu", "neg")])
    assert draft.users("neg") == ("add",) and draft.node("add").args[0] == Ref("neg")
    assert [node.name for node in draft.nodes()] == ["x", "fc", "relu", "neg", "add", "offset", "add_1", "output"]
    draft.apply([ReplaceUses("neg", "relu"), RemoveNode("neg")])
    assert "neg" not in draft and draft.users("relu") == ("add",)
    frozen = draft.freeze()
    assert table_snapshot(program) == before
    assert names(frozen) == names(program) and frozen.node("add") == program.node("add")


def test_a_draft_that_changed_nothing_freezes_to_its_input():
    program = tiny_program()
    assert Draft(program).freeze() is program


def test_a_refused_batch_leaves_the_draft_as_it_was_and_the_draft_stays_usable():
    program = tiny_program()
    draft = Draft(program)
    draft.apply([AddNode(call("neg", torch.neg, Ref("relu")), after="relu")])
    kept = table_snapshot(draft.freeze())
    with pytest.raises(IRError, match="'missing', which does not exist"):
        # the first edits go in, the last is refused: none of the batch may stay
        draft.apply([SetArgs("add", (Ref("neg"), Ref("x"))), SetMeta("neg", "note", 1), SetArgs("add_1", (Ref("missing"),))])
    assert table_snapshot(draft.freeze()) == kept
    assert draft.users("neg") == () and draft.node("add").args[0] == Ref("relu")
    # the refs the refused batch gave %add must be gone too: removing %neg is legal and
    # leaves %relu used by %add
    draft.apply([RemoveNode("neg")])
    assert draft.users("relu") == ("add",)
    assert table_snapshot(draft.freeze())[:3] == table_snapshot(program)[:3]  # (serials only grow)


def test_a_refused_order_leaves_the_draft_as_it_was():
    program = tiny_program()
    draft = Draft(program)
    with pytest.raises(IRError, match="comes after it"):
        draft.apply([SetArgs("fc", (Ref("relu"),))])  # a cycle: fc would read its own user
    assert draft.freeze() is program
    assert draft.users("relu") == ("add",)


def test_an_error_of_a_pass_holds_a_frozen_program_not_the_draft():
    def match(program, node):
        return Match(node.name) if node.op == "call_function" and node.target is torch.relu else None

    def rewrite(program, match):
        return (RemoveNode(match.anchor),)  # %relu still has a user: refused

    with pytest.raises(IRError) as raised:
        rule_pass("remove-relu", match, rewrite).run(tiny_program())
    assert isinstance(raised.value.program, fqlower.Program)
    assert "--> %relu = torch.relu(%fc)" in str(raised.value)


# --- a user's pass, written against the public API, runs as the built-in ones do ---------------


class NegatedTwice(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 4)
        self.head = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.head(torch.relu(self.fc(torch.neg(torch.neg(x)))))


def test_a_users_rule_pass_is_lowered_recorded_replayed_and_explained_like_the_built_in_ones():
    from fqlower.explain import explain
    from fqlower.passes import default_pipeline
    from fqlower.reference import reference_model
    from torch.ao.quantization import get_default_qconfig_mapping

    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    reference = reference_model(NegatedTwice().eval(), (x,), get_default_qconfig_mapping("fbgemm"))
    model, maps = reference.module, (reference.qconfig_map, reference.node_name_to_scope)
    pipeline = Pipeline("mine", (CANCEL_DOUBLE_NEG, default_pipeline()))
    mine = fqlower.lower(model, *maps, pipeline=pipeline)
    plain = fqlower.lower(model, *maps)

    users_changes = [change for change in mine.log.changes if change.pass_name == "cancel-double-neg"]
    assert len(users_changes) == 1 and users_changes[0].matched and users_changes[0].produced
    assert not any(node.target is torch.neg for node in mine.module.graph.nodes)
    assert torch.equal(mine.module(x), plain.module(x))  # -(-x) is x, bit for bit
    replayed = fqlower.replay(model, mine.log, *maps)
    assert replayed.module.code == mine.module.code
    assert fqlower.fingerprint(replayed.program) == fqlower.fingerprint(mine.program)
    assert explain(mine, model).coverage == explain(plain, model).coverage


def test_regression_set_args_given_a_list_checks_and_links_its_items_as_inputs():
    # found by mutation testing: a list's items became the node's refs but were
    # neither checked (a raw KeyError) nor entered in the users table (so %fc could be
    # removed under %relu, leaving a dangling reference)
    program = tiny_program()
    with pytest.raises(IRError, match="would use 'ghost', which does not exist"):
        fqlower.apply(program, [SetArgs("relu", [Ref("ghost")])])
    changed = fqlower.apply(program, [SetArgs("relu", [Ref("x")])])
    assert changed.node("relu").args == (Ref("x"),) and changed.users("x") == ("fc", "relu", "add")
    assert "relu" not in changed.users("fc")
    with pytest.raises(IRError, match="still used by"):
        fqlower.apply(changed, [RemoveNode("x")])
