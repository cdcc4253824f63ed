"""Why quantize/dequantize nodes are left after lowering, and how much runs natively.

    explanation = fqlower.explain.explain(lowering, reference_gm)
    text = explanation.format()

`explain` reads a `Lowering` (and, for the coverage summary, the reference model it
was made from) and changes nothing.

Leftovers. Every `quantize_per_tensor`, `quantize_per_tensor_dynamic` and
`dequantize` node still in `lowering.program` is a conversion between float and
quantized values. Each is explained by the float ops on its float side:

- a dequantize: the ops that read it (its consumers) and, when it undoes a
  leftover quantize (or a `.to(float16)`), the op that quantize reads;
- a quantize: the op it reads (its producer) and the ops that read it through a
  dequantize.

For each such op the reasons are, in this order: the log's `Skip`s recorded at the
leftover itself, at the op, or at the op's users (and at the user of a relu right
after it), which is where rules anchor (a static-module rule looks at the quantize
after the module); else "qconfig of '<op>' is None" when the qconfig map says so
(torch's convert then leaves a plain float module, which no rule looks at, so no
skip exists); else "no lowering pattern covers <op>". A dequantize some of whose
users were lowered (a change bound it, or the reference model had more users) also
gets a reason saying it is shared and who still reads it in float.

A leftover whose float side is only model inputs, model outputs, constants or
native ops with float inputs/outputs (dynamic and weight-only modules) is a
*boundary*: expected in any lowered model, nothing to fix. `format()` lists those
apart.

Coverage. `reference` is the reference GraphModule `lowering` was made from; it
is checked against the log's input fingerprint (with the lowering's qconfig and
scope maps) and `UnsupportedInput` is raised when it is another model. Without it
`coverage` is None: a `Lowering` does not hold its input graph. Weighted ops are
counted in the reference (call_module of Linear, Conv*, ConvTranspose*,
LSTM/GRU/RNN and their cells, Embedding(Bag), reference and fused variants;
call_function F.linear/F.conv*/F.conv_transpose*). One runs natively when a node of
the lowered program that is a quantized module with weights, or a
`torch.ops.quantized.*` call reading a packed weight, has it as its source: same
name, or named in the node's provenance. Parameters are counted once per tensor
(a module called twice counts its weights once), as native when any op using
them runs natively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.ao.nn.intrinsic as nni
import torch.fx
import torch.nn as nn

from fqlower.api import Lowering
from fqlower.changelog import PROVENANCE, Change, Skip
from fqlower.reasons import is_departure
from fqlower.errors import ChangeLogError, UnsupportedInput
from fqlower.fingerprint import fingerprint
from fqlower.ir import (
    Build,
    Node,
    Original,
    Program,
    Ref,
    format_node,
    format_target,
    from_fx,
    refs_in,
)
from fqlower.names import qualified_name, resolve
from fqlower.patterns import FUNCTIONAL_SIGNATURES, RELU_FUNCTIONS, WEIGHT_PREPACK_OPS

QUANTIZE = "quantize_per_tensor"
QUANTIZE_DYNAMIC = "quantize_per_tensor_dynamic"
DEQUANTIZE = "dequantize"

_QUANTIZERS = {torch.quantize_per_tensor: QUANTIZE, torch.quantize_per_tensor_dynamic: QUANTIZE_DYNAMIC}

# binding roles that name the op a change lowered (in order of preference)
_LOWERED_ROLES = ("reference", "function", "binop", "reader")


# --- records ---------------------------------------------------------------------------------


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
        return "\n".join(lines)


# --- what a node is --------------------------------------------------------------------------


def leftover_kind(node: Node) -> str | None:
    """quantize_per_tensor / quantize_per_tensor_dynamic / dequantize, or None."""
    if node.op == "call_method" and node.target == "dequantize":
        return DEQUANTIZE
    if node.op == "call_function":
        for quantizer, kind in _QUANTIZERS.items():
            if node.target is quantizer:
                return kind
    return None


def _is_quantizer(node: Node) -> bool:
    """A quantize node of any kind (per tensor, per channel, dynamic)."""
    return node.op == "call_function" and any(
        node.target is quantizer for quantizer in (*_QUANTIZERS, torch.quantize_per_channel)
    )


def _is_to_float16(node: Node) -> bool:
    return node.op == "call_method" and node.target == "to" and len(node.args) == 2 and node.args[1] == torch.float16


def _module_class(program: Program, node: Node) -> type | None:
    """The class of the module a call_module node calls (specs resolved, not built)."""
    module = program.modules.get(node.target)
    if isinstance(module, Build):
        try:
            factory = resolve(module.factory)
        except ChangeLogError:
            return None
        owner = getattr(factory, "__self__", None)
        if isinstance(owner, type):
            return owner
        return factory if isinstance(factory, type) else None
    return type(module) if module is not None else None


_NATIVE_MODULE_PREFIXES = ("torch.ao.nn.quantized.", "torch.ao.nn.intrinsic.quantized.")


def _is_native_class(cls: type | None) -> bool:
    if cls is None:
        return False
    module = cls.__module__
    return module.startswith(_NATIVE_MODULE_PREFIXES) and not module.startswith("torch.ao.nn.quantized.reference")


def _is_quantized_op(target: Any) -> bool:
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.startswith("quantized::")
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace == "quantized"
    return False


_PREPACK_NAMES = frozenset(qualified_name(op) for op in WEIGHT_PREPACK_OPS)


def _is_packed_weight(program: Program, name: str) -> bool:
    node = program.node(name)
    if node.op == "get_attr":
        value = program.constants.get(node.target)
        return isinstance(value, torch._C.ScriptObject) or (isinstance(value, Build) and value.factory in _PREPACK_NAMES)
    return node.op == "call_function" and any(node.target is op for op in WEIGHT_PREPACK_OPS)


def native_kind(program: Program, node: Node) -> str | None:
    """What a node runs natively ("torch.ao.nn.quantized...Linear", "quantized::add"), or None."""
    if node.op == "call_module":
        cls = _module_class(program, node)
        return f"{cls.__module__}.{cls.__qualname__}" if cls is not None and _is_native_class(cls) else None
    if node.op == "call_function" and _is_quantized_op(node.target):
        return format_target(node.target).removeprefix("torch.ops.").replace(".", "::", 1)
    return None


def _native_weighted(program: Program, node: Node) -> str | None:
    """What a node runs natively *with weights*, or None."""
    kind = native_kind(program, node)
    if kind is None:
        return None
    if node.op == "call_module":
        module = program.modules.get(node.target)
        original = module.args[0] if isinstance(module, Build) and module.args else module
        return kind if _holds_weights(program, original) else None
    reads_packed = any(_is_packed_weight(program, ref.name) for ref in refs_in((node.args, node.kwargs)))
    return kind if reads_packed else None


_WEIGHT_ATTRIBUTES = ("weight", "_packed_params", "_all_weight_values")  # of quantized modules


def _holds_weights(program: Program, spec: Any) -> bool:
    """True for a spec built from a weighted module, or a quantized module with weights."""
    if isinstance(spec, Original):
        spec = program.originals.get(spec.path)
    elif isinstance(spec, Build):
        return bool(spec.args) and _holds_weights(program, spec.args[0])
    if not isinstance(spec, nn.Module):
        return False
    return is_weighted_module(spec) or (_is_native_class(type(spec)) and any(hasattr(spec, name) for name in _WEIGHT_ATTRIBUTES))


def describe_op(program: Program, node: Node) -> str:
    """`torch.sigmoid at %sigmoid`, `.relu() at %relu`, `module fc2 (Linear) at %fc2`."""
    if node.op == "call_module":
        cls = _module_class(program, node)
        what = f"module {node.target} ({cls.__name__ if cls else '?'})"
    elif node.op == "call_method":
        what = f".{node.target}()"
    elif node.op == "call_function":
        what = format_target(node.target)
    else:
        what = node.op
    return f"{what} at %{node.name}"


# --- weighted ops ----------------------------------------------------------------------------

_WEIGHTED_MODULES: tuple[type, ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,  # Conv1/2/3d and ConvTranspose1/2/3d
    nn.RNNBase,  # LSTM, GRU, RNN
    nn.RNNCellBase,  # LSTMCell, GRUCell, RNNCell
    nn.Embedding,
    nn.EmbeddingBag,
)


def is_weighted_module(module: nn.Module) -> bool:
    """Linear/Conv/ConvTranspose/RNNs/cells/Embedding(Bag), their reference versions
    (subclasses) and fused modules holding one."""
    if isinstance(module, _WEIGHTED_MODULES):
        return True
    if isinstance(module, nni._FusedModule):
        return any(isinstance(child, _WEIGHTED_MODULES) for child in module.children())
    return False


def _weight_tensors(program: Program, arg: Any) -> list[torch.Tensor]:
    """The constant tensor an argument reads, following first arguments back
    (weight -> quantize -> dequantize): [] when it comes from an input."""
    while isinstance(arg, Ref):
        node = program.node(arg.name)
        if node.op == "get_attr":
            value = program.constants.get(node.target)
            return [value] if isinstance(value, torch.Tensor) else []
        if node.op in ("call_function", "call_method") and node.args:
            arg = node.args[0]
            continue
        return []
    return []


def weighted_ops(program: Program) -> list[tuple[Node, str, list[torch.Tensor]]]:
    """(node, kind, parameter tensors) for every weighted op of a (reference) program."""
    from fqlower.passes.prepack import bind

    found: list[tuple[Node, str, list[torch.Tensor]]] = []
    for node in program.nodes():
        if node.op == "call_module":
            module = program.modules.get(node.target)
            if isinstance(module, nn.Module) and is_weighted_module(module):
                found.append((node, type(module).__name__, list(module.parameters())))
        elif node.op == "call_function" and node.target in FUNCTIONAL_SIGNATURES:
            params = bind(node)
            tensors = [] if isinstance(params, str) else _weight_tensors(program, params["weight"]) + _weight_tensors(program, params["bias"])
            found.append((node, f"F.{node.target.__name__}", tensors))
    return found


def _provenance(node: Node) -> tuple[str, ...]:
    record = node.meta.get(PROVENANCE)
    sources = tuple(record["from"]) if record else ()
    return (node.name, *sources)


def reference_program(lowering: Lowering, reference: torch.fx.GraphModule) -> Program:
    """The program of the reference model `lowering` was made from; UnsupportedInput
    when `reference` is another model (its fingerprint is not the log's input)."""
    lowered = lowering.program
    start = from_fx(reference, dict(lowered.qconfig), dict(lowered.scope))
    if fingerprint(start) != lowering.log.header.input:
        raise UnsupportedInput(
            "the reference model given to explain() is not the one this lowering was made from "
            "(its fingerprint differs from the change log's input)"
        )
    return start


def coverage(lowering: Lowering, reference: torch.fx.GraphModule | Program) -> Coverage:
    """Weighted ops of `reference` and their parameters that run natively in `lowering`."""
    lowered = lowering.program
    start = reference if isinstance(reference, Program) else reference_program(lowering, reference)
    runs: dict[str, str] = {}
    for node in lowered.nodes():
        kind = _native_weighted(lowered, node)
        if kind is not None:
            for source in _provenance(node):
                runs.setdefault(source, f"%{node.name} ({kind})")
    ops = []
    sizes: dict[int, int] = {}
    native_tensors: set[int] = set()
    for node, kind, tensors in weighted_ops(start):
        unique = {id(tensor): tensor.numel() for tensor in tensors}
        sizes.update(unique)
        native = runs.get(node.name)
        if native is not None:
            native_tensors.update(unique)
        ops.append(WeightedOp(node.name, kind, sum(unique.values()), native))
    return Coverage(
        ops=tuple(ops),
        params_total=sum(sizes.values()),
        params_native=sum(sizes[key] for key in native_tensors),
    )


# --- leftovers -------------------------------------------------------------------------------


def _float_side(program: Program, node: Node, kind: str) -> tuple[list[Node], list[Node]]:
    """(producers, consumers): the nodes on the float side of a leftover."""
    producers: list[Node] = []
    consumers: list[Node] = []
    if kind == DEQUANTIZE:
        consumers = [program.node(user) for user in program.users(node.name)]
        source = program.node(node.args[0].name) if node.args and isinstance(node.args[0], Ref) else None
        round_trip = source is not None and (_is_quantizer(source) or _is_to_float16(source))
        if source is not None and round_trip and source.args and isinstance(source.args[0], Ref):
            producers = [program.node(source.args[0].name)]
    else:
        if node.args and isinstance(node.args[0], Ref):
            producers = [program.node(node.args[0].name)]
        for user in program.users(node.name):
            user_node = program.node(user)
            if leftover_kind(user_node) == DEQUANTIZE:
                consumers += [program.node(name) for name in program.users(user)]
    return producers, consumers


def _boundary_reason(program: Program, neighbour: Node, is_producer: bool) -> str | None:
    """Why a float-side neighbour needs no lowering; None when it is a float op."""
    if neighbour.op == "placeholder":
        return f"quantizes the model input %{neighbour.name}"
    if neighbour.op == "output":
        return "dequantizes a model output"
    if neighbour.op == "get_attr":
        return f"quantizes the constant {neighbour.target!r}"
    native = native_kind(program, neighbour)
    if native is not None:
        side = "float output" if is_producer else "float input"
        return f"%{neighbour.name} runs natively ({native}) with a {side}"
    return None


def _is_relu(program: Program, node: Node) -> bool:
    if node.op == "call_function":
        return any(node.target is relu for relu in RELU_FUNCTIONS)
    if node.op == "call_method":
        return node.target in ("relu", "relu_")
    return node.op == "call_module" and isinstance(program.modules.get(node.target), nn.ReLU)


def _anchors_of(program: Program, op: Node) -> list[str]:
    """Where rules that look at `op` anchor: the op, its users, and the users of a relu after it."""
    names = [op.name]
    for user in program.users(op.name):
        names.append(user)
        user_node = program.node(user)
        if _is_relu(program, user_node):
            names += program.users(user)
    return names


def _lowered_users_index(changes: Iterable[Change]) -> dict[str, list[str]]:
    """Dequantize node -> the ops that changes lowered away from it (the dequantize is
    among a change's bindings; the op is its reference/function/binop/reader role)."""
    index: dict[str, dict[str, None]] = {}
    for change in changes:
        role = next((role for role in _LOWERED_ROLES if role in change.bindings), None)
        lowered = change.bindings[role] if role else change.anchor
        for name in change.bindings.values():
            if name != lowered:
                index.setdefault(name, {})[lowered] = None
    return {name: list(users) for name, users in index.items()}


def _names(nodes: Iterable[str]) -> str:
    return ", ".join(f"%{name}" for name in nodes)


def explain_leftover(
    program: Program,
    node: Node,
    skips_by_node: Mapping[str, Sequence[Skip]],
    lowered_users: Sequence[str] = (),
) -> Leftover:
    """Why one quantize/dequantize node is left. `skips_by_node` groups the log's
    skips by the node they looked at; `lowered_users` are ops that were lowered
    away from this node (a dequantize bound by a change, or with more users in the
    reference model)."""
    kind = leftover_kind(node)
    if kind is None:
        raise ValueError(f"%{node.name} is no quantize_per_tensor, quantize_per_tensor_dynamic or dequantize")
    producers, consumers = _float_side(program, node, kind)
    reasons: dict[str, None] = {}
    boundaries: dict[str, None] = {}
    skips: dict[Skip, None] = {}
    problems = 0

    if kind == DEQUANTIZE:
        still = {consumer.name for consumer in consumers}
        lowered = [user for user in lowered_users if user not in still]
        if lowered and consumers:
            was, reads = "was" if len(lowered) == 1 else "were", "reads" if len(consumers) == 1 else "read"
            reasons[
                f"%{node.name} is shared by several users: {_names(lowered)} {was} lowered to read the "
                f"quantized value, {_names(c.name for c in consumers)} still {reads} it in float"
            ] = None

    for skip in skips_by_node.get(node.name, ()):
        skips[skip] = None
    for neighbour, is_producer in [(p, True) for p in producers] + [(c, False) for c in consumers]:
        boundary_reason = _boundary_reason(program, neighbour, is_producer)
        if boundary_reason is not None:
            boundaries[boundary_reason] = None
            continue
        problems += 1
        near = [skip for name in _anchors_of(program, neighbour) for skip in skips_by_node.get(name, ())]
        for skip in near:
            skips[skip] = None
        if near:
            continue
        if neighbour.name in program.qconfig and program.qconfig[neighbour.name] is None:
            reasons[f"qconfig of {neighbour.name!r} is None"] = None
        else:
            reasons[f"no lowering pattern covers {describe_op(program, neighbour)}"] = None
    if not producers and not consumers:
        problems += 1
        reasons["no float op reads or produces it, yet no rule removed it"] = None

    ordered_skips = tuple(skips)
    boundary = problems == 0 and not ordered_skips
    # a boundary is explained by what is on its float side; otherwise those are noise
    all_reasons = tuple(dict.fromkeys([*map(_skip_reason, ordered_skips), *reasons, *(boundaries if boundary else ())]))
    first = ordered_skips[0] if ordered_skips else None
    pattern = None if first is None else first.pass_name if first.rule == first.pass_name else f"{first.pass_name}/{first.rule}"
    return Leftover(
        node=node.name,
        op=kind,
        description=format_node(node, program),
        pattern=pattern,
        reasons=all_reasons,
        boundary=boundary,
        skips=ordered_skips,
    )


def _skip_reason(skip: Skip) -> str:
    """A skip's reason, with its code when it departs from torch (`[torch-wrong-result] ...`)."""
    return f"[{skip.code}] {skip.reason}" if is_departure(skip.code) else skip.reason


def explain(lowering: Lowering, reference: torch.fx.GraphModule | None = None) -> Explanation:
    """Every quantize/dequantize left in `lowering.program` with the reasons it stayed,
    and (given the reference model) the share of weighted ops and parameters that
    run on native quantized kernels."""
    program = lowering.program
    skips_by_node: dict[str, list[Skip]] = {}
    for skip in lowering.log.skips:
        skips_by_node.setdefault(skip.node, []).append(skip)
    lowered_users = _lowered_users_index(lowering.log.changes)
    start = reference_program(lowering, reference) if reference is not None else None
    leftovers = []
    for node in program.nodes():
        if leftover_kind(node) is None:
            continue
        users = lowered_users.get(node.name, [])
        if start is not None and node.name in start:
            users = list(dict.fromkeys([*users, *start.users(node.name)]))
        leftovers.append(explain_leftover(program, node, skips_by_node, users))
    return Explanation(
        leftovers=tuple(leftovers),
        coverage=coverage(lowering, start) if start is not None else None,
        changes=len(lowering.log.changes),
    )


__all__ = ["Coverage", "Explanation", "Leftover", "WeightedOp", "coverage", "explain", "is_weighted_module", "weighted_ops"]
