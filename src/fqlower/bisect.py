"""Which changes of a lowering break its numerics: delta debugging over the change log.

    result = fqlower.bisect.bisect(reference.module, lowering.log, inputs, tolerance=0.5,
                                   qconfig_map=reference.qconfig_map,
                                   node_name_to_scope=reference.node_name_to_scope)
    text = result.format()        # result.culprits: the changes, result.tests_run

A *test* applies a subset of the log's changes to the reference model's program
(`from_fx(model, maps)`), in log order, with `fqlower.engine.draft.apply` and nothing else:
no matching, no structural hashes, no fingerprints, so a log may be edited by hand
(or by a buggy pass) and still be bisected. The program is emitted with `to_fx` and
run on `inputs`; the outcome is

- *fail* when the largest absolute difference over all output tensors, against the
  reference model's outputs on the same inputs (or `reference_outputs`), exceeds
  `tolerance`. Outputs that cannot be compared (another structure, another shape,
  NaN where the reference has a number) count as an infinite difference;
- *pass* when it does not;
- *unresolved* when a change's edits do not apply to the program the subset
  builds (a change needs one left out: a dead-code removal whose node is still
  used, a fold of a prepack that was never added), or the program does not emit
  or does not run.

Zeller's ddmin (Zeller and Hildebrandt, "Simplifying and isolating
failure-inducing input", TSE 2002) then reduces the full log to a 1-minimal
failing subset: leaving out any one of its changes makes it pass (or not apply).
Unresolved counts as not failing. Subsets are chunks of the current set, first
tried alone, then as complements, at doubling granularity; chunks are runs of
the log, so a chunk of rewrites applies on its own, while dead-code removals
(at the end of the log) need the rewrites that made their nodes dead. Outcomes
are memoized per subset; `tests_run` counts the subsets actually run, including
the two checks made first: the empty subset (the reference program itself: if it
fails, the reference or `reference_outputs` is off and there is nothing to
bisect) and the full log (if it passes, nothing breaks).

Every test runs the model, so a culprit set found with ddmin is only as good as
`inputs`: a change that breaks the model on other inputs only is not found.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.fx
import torch.utils._pytree as pytree

from fqlower.log import Change, ChangeLog
from fqlower.engine.draft import apply
from fqlower.emit import to_fx
from fqlower.errors import UnsupportedInput
from fqlower.ir import Program, from_fx

PASS, FAIL, UNRESOLVED = "pass", "fail", "unresolved"

Progress = Callable[[int, int], None]


@attrs.frozen
class Outcome:
    """The result of one test: `status` (pass/fail/unresolved), the largest
    absolute difference (None when unresolved) and, when unresolved or not
    comparable, what happened."""

    status: str
    difference: float | None = None
    detail: str = ""


def _format_difference(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def describe_change(index: int, change: Change) -> str:
    """`#12 lower-static-modules/lower-static-modules at 'quantize_per_tensor_3' (SetModule, SetArgs, ...)`."""
    kinds = ", ".join(dict.fromkeys(type(edit).__name__ for edit in change.edits))
    return f"#{index} {change.pass_name}/{change.rule} at {change.anchor!r} ({kinds})"


@attrs.frozen
class BisectResult:
    """What `bisect` found.

    `culprits` are the changes of a 1-minimal failing subset, in log order, and
    `indices` their positions in `log.changes`; both are empty when nothing fails
    or nothing can be bisected, and `message` says which. `tests_run` counts the
    subsets run (memoized repeats are not counted).
    """

    culprits: tuple[Change, ...]
    tests_run: int
    message: str
    indices: tuple[int, ...] = ()
    changes_total: int = 0
    tolerance: float = 0.0
    difference: float | None = None  # of the culprit set
    full: Outcome | None = None  # of the whole log
    empty: Outcome | None = None  # of no change at all (the reference program)

    def format(self) -> str:
        lines = [self.message]
        for index, change in zip(self.indices, self.culprits):
            lines.append(f"  {describe_change(index, change)}")
            for edit in change.edits:
                lines.append(f"      {edit!r}"[:240])
        lines.append(
            f"{self.tests_run} tests over {self.changes_total} changes; tolerance {self.tolerance:g}; "
            f"max difference: no change {_format_difference(self.empty.difference if self.empty else None)}, "
            f"all changes {_format_difference(self.full.difference if self.full else None)}"
            + (f", culprits {_format_difference(self.difference)}" if self.culprits else "")
        )
        return "\n".join(lines)


# --- comparing outputs -----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_quantized:
        return value.dequantize()
    return value


def max_difference(outputs: Any, reference: Any) -> tuple[float, str]:
    """The largest absolute difference over all output tensors, and a note when
    the outputs cannot be compared (then the difference is infinite)."""
    ours, theirs = pytree.tree_flatten(outputs), pytree.tree_flatten(reference)
    if ours[1] != theirs[1]:
        return math.inf, f"the outputs have another structure: {ours[1]} instead of {theirs[1]}"
    worst = 0.0
    for position, (a, b) in enumerate(zip(ours[0], theirs[0])):
        a, b = _plain(a), _plain(b)
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return math.inf, f"output {position} is a {type(a).__name__}, the reference's a {type(b).__name__}"
        if not isinstance(a, torch.Tensor):
            if a != b:
                return math.inf, f"output {position} is {a!r}, the reference's {b!r}"
            continue
        if a.shape != b.shape:
            return math.inf, f"output {position} has shape {tuple(a.shape)}, the reference's {tuple(b.shape)}"
        if a.numel() == 0:
            continue
        a, b = a.detach(), b.detach()
        if not (a.is_complex() or b.is_complex()):
            a, b = a.to(torch.float64), b.to(torch.float64)
        both_nan = torch.isnan(a) & torch.isnan(b)
        difference = (a - b).abs().masked_fill(both_nan, 0.0)
        if bool(torch.isnan(difference).any()):
            return math.inf, f"output {position} has NaN where the reference has a number (or the other way round)"
        worst = max(worst, float(difference.max()))
    return worst, ""


# --- running subsets -------------------------------------------------------------------------


class SubsetTester:
    """Runs subsets of a log's changes (by index) and remembers the outcomes."""

    def __init__(
        self,
        program: Program,
        changes: Sequence[Change],
        inputs: tuple[Any, ...],
        reference_outputs: Any,
        tolerance: float,
        progress: Progress | None,
    ):
        self.program = program
        self.changes = changes
        self.inputs = inputs
        self.reference_outputs = reference_outputs
        self.tolerance = tolerance
        self.progress = progress
        self.outcomes: dict[frozenset[int], Outcome] = {}
        self.tests_run = 0

    def outcome(self, subset: Sequence[int], current_size: int) -> Outcome:
        key = frozenset(subset)
        found = self.outcomes.get(key)
        if found is None:
            found = self._run(sorted(key))
            self.outcomes[key] = found
            self.tests_run += 1
            if self.progress is not None:
                self.progress(self.tests_run, current_size)
        return found

    def fails(self, subset: Sequence[int], current_size: int) -> bool:
        return self.outcome(subset, current_size).status == FAIL

    def _run(self, indices: list[int]) -> Outcome:
        program = self.program
        for index in indices:
            change = self.changes[index]
            try:
                program = apply(program, change.edits)
            except Exception as error:  # noqa: BLE001 -- IRError, or anything a malformed edit raises
                return Outcome(UNRESOLVED, detail=f"{describe_change(index, change)} does not apply: {_first_line(error)}")
        try:
            module = to_fx(program)
        except Exception as error:  # noqa: BLE001 -- any failure is an unresolved outcome
            return Outcome(UNRESOLVED, detail=f"the program does not emit: {_first_line(error)}")
        try:
            with torch.no_grad():
                outputs = module(*self.inputs)
        except Exception as error:  # noqa: BLE001 -- any failure is an unresolved outcome
            return Outcome(UNRESOLVED, detail=f"the program does not run: {type(error).__name__}: {_first_line(error)}")
        difference, note = max_difference(outputs, self.reference_outputs)
        return Outcome(FAIL if difference > self.tolerance else PASS, difference, note)


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def _split(items: list[int], parts: int) -> list[list[int]]:
    """`items` in `parts` contiguous chunks of near-equal size, in order."""
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [chunk for chunk in chunks if chunk]


