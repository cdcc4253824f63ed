"""The two sides of one change, as runnable fragments over the same free inputs.

    before:  %q = quantize(%x, s, z) ─▶ dequantize ─▶ ref.Linear ─▶ quantize(·, s1, z1) ─▶ %user
    after:   %q ──────────────────────────────────▶ quantized Linear(s1, z1) ───────────▶ %user

A change's *site* is every node it names (its bindings, and the nodes its edits add,
remove, re-argument, retarget, move, or whose module or constant they replace). The
*before* fragment is the site in the program before the change, the *after* fragment
the site in the program after it; each brings the get_attr constants it reads and its
modules, specs materialised. Free inputs are the nodes outside the site that either
side reads; outputs are paired through the nodes outside the site that read the site:
the reader's references into the site, position by position, before and after.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.emit.to_fx import fx_arg, materialize
from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetModule, SetTarget
from fqlower.ir import Build, Program
from fqlower.log import Change


@attrs.frozen
class Fragment:
    """A runnable piece of one program: `module(*inputs)` returns `outputs`' values."""

    module: torch.fx.GraphModule
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    names: tuple[str, ...]  # the program nodes it computes, in order (for values of new nodes)


@attrs.frozen
class Sides:
    before: Fragment
    after: Fragment


def site(change: Change, before: Program, after: Program) -> set[str]:
    """Every node the change names, in either program."""
    names = set(change.bindings.values()) | {change.anchor}
    for edit in change.edits:
        names.update(_named(edit, before, after))
    return {name for name in names if name in before or name in after}


def _named(edit: Edit, before: Program, after: Program) -> Iterable[str]:
    if isinstance(edit, AddNode):
        return (edit.node.name,)
    if isinstance(edit, (RemoveNode, SetArgs, SetTarget, MoveNode)):
        return (edit.name,)
    if isinstance(edit, ReplaceUses):
        return (edit.old, edit.new)
    if isinstance(edit, SetModule):
        return _readers(before, after, "call_module", edit.path)
    if isinstance(edit, SetConstant):
        return _readers(before, after, "get_attr", edit.attr)
    return ()


def _readers(before: Program, after: Program, op: str, target: str) -> list[str]:
    return [node.name for program in (before, after) for node in program.nodes() if node.op == op and node.target == target]


def sides(change: Change, before: Program, after: Program) -> Sides:
    """The before and after fragments of `change` (see the module docstring)."""
    names = _closed(site(change, before, after), (before, after))
    outside_readers = sorted(
        {user for program in (before, after) for name in names if name in program for user in program.users(name)} - names
    )
    outputs_before, outputs_after = [], []
    for reader in outside_readers:
        if reader not in before or reader not in after:
            continue
        refs_before = [ref for ref in before.node(reader).refs() if ref in names]
        refs_after = [ref for ref in after.node(reader).refs() if ref in names]
        for old, new in zip(refs_before, refs_after):
            if old not in outputs_before or new not in outputs_after:
                outputs_before.append(old)
                outputs_after.append(new)
    inputs = sorted(_inputs(before, names) | _inputs(after, names))
    return Sides(_fragment(before, names, inputs, outputs_before), _fragment(after, names, inputs, outputs_after))


def _closed(names: set[str], programs: tuple[Program, ...]) -> set[str]:
    """`names` with every node it reads that is computed from `names` alone (constants
    aside): the dequantize between a bound quantize and the op, say. Free inputs are then
    independent values, so drawing each apart gives inputs the site could meet."""
    names = set(names)
    while True:
        more = {
            ref
            for program in programs
            for name in names
            if name in program
            for ref in program.node(name).refs()
            if ref not in names
            and program.node(ref).op not in ("placeholder", "get_attr")
            and program.node(ref).refs()
            and all(inner in names or program.node(inner).op == "get_attr" for inner in program.node(ref).refs())
        }
        if not more:
            return names
        names |= more


def _inputs(program: Program, names: set[str]) -> set[str]:
    """Nodes outside `names` that the site reads, get_attr constants excepted (they are
    taken into the fragment)."""
    found = set()
    for name in names:
        if name not in program:
            continue
        for ref in program.node(name).refs():
            if ref not in names and program.node(ref).op != "get_attr":
                found.add(ref)
    return found


def _fragment(program: Program, names: set[str], inputs: list[str], outputs: list[str]) -> Fragment:
    graph = torch.fx.Graph()
    root = torch.nn.Module()
    env: dict[str, torch.fx.Node] = {name: graph.placeholder(f"in_{index}") for index, name in enumerate(inputs)}
    built: dict[Build, Any] = {}
    computed = []
    wanted = {name for name in names if name in program} | set(_constants_read(program, names))
    ordered = sorted(wanted, key=program.position)
    for index, name in enumerate(ordered):
        if name in env:
            continue
        node = program.node(name)
        if node.op == "get_attr":
            attr = f"constant_{index}"
            value = materialize(program, program.constants[node.target], built)
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                root.register_buffer(attr, value)
            else:
                setattr(root, attr, value)
            env[name] = graph.get_attr(attr)
        elif node.op == "call_module":
            path = f"module_{index}"
            root.add_module(path, materialize(program, program.modules[node.target], built))
            env[name] = graph.call_module(path, fx_arg(node.args, env), fx_arg(node.kwargs, env))
        elif node.op in ("call_function", "call_method"):
            env[name] = graph.create_node(node.op, node.target, fx_arg(node.args, env), fx_arg(node.kwargs, env))
        else:  # placeholder or output: never part of a site's computation
            continue
        computed.append(name)
    graph.output(tuple(env[name] for name in outputs))
    return Fragment(torch.fx.GraphModule(root, graph), tuple(inputs), tuple(outputs), tuple(computed))


def _constants_read(program: Program, names: set[str]) -> list[str]:
    return [ref for name in names if name in program for ref in program.node(name).refs() if program.node(ref).op == "get_attr"]
