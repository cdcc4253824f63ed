"""Why each leftover conversion is there, and `explain`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.fx
import torch.nn as nn

from fqlower.api import Lowering
from fqlower.log import Change, Skip
from fqlower.reasons import is_departure
from fqlower.ir import Node, Program, Ref, format_node
from fqlower.patterns import RELU_FUNCTIONS
from fqlower.explain.coverage import coverage, is_weighted_module, reference_program, weighted_ops
from fqlower.explain.kinds import _is_quantizer, _is_to_float16, describe_op, leftover_kind, native_kind
from fqlower.explain.records import Coverage, DEQUANTIZE, Explanation, Leftover, WeightedOp, _LOWERED_ROLES

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
        cautions=lowering.log.cautions,
    )


__all__ = ["Coverage", "Explanation", "Leftover", "WeightedOp", "coverage", "explain", "is_weighted_module", "weighted_ops"]
