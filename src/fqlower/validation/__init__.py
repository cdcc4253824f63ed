"""Translation validation: every change of a lowering checked on its own subgraph.

    validation = fqlower.validation.validate(gm, qconfig_map, node_name_to_scope, example_inputs)
    validation.refuted        # the changes whose produced subgraph computes something else

fqlower is trusted because it equals torch, and torch is sometimes wrong (on fbgemm a
functional conv_transpose2d lowers to a kernel 2.5 off a 2.3-range output; a user's
own pass has no oracle at all). So, as Alive2 does for LLVM's peephole rewrites, each
`Change` of the log is checked in isolation: the subgraph it matched, taken from the
program before it, and the subgraph it produced, taken from the program after it, run
on the same inputs (fqlower.validation.fragments), and their outputs must agree within
one output quantization step (fqlower.validation.samples). Inputs are the values the
nodes had when the reference model ran on `example_inputs` (so shapes come from the
model), then fresh draws over each input's whole code range and at its ends. Nodes a
change adds get their values from its produced side, for the changes after it.

A verdict per change, in log order: `validated`, `refuted` (with the error, the bound
and the inputs that show it) or `unchecked` (with the reason). Validating changes
nothing: the model, the log and the lowering stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.api import lower
from fqlower.engine.draft import apply
from fqlower.engine.pipeline import Pipeline
from fqlower.ir import Program, from_fx
from fqlower.log import Change, ChangeLog
from fqlower.validation.fragments import Fragment, sides
from fqlower.validation.samples import code_ceiling, difference, draw

VALIDATED, REFUTED, UNCHECKED = "validated", "refuted", "unchecked"


@attrs.frozen
class Verdict:
    change: Change
    status: str  # validated | refuted | unchecked
    reason: str = ""
    error: float = 0.0
    bound: float = 0.0
    counterexample: tuple[Any, ...] | None = None  # the inputs of a refuted change's subgraphs


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


def validate(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    example_inputs: Sequence[Any] = (),
    *,
    pipeline: Pipeline | None = None,
    log: ChangeLog | None = None,
    samples: int = 4,
    seed: int = 0,
) -> Validation:
    """Lower `model` (with `pipeline`, or take the changes of `log`) and check every change."""
    if log is None:
        log = lower(model, qconfig_map, node_name_to_scope, pipeline=pipeline).log
    program = from_fx(model, qconfig_map, node_name_to_scope)
    values = reference_values(model, example_inputs)
    generator = torch.Generator().manual_seed(seed)
    ceiling = code_ceiling(program.qconfig.values())
    verdicts = []
    for change in log.changes:
        after = apply(program, change.edits)
        verdicts.append(check(change, program, after, values, samples, generator, ceiling))
        program = after
    return Validation(tuple(verdicts))


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
    change: Change, before: Program, after: Program, values: dict[str, Any], samples: int, generator: torch.Generator, ceiling: int | None = None
) -> Verdict:
    """The verdict on one change; records the values of the nodes its produced side computes."""
    try:
        pair = sides(change, before, after)
    except Exception as error:
        return Verdict(change, UNCHECKED, f"its subgraphs cannot be built: {type(error).__name__}: {error}")
    missing = [name for name in pair.before.inputs if name not in values]
    if missing:
        return Verdict(change, UNCHECKED, f"no value for its input %{missing[0]}")
    worst_error, worst_bound = 0.0, 0.0
    for sample in range(max(samples, 1)):
        inputs = tuple(draw(values[name], sample, generator, ceiling) for name in pair.before.inputs)
        with torch.no_grad():
            try:
                expected = pair.before.module(*inputs)
            except Exception as error:
                if sample == 0:
                    return Verdict(change, UNCHECKED, f"its matched subgraph fails running: {type(error).__name__}: {error}")
                continue  # a drawn input the matched subgraph does not take
            try:
                produced = pair.after.module(*inputs)
            except Exception as error:
                if "Didn't find engine for operation" in str(error):  # onednn-only fused kernels, say
                    engine = torch.backends.quantized.engine
                    return Verdict(change, UNCHECKED, f"its produced kernel does not run on the {engine} engine: {error}")
                return Verdict(change, REFUTED, f"its produced subgraph fails running: {type(error).__name__}: {error}", float("inf"), 0.0, inputs)
        for name, old, new in zip(pair.before.outputs, expected, produced):
            found = difference(old, new)
            if found is None:
                continue
            distance, bound = found
            if not distance <= bound:
                reason = f"%{name} differs by {distance:.4g} (bound {bound:.4g}) on sample {sample}"
                return Verdict(change, REFUTED, reason, distance, bound, inputs)
            worst_error, worst_bound = max(worst_error, distance), max(worst_bound, bound)
        if sample == 0:
            _record(pair.after, inputs, values)
    reason = "" if pair.before.outputs else "nothing outside the change reads the nodes it changes"
    return Verdict(change, VALIDATED, reason, worst_error, worst_bound)


def _record(fragment: Fragment, inputs: tuple[Any, ...], values: dict[str, Any]) -> None:
    """The values of the nodes `fragment` computes, on `inputs`, into `values`."""
    computed = [node for node in fragment.module.graph.nodes if node.op not in ("placeholder", "output")]
    by_node = dict(zip(computed, fragment.names))

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            result = super().run_node(node)
            if node in by_node:
                values[by_node[node]] = result
            return result

    with torch.no_grad():
        Recorder(fragment.module).run(*inputs)


__all__ = ["REFUTED", "UNCHECKED", "VALIDATED", "Validation", "Verdict", "check", "reference_values", "validate"]
