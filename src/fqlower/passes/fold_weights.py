"""Weight folding: prepack calls on constants become packed-weight attributes.

    %w = get_attr fc_weight ─▶ quantize_per_channel(·, get_attr scales, get_attr zps, 0, qint8) ─┐
    %b = get_attr fc_bias ─────────────────────────────────────────────────────────────────────────┴─▶ linear_prepack ─▶ quantized.linear
        becomes
    %fc_packed_weight_0 = get_attr fc_packed_weight_0 ─▶ quantized.linear

The attribute holds a spec of the whole computation (`linear_prepack(quantize_per_channel(<fc_weight>, ...), <fc_bias>)`),
which the emitter evaluates once. It is named as torch names it,
`<module path>_packed_weight_<i>` with the path from the node-name-to-scope map of
the op that reads it, so state_dict keys equal torch's. Without a scope entry
(torch: KeyError) the op's node name stands in for the path, and the change's rule
says so. Producers also read elsewhere stay.
"""

from __future__ import annotations

from typing import Any

from fqlower.engine.edits import AddNode, Edit, RemoveNode, ReplaceUses, SetConstant
from fqlower.ir import Build, Node, ProgramView, Ref, map_arg
from fqlower.names import qualified_name
from fqlower.passes.common import bindings, fresh_name, produced_from_constants, source_of_constant
from fqlower.patterns import WEIGHT_PREPACK_OPS
from fqlower.engine.pipeline import Match, Miss, Rule, RulePass

SCOPED, UNSCOPED = "fold-packed-weight", "fold-packed-weight-unscoped"


def expression(program: ProgramView, name: str) -> Any:
    """The spec that computes node `name` from constants."""
    node = program.node(name)
    if node.op == "get_attr":
        return source_of_constant(program, node.target)

    def operand(ref: Ref) -> Any:
        return expression(program, ref.name)

    args, kwargs = map_arg(node.args, operand), map_arg(node.kwargs, operand)
    if node.op == "call_method":
        return Build("fqlower.emit.call_method", (node.target, *args), kwargs)
    return Build(qualified_name(node.target), args, kwargs)


def producers(program: ProgramView, name: str) -> list[str]:
    """Every node `name` is computed from, in program order."""
    found, frontier = set(), [name]
    while frontier:
        for used in program.node(frontier.pop()).refs():
            if used not in found:
                found.add(used)
                frontier.append(used)
    return sorted(found, key=program.position)


def attribute_name(program: ProgramView, path: str) -> str:
    prefix = f"{path}_packed_weight_".replace(".", "_")
    index = 0
    while f"{prefix}{index}" in program.constants or f"{prefix}{index}" in program.modules:
        index += 1
    return f"{prefix}{index}"


def is_prepack(node: Node) -> bool:
    return node.op == "call_function" and any(node.target is op for op in WEIGHT_PREPACK_OPS)


def match_scoped(program: ProgramView, node: Node) -> Match | Miss | None:
    if not is_prepack(node):
        return None
    if not produced_from_constants(program, node.name):
        return Miss(f"{node.name!r} packs a weight computed from the model's inputs; it stays a call at run time")
    users = program.users(node.name)
    if not users:
        return None  # dead: elimination removes it
    if users[0] not in program.scope:
        return None
    return Match(node.name, bindings(prepack=node.name, reader=users[0]))


def match_unscoped(program: ProgramView, node: Node) -> Match | None:
    if not is_prepack(node) or not produced_from_constants(program, node.name):
        return None
    users = program.users(node.name)
    return Match(node.name, bindings(prepack=node.name, reader=users[0])) if users else None


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    prepack, reader = found.bindings["prepack"], found.bindings["reader"]
    path = program.scope[reader][0] if reader in program.scope else reader
    attr = attribute_name(program, path)
    node_name = fresh_name(program, attr)
    edits: list[Edit] = [
        SetConstant(attr, expression(program, prepack)),
        AddNode(Node(node_name, "get_attr", attr), after=prepack),
        ReplaceUses(prepack, node_name),
        RemoveNode(prepack),
    ]
    going_away = {prepack}
    for name in reversed(producers(program, prepack)):
        if all(user in going_away for user in program.users(name)):
            going_away.add(name)
            edits.append(RemoveNode(name))
    return edits


FOLD_WEIGHTS = RulePass("fold-weights", (Rule(SCOPED, match_scoped, rewrite, is_prepack), Rule(UNSCOPED, match_unscoped, rewrite, is_prepack)))
