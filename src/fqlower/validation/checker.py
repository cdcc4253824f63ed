"""Validation as the passes lower: a refuted rewrite is not applied.

    with checking(Validator.of(model, program, example_inputs)):
        result = pipeline.run(program)

`Validator` is the engine's `Checker` (fqlower.engine.pipeline): the rule-pass driver
hands it each change with the program before and after it, and it answers with the
verdict of `check` (fqlower.validation.verdicts). A refuted change becomes a `Skip`
whose reason names the native op the change introduced, the error, the bound and the
input that shows it:

    Skip(pass, rule, anchor, "refuted by translation validation: quantized ConvTranspose2d
         computes %relu off by 1.96 (bound 0.0371) on sample 0; input %x: quint8 [8, 3, 6, 6] ...")

and the pattern stays as it was, for the pass's next rules and the passes after it,
as if the rule had missed. Changes of passes that are not rule passes (they build
their result their own way) are settled after the pass: checked in order, a refused
one left out and the program rebuilt from the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from fqlower.engine.edits import AddNode, SetConstant, SetModule, SetTarget
from fqlower.engine.pipeline import PassResult, Pipeline, Rule
from fqlower.errors import ChangeLogError, IRError
from fqlower.ir import Build, Program
from fqlower.log import Change, ChangeLog, Entry, Skip, record_change
from fqlower.names import qualified_name
from fqlower.reasons import Code
from fqlower.validation.fragments import Readers
from fqlower.validation.reproducer import describe_inputs
from fqlower.validation.samples import DEFAULT_SAMPLES, code_ceiling
from fqlower.validation.verdicts import REFUTED, Validation, Verdict, check, reference_values


REFUSAL = "refuted by translation validation"


class Validator:
    """Checks changes on their own subgraphs, in the order it is handed them, and keeps
    the verdicts. One validator per lowering of `program`: values of new nodes, and the
    index of which nodes call each module, carry over from change to change."""

    def __init__(
        self,
        program: Program,
        values: dict[str, Any],
        samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        ceiling: int | None = None,
        tolerances: Mapping[tuple[str, str], float] | None = None,
    ):
        self.values = values
        self.tolerances = dict(tolerances or {})  # (pass, rule) -> output steps, where a rule states it
        self.readers = Readers(program)
        self.built: dict[Build, Any] = {}  # modules built from specs, shared with the emitter
        self.samples, self.seed, self.ceiling = samples, seed, ceiling
        self.generator = torch.Generator().manual_seed(seed)
        self.verdicts: list[Verdict] = []
        self._seen: set[int] = set()  # ids of the changes checked since the last settle

    @classmethod
    def of(
        cls,
        model: torch.fx.GraphModule,
        program: Program,
        example_inputs: Sequence[Any],
        samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        pipeline: Pipeline | None = None,
    ) -> Validator:
        """A validator for lowering `program` (imported from `model`) with `pipeline`:
        node values from running `model` on `example_inputs`, codes capped as the recipe
        caps them, the tolerances its rules state."""
        values = reference_values(model, example_inputs)
        return cls(program, values, samples, seed, code_ceiling(program.qconfig.values()), stated_tolerances(pipeline))

    def validation(self, log: ChangeLog | None = None) -> Validation:
        """The verdicts so far; with the `log` of the lowering they were made in, each
        verdict names its change as the log does (stamped with its step)."""
        if log is None:
            return Validation(tuple(self.verdicts))
        kept = iter(log.changes)
        refused = iter([entry for entry in log.entries if isinstance(entry, Skip) and entry.reason.startswith(REFUSAL)])
        named = []
        for verdict in self.verdicts:
            if verdict.status == REFUTED:
                change = attrs.evolve(verdict.change, step=next(refused).step)
            else:
                change = next(kept)
            named.append(attrs.evolve(verdict, change=change))
        return Validation(tuple(named))

    def check(self, change: Change, before: Program, after: Program) -> Skip | None:
        self.readers.note(change.edits)
        tolerance = self.tolerances.get((change.pass_name, change.rule), 1.0)
        verdict = check(change, before, after, self.values, self.samples, self.generator, self.ceiling, self.readers, self.built, tolerance)
        self.verdicts.append(verdict)
        self._seen.add(id(change))
        return self.refusal(verdict) if verdict.status == REFUTED else None

    def refusal(self, verdict: Verdict) -> Skip:
        """The Skip that stands for a refuted change."""
        change = verdict.change
        inputs = describe_inputs(verdict.inputs, verdict.counterexample or ())
        reason = f"{REFUSAL}: {produced_ops(change)}: {verdict.reason} (seed {self.seed}); {inputs}"
        return Skip(change.step, change.pass_name, change.rule, change.anchor, reason, refused_code(change))

    def settle(self, program: Program, result: PassResult) -> PassResult:
        """Check the changes of `result` the driver did not hand over; if one is refuted,
        rebuild the pass's program from `program` without it (a later change that then
        no longer applies is left out too, with a Skip saying so)."""
        seen, self._seen = self._seen, set()
        if all(id(change) in seen for change in result.changes):
            return result
        entries: list[Entry] = []
        current, refused = program, False
        for entry in result.entries:
            if not isinstance(entry, Change):
                entries.append(entry)
                continue
            try:
                after, recorded = record_change(current, entry)
            except IRError as error:
                reason = f"not applied: it builds on a rewrite refuted by translation validation ({error.message})"
                entries.append(Skip(entry.step, entry.pass_name, entry.rule, entry.anchor, reason, refused_code(entry)))
                continue
            refusal = None if id(entry) in seen else self.check(entry, current, after)
            if refusal is not None:
                entries.append(refusal)
                refused = True
                continue
            entries.append(entry if not refused else recorded)
            current = after
        self._seen.clear()
        return PassResult(current, tuple(entries)) if refused else result


def stated_tolerances(pipeline: Pipeline | None) -> dict[tuple[str, str], float]:
    """(pass, rule) -> tolerance of every rule of `pipeline`'s rule passes that states one."""
    found = {}
    for pass_ in pipeline.leaves() if pipeline is not None else ():
        rules = getattr(pass_, "rules", None)
        for rule in rules if isinstance(rules, tuple) else ():
            if isinstance(rule, Rule) and rule.tolerance != 1.0:
                found[(pass_.name, rule.name)] = rule.tolerance
    return found


def refused_code(change: Change) -> Code:
    """A refuted rewrite torch makes too is one where torch computes something else."""
    return Code.TORCH_WRONG_RESULT if change.code == Code.AS_TORCH else Code(change.code)


def produced_ops(change: Change) -> str:
    """What the change makes the program call: the ops and module classes of the nodes
    it added or retargeted and of the modules and constants it set."""
    found: list[str] = []
    for edit in change.edits:
        if isinstance(edit, AddNode) and edit.node.op in ("call_function", "call_method"):
            found.append(_op_name(edit.node.target))
        elif isinstance(edit, SetTarget) and edit.op in ("call_function", "call_method"):
            found.append(_op_name(edit.target))
        elif isinstance(edit, (SetModule, SetConstant)):
            value = edit.module if isinstance(edit, SetModule) else edit.value
            found.append(value.factory if isinstance(value, Build) else type(value).__qualname__)
    calls = [name for name in dict.fromkeys(found) if not name.startswith(("torch.quantize_per", "dequantize"))]
    return ", ".join(calls or dict.fromkeys(found)) or "the produced subgraph"


def _op_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    try:
        return qualified_name(target)
    except ChangeLogError:  # an object no namespace holds: its own name
        return getattr(target, "__name__", repr(target))
