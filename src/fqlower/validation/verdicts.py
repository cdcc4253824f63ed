"""Verdicts: one change checked on its own subgraph, and a lowering's verdicts together.

`check` runs the two sides of a change (fqlower.validation.fragments) on the same
inputs (fqlower.validation.samples) and compares their outputs: `validated` within
the bound on every sample, `refuted` with the first input that shows the error (or
the produced side's failure to run), `unchecked` with the reason it could not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.ir import Build, Program
from fqlower.emit.to_fx import fx_arg
from fqlower.engine.edits import RemoveNode
from fqlower.log import Change
from fqlower.pt2e.patterns import DEQUANTIZE
from fqlower.validation.fragments import Readers, Sides, UnbuildableProduct, sides
from fqlower.validation.samples import difference, draw

VALIDATED, REFUTED, UNCHECKED = "validated", "refuted", "unchecked"
NOTHING_READS = "nothing outside the change reads the nodes it changes"


@attrs.frozen
class Verdict:
    change: Change
    status: str  # validated | refuted | unchecked
    reason: str = ""
    error: float = 0.0
    bound: float = 0.0
    counterexample: tuple[Any, ...] | None = None  # the inputs of a refuted change's subgraphs
    inputs: tuple[str, ...] = ()  # the program nodes the counterexample's items stand for
    sample: int = 0  # which draw shows it (0: the reference model's own values)
    # the two sides, runnable, of a refuted change (for reproducers)
    sides: Sides | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Validation:
    verdicts: tuple[Verdict, ...]

    @property
    def refuted(self) -> tuple[Verdict, ...]:
        return tuple(verdict for verdict in self.verdicts if verdict.status == REFUTED)

    def counts(self) -> dict[str, int]:
        return {status: sum(verdict.status == status for verdict in self.verdicts) for status in (VALIDATED, REFUTED, UNCHECKED)}

    def format(self) -> str:
        """A table per rule (validated / refuted / unchecked), then each refutation."""
        rules: dict[str, dict[str, int]] = {}
        for verdict in self.verdicts:
            row = rules.setdefault(f"{verdict.change.pass_name}/{verdict.change.rule}", dict.fromkeys((VALIDATED, REFUTED, UNCHECKED), 0))
            row[verdict.status] += 1
        lines = [f"{'rule':<56}{VALIDATED:>10}{REFUTED:>9}{UNCHECKED:>10}"]
        lines += [f"{rule:<56}{row[VALIDATED]:>10}{row[REFUTED]:>9}{row[UNCHECKED]:>10}" for rule, row in sorted(rules.items())]
        for verdict in self.refuted:
            lines.append(f"refuted: {verdict.change.rule} at {verdict.change.anchor!r}: {verdict.reason}")
        return "\n".join(lines)


def reference_values(model: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> dict[str, Any]:
    """Every node's value when `model` runs on `example_inputs`, by node name."""
    values: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            values[node.name] = result = super().run_node(node)
            return result

    with torch.no_grad():
        Recorder(model).run(*example_inputs)
    return values


def check(
    change: Change,
    before: Program,
    after: Program,
    values: dict[str, Any],
    samples: int,
    generator: torch.Generator,
    ceiling: int | None = None,
    readers: Readers | None = None,
    built: dict[Build, Any] | None = None,
    tolerance: float = 1.0,
) -> Verdict:
    """The verdict on one change; once it holds on the reference values (sample 0), the
    values of the nodes its produced side computes go into `values`. `readers` indexes
    `before`, `built` memoises specs (fqlower.validation.fragments); `tolerance` scales
    the bound (the rule's stated tolerance, in output steps)."""
    if all(type(edit) is RemoveNode for edit in change.edits):  # apply removes unread nodes only
        return Verdict(change, VALIDATED, NOTHING_READS)
    try:
        pair = sides(change, before, after, readers, built)
    except UnbuildableProduct as error:
        return Verdict(change, REFUTED, f"its produced subgraph cannot be built: {error}", float("inf"))
    except Exception as error:
        return Verdict(change, UNCHECKED, f"its subgraphs cannot be built: {type(error).__name__}: {error}")
    missing = [name for name in pair.before.inputs if name not in values]
    if missing:
        return Verdict(change, UNCHECKED, f"no value for its input %{missing[0]}")
    worst_error, worst_bound = 0.0, 0.0
    for sample in range(max(samples, 1)):
        inputs = tuple(draw(values[name], sample, generator, ceiling) for name in pair.before.inputs)
        computed: dict[str, Any] | None = {} if sample == 0 else None
        with torch.no_grad():
            try:
                # run even on the reference values: `values` of nodes downstream of earlier
                # changes are the reference model's, which those changes may shift by a step
                expected = pair.before.run(inputs)
            except Exception as error:
                if sample == 0:
                    return Verdict(change, UNCHECKED, f"its matched subgraph fails running: {type(error).__name__}: {error}")
                continue  # a drawn input the matched subgraph does not take
            try:
                produced = pair.after.run(inputs, computed)
            except Exception as error:
                if "Didn't find engine for operation" in str(error):  # onednn-only fused kernels, say
                    engine = torch.backends.quantized.engine
                    return Verdict(change, UNCHECKED, f"its produced kernel does not run on the {engine} engine: {error}")
                reason = f"its produced subgraph fails running: {type(error).__name__}: {error}"
                return Verdict(change, REFUTED, reason, float("inf"), 0.0, inputs, pair.before.inputs, sample, pair)
        for name, old, new in zip(pair.before.outputs, expected, produced):
            found = difference(old, new)
            if found is None:
                continue
            distance, bound = found[0], found[1] * tolerance
            if not distance <= bound:
                reason = f"%{name} differs by {distance:.4g} (bound {bound:.4g}) on sample {sample}"
                return Verdict(change, REFUTED, reason, distance, bound, inputs, pair.before.inputs, sample, pair)
            worst_error, worst_bound = max(worst_error, distance), max(worst_bound, bound)
        if computed is not None:
            values.update(computed)
            _refresh_dequantizes(after, computed, values)
    reason = "" if pair.before.outputs else NOTHING_READS
    return Verdict(change, VALIDATED, reason, worst_error, worst_bound)


def _refresh_dequantizes(program: Program, computed: dict[str, Any], values: dict[str, Any]) -> None:
    """Recompute the dequantizes that read what a change just produced. Later changes
    start at them, and their values from the reference run are stale: a step away, and
    in another memory format (an onednn conv writes channels-last, and its binary form
    takes only an accumulator laid out as it writes)."""
    for name in computed:
        for reader in program.users(name) if name in program else ():
            node = program.node(reader)
            if reader in computed or not _is_dequantize(node):
                continue
            try:
                with torch.no_grad():
                    args, kwargs = fx_arg(node.args, values), fx_arg(node.kwargs, values)
                    values[reader] = getattr(args[0], "dequantize")() if node.op == "call_method" else node.target(*args, **kwargs)
            except Exception:  # a value that does not take it: keep the reference run's
                continue


def _is_dequantize(node: Any) -> bool:
    if node.op == "call_method":
        return bool(node.target == "dequantize")
    return node.op == "call_function" and node.target == DEQUANTIZE