def ddmin(tester: SubsetTester, failing: list[int]) -> list[int]:
    """Zeller's ddmin: a 1-minimal failing subset of `failing` (which fails).

    `tester` is anything with `fails(subset, current_size) -> bool`; an unresolved
    subset must answer False."""
    current, granularity = list(failing), 2
    while len(current) >= 2:
        chunks = _split(current, granularity)
        reduced = False
        for chunk in chunks:  # reduce to a chunk
            if tester.fails(chunk, len(current)):
                current, granularity, reduced = chunk, 2, True
                break
        if not reduced and len(chunks) > 2:  # reduce to a complement (for two chunks these are the chunks)
            for chunk in chunks:
                left_out = set(chunk)
                complement = [index for index in current if index not in left_out]
                if tester.fails(complement, len(current)):
                    current, granularity, reduced = complement, max(granularity - 1, 2), True
                    break
        if not reduced:
            if granularity >= len(current):
                break
            granularity = min(len(current), 2 * granularity)
    return current


# --- the entry point -------------------------------------------------------------------------


def bisect(
    model: torch.fx.GraphModule,
    log: ChangeLog | str,
    inputs: Sequence[Any] | torch.Tensor,
    *,
    tolerance: float,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    reference_outputs: Any = None,
    progress: Progress | None = None,
) -> BisectResult:
    """A minimal set of the log's changes whose application makes the model's
    outputs on `inputs` differ from the reference's by more than `tolerance`.

    `model` is the reference model the log was made from (read, never changed);
    `reference_outputs` default to `model(*inputs)`. `progress(tests_run,
    current_size)` is called after every test run.
    """
    if isinstance(log, str):
        log = ChangeLog.loads(log)
    if not tolerance >= 0:  # also NaN
        raise UnsupportedInput(f"tolerance must be a non-negative number, got {tolerance!r}")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if reference_outputs is None:
        with torch.no_grad():
            reference_outputs = model(*inputs)
    changes = log.changes
    tester = SubsetTester(from_fx(model, qconfig_map, node_name_to_scope), changes, inputs, reference_outputs, tolerance, progress)
    every = list(range(len(changes)))

    def result(message: str, culprits: Sequence[int] = (), difference: float | None = None) -> BisectResult:
        return BisectResult(
            culprits=tuple(changes[index] for index in culprits),
            tests_run=tester.tests_run,
            message=message,
            indices=tuple(culprits),
            changes_total=len(changes),
            tolerance=tolerance,
            difference=difference,
            full=tester.outcomes.get(frozenset(every)),
            empty=tester.outcomes.get(frozenset()),
        )

    empty = tester.outcome([], len(changes))
    if empty.status == UNRESOLVED:
        return result(f"the reference program itself cannot be run: {empty.detail}")
    if empty.status == FAIL:
        return result(
            f"the reference itself is off: with no change applied the outputs differ from the reference "
            f"outputs by {_format_difference(empty.difference)} > {tolerance:g}{_note(empty)}; nothing to bisect"
        )
    full = tester.outcome(every, len(changes))
    if full.status == UNRESOLVED:
        return result(f"the full log cannot be tested: {full.detail}")
    if full.status == PASS:
        return result(
            f"all {len(changes)} changes together stay within the tolerance {tolerance:g} "
            f"(max difference {_format_difference(full.difference)}): no culprit"
        )
    culprits = ddmin(tester, every)
    found = tester.outcome(culprits, len(culprits))
    plural = "change breaks" if len(culprits) == 1 else "changes together break"
    return result(
        f"{len(culprits)} of {len(changes)} {plural} the tolerance {tolerance:g}: max difference "
        f"{_format_difference(found.difference)}{_note(found)} (all changes: {_format_difference(full.difference)})",
        culprits,
        found.difference,
    )


def _note(outcome: Outcome) -> str:
    return f" ({outcome.detail})" if outcome.detail else ""


__all__ = ["BisectResult", "Outcome", "SubsetTester", "bisect", "ddmin", "describe_change", "max_difference"]
