"""Passes, pipelines, instruments and the match-then-rewrite driver.

A pass is anything with a `name` and a pure `run(program) -> PassResult`. Most
passes are `RulePass`es: an ordered tuple of `Rule`s, each a matcher that answers
`Match` (rewrite here), `Miss(reason)` (almost: say why not) or `None` (not this
pattern), plus a rewriter that returns edits as data. The driver walks the nodes
in program order on one `Draft` of the program (matchers and rewriters read it as
a program), applies each rewrite with `Draft.apply`, and records a `Change` or a
`Skip`; the pass returns the frozen draft.

A `Pipeline` is itself a pass. Instruments observe each pass (before/after) and
never change anything: `Timing` and `Snapshots` ship here.

A `Checker` may veto changes (translation validation, fqlower.validation): within
`checking(checker)`, the driver hands it each change with the program before and
after it, and a change it answers with a `Skip` is not applied (the draft goes back
to the program before it, and the node is left to the pass's next rules, as after a
`Miss`); a pipeline has it `settle` the changes of passes that are not rule passes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

import attrs

from fqlower.log import Caution, Change, ChangeLog, Entry, Header, PassRecord, Skip, record_into
from fqlower.engine.draft import Draft
from fqlower.engine.edits import Edit
from fqlower.errors import FqlowerError
from fqlower.log.fingerprint import digest_cache, fingerprint
from fqlower.ir import FrozenDict, Node, Program, ProgramView
from fqlower.reasons import Code


@attrs.frozen
class PassResult:
    program: Program
    entries: tuple[Entry, ...] = ()

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(entry for entry in self.entries if isinstance(entry, Change))


@runtime_checkable
class Pass(Protocol):
    name: str

    def run(self, program: Program) -> PassResult: ...


class Checker(Protocol):
    """Vetoes changes as passes make them (see the module docstring)."""

    def check(self, change: Change, before: Program, after: Program) -> Skip | None:
        """None to keep `change` (which turned `before` into `after`), or the Skip that replaces it."""
        ...

    def settle(self, program: Program, result: PassResult) -> PassResult:
        """`result` of a pass run on `program`, its changes that `check` did not see
        checked in order: the refused ones replaced by Skips, the program rebuilt without them."""
        ...


_CHECKER: ContextVar[Checker | None] = ContextVar("fqlower_checker", default=None)


@contextlib.contextmanager
def checking(checker: Checker) -> Iterator[None]:
    """Within the block, passes run in this context hand their changes to `checker`."""
    token = _CHECKER.set(checker)
    try:
        yield
    finally:
        _CHECKER.reset(token)


@attrs.frozen
class Match:
    """Where a rule applies: the anchor node, the other nodes by role, and what the
    rewriter needs to know (plain data)."""

    anchor: str
    bindings: FrozenDict = FrozenDict()
    facts: FrozenDict = FrozenDict()
    # how this rewrite relates to torch's lowering (fqlower.reasons), and why, when it departs
    code: Code = Code.AS_TORCH
    reason: str = ""


@attrs.frozen
class Miss:
    """Almost a match; `reason` says why the node stays as it is, `code` how that
    relates to torch's lowering (fqlower.reasons)."""

    reason: str
    code: Code = Code.AS_TORCH


Matcher = Callable[[ProgramView, Node], "Match | Miss | None"]
Rewriter = Callable[[ProgramView, Match], Iterable[Edit]]


Candidate = Callable[[Node], bool]


@attrs.frozen
class Rule:
    """`candidate`, when given, is a cheap test of a node alone that holds for every
    node `match` answers (Match or Miss) for: the driver calls `match` only on those.
    `tolerance` is how far, in output quantization steps, translation validation lets
    a rewrite's result be from what it replaced (1: a requantizing op's own rounding;
    more for a rule that approximates on purpose)."""

    name: str
    match: Matcher
    rewrite: Rewriter
    candidate: Candidate | None = None
    tolerance: float = 1.0


def _with_context(error: FqlowerError, prefix: str, program: Program, node: str) -> FqlowerError:
    """`error` re-raised by a pass: its message prefixed, and a program to show (a
    frozen one: an error must not hold the pass's draft)."""
    shown = error.program if isinstance(error.program, Program) else program
    return type(error)(f"{prefix}: {error.message}", node=error.node or node, program=shown, stack_trace=error.stack_trace)


@attrs.frozen
class RulePass:
    """A pass made of rules, tried in order on every node the pass starts with."""

    name: str
    rules: tuple[Rule, ...]

    def run(self, program: Program) -> PassResult:
        """Visit the nodes of `program` in order; rules read and rewrite one draft, so
        each match sees every earlier rewrite of the pass. The draft never escapes."""
        entries: list[Entry] = []
        # (name, candidate, match, rewrite) per rule, read once: the loop visits every node
        rules = [(rule.name, rule.candidate, rule.match, rule.rewrite) for rule in self.rules]
        checker = _CHECKER.get()
        draft = Draft(program)
        for name in program.graph.order:
            node = draft.node_table.get(name)
            if node is None:  # removed by an earlier rewrite of this pass
                continue
            for rule_name, candidate, match, rewrite in rules:
                if candidate is not None and not candidate(node):
                    continue
                outcome = match(draft, node)
                if outcome is None:
                    continue
                if isinstance(outcome, Miss):
                    entries.append(Skip(0, self.name, rule_name, name, outcome.reason, outcome.code))
                    continue
                try:
                    edits = tuple(rewrite(draft, outcome))
                    change = Change(0, self.name, rule_name, outcome.anchor, outcome.bindings, edits, code=outcome.code, reason=outcome.reason)
                    before = draft.freeze() if checker is not None else program
                    change = record_into(draft, change)
                except FqlowerError as error:
                    raise _with_context(error, f"pass {self.name}, rule {rule_name}", draft.freeze(), name) from error
                refusal = checker.check(change, before, draft.freeze()) if checker is not None else None
                if refusal is not None:  # not applied: the next rules see the node as it was
                    entries.append(refusal)
                    draft = Draft(before)
                    continue
                entries.append(change)
                break
        return PassResult(draft.freeze(), tuple(entries))


