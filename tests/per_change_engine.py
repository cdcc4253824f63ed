"""The engine before drafts, kept as a test oracle: one immutable program per change.

`RulePass.run` and dead-code elimination as they were when every change built a new
`Program` (`record_change`: a fresh draft per change, frozen at once). Inside
`per_change_engine()` the pipeline runs that way; the law in
tests/test_draft_engine.py and property_tests/test_draft_engine.py says the draft
engine (one draft per pass) gives the same bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import fqlower
from fqlower.compare import values_equal

from fqlower.log import Change, Skip, record_change
from fqlower.engine.edits import RemoveNode
from fqlower.errors import FqlowerError
from fqlower.ir import FrozenDict, Program
from fqlower.passes.dead_code import DeadCodeElimination, has_side_effects
from fqlower.engine.pipeline import Miss, PassResult, RulePass, _with_context


def rule_pass_run(self: RulePass, program: Program) -> PassResult:
    entries: list = []
    for name in program.graph.order:
        if name not in program:  # removed by an earlier rewrite of this pass
            continue
        node = program.node(name)
        for rule in self.rules:
            if rule.candidate is not None and not rule.candidate(node):
                continue
            outcome = rule.match(program, node)
            if outcome is None:
                continue
            if isinstance(outcome, Miss):
                entries.append(Skip(0, self.name, rule.name, name, outcome.reason, outcome.code))
                continue
            try:
                edits = tuple(rule.rewrite(program, outcome))
                change = Change(0, self.name, rule.name, outcome.anchor, outcome.bindings, edits, code=outcome.code, reason=outcome.reason)
                program, change = record_change(program, change)
            except FqlowerError as error:
                raise _with_context(error, f"pass {self.name}, rule {rule.name}", program, name) from error
            entries.append(change)
            break
    return PassResult(program, tuple(entries))


def dead_code_run(self: DeadCodeElimination, program: Program) -> PassResult:
    users = {name: len(program.graph.users[name]) for name in program.graph.order}
    dead: list[str] = []
    for name in reversed(program.graph.order):
        node = program.node(name)
        if users[name] or has_side_effects(program, node):
            continue
        dead.append(name)
        for used in node.refs():
            users[used] -= 1
    recorded = []
    for name in dead:
        program, change = record_change(program, Change(0, self.name, "dead-code", name, FrozenDict(), (RemoveNode(name),)))
        recorded.append(change)
    return PassResult(program, tuple(recorded))


@contextlib.contextmanager
def per_change_engine() -> Iterator[None]:
    """Run every pass with one program per change, as before the draft engine."""
    with mock.patch.object(RulePass, "run", rule_pass_run), mock.patch.object(DeadCodeElimination, "run", dead_code_run):
        yield


def engine_outputs(lowering: fqlower.Lowering) -> dict:
    """Everything the two engines must agree on, as comparable values."""
    module = lowering.module
    return {
        "log": lowering.log.dumps(),
        "code": module.code,
        "nodes": [(node.name, node.op, str(node.target), repr(dict(node.meta))) for node in module.graph.nodes],
        "modules": [(path, type(sub).__name__) for path, sub in module.named_modules()],
        "state_dict keys": list(module.state_dict()),
    }


def assert_same_lowering(reference) -> None:
    model, qconfig_map, scope = reference.module, reference.qconfig_map, reference.node_name_to_scope
    draft = fqlower.lower(model, qconfig_map, scope)
    with per_change_engine():
        per_change = fqlower.lower(model, qconfig_map, scope)
    ours, theirs = engine_outputs(draft), engine_outputs(per_change)
    for key in ours:
        assert ours[key] == theirs[key], f"the engines differ in {key}"
    theirs_state = per_change.module.state_dict()
    for key, value in draft.module.state_dict().items():
        assert values_equal(value, theirs_state[key]), f"state_dict[{key!r}] differs between the engines"
    replayed = fqlower.replay(model, draft.log, qconfig_map, scope)
    assert replayed.module.code == draft.module.code
    assert replayed.log.dumps() == draft.log.dumps()
