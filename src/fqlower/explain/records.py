"""What `explain` reports: leftovers, weighted ops, coverage, the explanation."""

from __future__ import annotations


import attrs
import torch
import torch.fx

from fqlower.log import Caution, Skip

QUANTIZE = "quantize_per_tensor"
QUANTIZE_DYNAMIC = "quantize_per_tensor_dynamic"
DEQUANTIZE = "dequantize"

_QUANTIZERS = {torch.quantize_per_tensor: QUANTIZE, torch.quantize_per_tensor_dynamic: QUANTIZE_DYNAMIC}

# binding roles that name the op a change lowered (in order of preference)
_LOWERED_ROLES = ("reference", "function", "binop", "reader")


@attrs.frozen
class Leftover:
    """A quantize/dequantize node left in the lowered program, and why.

    `pattern` is "pass/rule" of the closest near miss (a Skip), or None when no
    rule came close; `reasons` lists every reason, closest first; `boundary` is
    True when the node only converts at a model input/output, a constant, or a
    native op that works on float values: expected, nothing to fix.
    """

    node: str
    op: str  # quantize_per_tensor | quantize_per_tensor_dynamic | dequantize
    description: str  # the node as fqlower prints it
    pattern: str | None
    reasons: tuple[str, ...]
    boundary: bool = False
    skips: tuple[Skip, ...] = ()


@attrs.frozen
class WeightedOp:
    """A weighted op of the reference model: its node, what it is, its parameter
    count, and the lowered node that runs it natively (None: still float)."""

    node: str
    kind: str
    params: int
    native: str | None = None

    @property
    def is_native(self) -> bool:
        return self.native is not None


def _percent(part: int, whole: int) -> float:
    """part/whole in percent; 100 for nothing of nothing (nothing is left in float)."""
    return 100.0 * part / whole if whole else 100.0


@attrs.frozen
class Coverage:
    """How many weighted ops, and how many of their parameters, run on native quantized kernels."""

    ops: tuple[WeightedOp, ...]
    params_total: int
    params_native: int

    @property
    def ops_total(self) -> int:
        return len(self.ops)

    @property
    def ops_native(self) -> int:
        return sum(op.is_native for op in self.ops)

    @property
    def ops_percent(self) -> float:
        return _percent(self.ops_native, self.ops_total)

    @property
    def params_percent(self) -> float:
        return _percent(self.params_native, self.params_total)

    def format(self) -> str:
        if not self.ops:
            return "coverage: the reference model has no weighted ops"
        summary = (
            f"coverage: {self.ops_native} of {self.ops_total} weighted ops ({self.ops_percent:.1f}%) and "
            f"{self.params_native:,} of {self.params_total:,} parameters ({self.params_percent:.1f}%) "
            "run on native quantized kernels"
        )
        lines = [summary]
        for op in self.ops:
            where = f"native as {op.native}" if op.is_native else "float"
            lines.append(f"  {'+' if op.is_native else '-'} %{op.node}: {op.kind}, {op.params:,} parameters, {where}")
        return "\n".join(lines)


@attrs.frozen
class Explanation:
    leftovers: tuple[Leftover, ...]
    coverage: Coverage | None
    changes: int | None = None  # rewrites in the log; None when unknown
    cautions: tuple[Caution, ...] = ()  # the log's (fqlower.cautions)

    @property
    def never_quantized(self) -> bool:
        """True for a model with no quantize/dequantize node that nothing was lowered in."""
        return not self.leftovers and self.changes == 0

    @property
    def problems(self) -> tuple[Leftover, ...]:
        """The leftovers that are not boundaries."""
        return tuple(leftover for leftover in self.leftovers if not leftover.boundary)

    def leftover(self, node: str) -> Leftover:
        for leftover in self.leftovers:
            if leftover.node == node:
                return leftover
        raise KeyError(node)

    def format(self) -> str:
        problems = self.problems
        boundaries = [leftover for leftover in self.leftovers if leftover.boundary]
        summary = (
            f"{len(self.leftovers)} quantize/dequantize nodes left: {len(problems)} around float ops, "
            f"{len(boundaries)} at model inputs, outputs or float-in/out native ops"
        )
        lines = [summary]
        if self.never_quantized:
            lines = [
                "nothing to lower: the model has no quantize or dequantize node (was it quantized? "
                "prepare_fx, calibrate, then convert_to_reference_fx make the reference model fqlower lowers)"
            ]
        for leftover in problems:
            lines.append(f"  {leftover.description}")
            if leftover.pattern is not None:
                lines.append(f"      nearest pattern: {leftover.pattern}")
            lines += [f"      - {reason}" for reason in leftover.reasons]
        if boundaries:
            lines.append("expected conversions:")
            lines += [f"  {leftover.description}  ({'; '.join(leftover.reasons)})" for leftover in boundaries]
        lines.append(self.coverage.format() if self.coverage is not None else "coverage: not computed (pass the reference model)")
        lines += [format_caution(caution) for caution in self.cautions]
        return "\n".join(lines)


def format_caution(caution: Caution) -> str:
    return f"caution [{caution.check}] {caution.message}"