def rule_pass(name: str, match: Matcher, rewrite: Rewriter, candidate: Candidate | None = None, tolerance: float = 1.0) -> RulePass:
    """A one-rule pass whose rule has the pass's name."""
    return RulePass(name, (Rule(name, match, rewrite, candidate, tolerance),))


# --- instruments -----------------------------------------------------------------------------


class Instrument:
    """Observes passes; subclasses override what they need. Must not change anything."""

    def before(self, pass_: Pass, program: Program) -> None:
        pass

    def after(self, pass_: Pass, program: Program, result: PassResult) -> None:
        pass


class Timing(Instrument):
    """Wall-clock seconds per pass, in pipeline order."""

    def __init__(self) -> None:
        self.seconds: list[tuple[str, float]] = []
        self._started = 0.0

    def before(self, pass_: Pass, program: Program) -> None:
        self._started = time.perf_counter()

    def after(self, pass_: Pass, program: Program, result: PassResult) -> None:
        self.seconds.append((pass_.name, time.perf_counter() - self._started))


class Snapshots(Instrument):
    """The program after every pass. Programs share structure, so this is cheap."""

    def __init__(self) -> None:
        self.programs: list[tuple[str, Program]] = []

    def after(self, pass_: Pass, program: Program, result: PassResult) -> None:
        self.programs.append((pass_.name, result.program))


# --- pipelines -------------------------------------------------------------------------------


@attrs.frozen
class Pipeline:
    """Passes run in order; itself a pass. Entries are stamped with the step (the
    index of the pass among the pipeline's leaves)."""

    name: str
    passes: tuple[Any, ...]

    def leaves(self) -> tuple[Pass, ...]:
        found: list[Pass] = []
        for pass_ in self.passes:
            found.extend(pass_.leaves() if isinstance(pass_, Pipeline) else (pass_,))
        return tuple(found)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(pass_.name for pass_ in self.leaves())

    def _check_names(self, names: Sequence[str]) -> None:
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise FqlowerError(f"pipeline {self.name!r} has no pass named {unknown}; it has {list(self.names)}")

    def without(self, *names: str) -> Pipeline:
        """The same pipeline with the named passes disabled."""
        self._check_names(names)
        return Pipeline(self.name, tuple(p for p in self.leaves() if p.name not in names))

    def only(self, *names: str) -> Pipeline:
        """The named passes, in pipeline order."""
        self._check_names(names)
        return Pipeline(self.name, tuple(p for p in self.leaves() if p.name in names))

    def run(self, program: Program, instruments: Sequence[Instrument] = ()) -> PassResult:
        entries: list[Entry] = []
        checker = _CHECKER.get()
        for step, pass_ in enumerate(self.leaves()):
            for instrument in instruments:
                instrument.before(pass_, program)
            result = pass_.run(program)
            if checker is not None:
                result = checker.settle(program, result)
            for instrument in instruments:
                instrument.after(pass_, program, result)
            entries.extend(_stamped(entry, step, pass_.name) for entry in result.entries)
            program = result.program
        return PassResult(program, tuple(entries))

    def run_logged(self, program: Program, instruments: Sequence[Instrument] = ()) -> tuple[PassResult, ChangeLog]:
        """Run and also return the change log, with fingerprints before, after each pass, and after."""
        recorder = _FingerprintRecorder()
        with digest_cache():
            result = self.run(program, (*instruments, recorder))
            input_fingerprint = fingerprint(program)
        output_fingerprint = recorder.records[-1].fingerprint if recorder.records else input_fingerprint
        header = Header(input=input_fingerprint, output=output_fingerprint, passes=tuple(recorder.records))
        return result, ChangeLog(header, result.entries)


def _stamped(entry: Entry, step: int, pass_name: str) -> Entry:
    """`entry` of pass `pass_name` at `step` (attrs.evolve without its per-call introspection)."""
    if type(entry) is Change:
        return Change(step, pass_name, entry.rule, entry.anchor, entry.bindings, entry.edits, entry.matched, entry.produced, entry.code, entry.reason)
    if type(entry) is Skip:
        return Skip(step, pass_name, entry.rule, entry.node, entry.reason, entry.code)
    if isinstance(entry, Caution):  # about the model, not a step of it
        return entry
    return attrs.evolve(entry, step=step, pass_name=pass_name)


class _FingerprintRecorder(Instrument):
    def __init__(self) -> None:
        self.records: list[PassRecord] = []

    def after(self, pass_: Pass, program: Program, result: PassResult) -> None:
        self.records.append(PassRecord(pass_.name, fingerprint(result.program)))
