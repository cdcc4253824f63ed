"""The closed set of edits and `apply`: the only code that changes a program.

    program2 = apply(program, (AddNode(q_fc, after="fc"), ReplaceUses("q_out", "q_fc"), RemoveNode("q_out")))

`apply` checks every edit against the program as it stands after the edits before
it (no dangling reference, no removal of a used node, no duplicate name, no call of
a missing module or read of a missing constant) and, once the whole batch is in,
that every node it touched comes after its inputs and before its users; in between,
a batch may pass through orders that are not topological. A rejected batch raises
`IRError` naming the node; since programs are values, the program given is untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import attrs
import torch

from fqlower.errors import IRError
from fqlower.ir import OPS, Build, FrozenDict, Graph, Node, Program, Ref, map_arg, refs_in


@attrs.frozen
class AddNode:
    """Insert `node` right before the node named `before`, or after the node named
    `after` (and after anything added after it before). Give exactly one of them."""

    node: Node
    after: str | None = None
    before: str | None = None


@attrs.frozen
class MoveNode:
    """Move a node to just after the node named `after` (and what was added after it)."""

    name: str
    after: str


@attrs.frozen
class RemoveNode:
    """Delete a node nobody uses."""

    name: str


@attrs.frozen
class SetArgs:
    """Replace a node's args and kwargs."""

    name: str
    args: tuple[Any, ...]
    kwargs: FrozenDict = FrozenDict()


@attrs.frozen
class SetTarget:
    """Change what a node calls: its op and target."""

    name: str
    op: str
    target: Any


@attrs.frozen
class ReplaceUses:
    """Make every user of `old` read `new` instead (`new` itself excepted)."""

    old: str
    new: str


@attrs.frozen
class SetMeta:
    """Set one entry of a node's meta (not part of fingerprints)."""

    name: str
    key: str
    value: Any


@attrs.frozen
class SetModule:
    """Put a module, or a `Build` spec the emitter materialises, at `path`."""

    path: str
    module: Any


@attrs.frozen
class SetConstant:
    """Put a value (tensor, scalar, packed weight or `Build` spec) at get_attr target `attr`."""

    attr: str
    value: Any


Edit = Union[AddNode, MoveNode, RemoveNode, SetArgs, SetTarget, ReplaceUses, SetMeta, SetModule, SetConstant]
EDIT_TYPES: tuple[type, ...] = (AddNode, MoveNode, RemoveNode, SetArgs, SetTarget, ReplaceUses, SetMeta, SetModule, SetConstant)


class _Draft:
    """Mutations of one program's tables while a batch of edits is checked and applied."""

    def __init__(self, program: Program):
        self.program = program
        graph = program.graph
        self.nodes = graph.nodes.mutate()
        self.positions = graph.positions.mutate()
        self.users = graph.users.mutate()
        self.modules = program.modules.evolver()
        self.constants = program.constants.evolver()
        self.serial = graph.next_serial
        self.touched: dict[str, None] = {}  # nodes whose order is checked when the batch is in

    def fail(self, message: str, node: str | None) -> IRError:
        return IRError(message, node=node, program=self.program)

    def require_node(self, name: str, role: str) -> Node:
        if name not in self.nodes:
            raise self.fail(f"{role} {name!r} does not exist", name)
        return self.nodes[name]

    def check_inputs(self, name: str, args: Any, kwargs: Any) -> tuple[str, ...]:
        used = tuple(dict.fromkeys(ref.name for ref in refs_in((args, kwargs))))
        for ref in used:
            if ref not in self.nodes:
                raise self.fail(f"node {name!r} would use {ref!r}, which does not exist (dangling reference)", name)
        self.touched[name] = None
        return used

    def position_after(self, name: str) -> tuple[int, ...]:
        self.serial += 1
        return (*self.positions[name], self.serial - 1)

    def position_before(self, name: str) -> tuple[int, ...]:
        # Sorts after everything now before `name` (serials only grow) and before `name`.
        position = self.positions[name]
        self.serial += 1
        return (*position[:-1], position[-1] - 1, self.serial - 1)

    def check_order(self) -> None:
        for name in self.touched:
            if name not in self.nodes:
                continue
            position = self.positions[name]
            for used in self.nodes[name].refs():
                if not self.positions[used] < position:
                    raise self.fail(f"node {name!r} would use {used!r}, which comes after it", name)
            for user in self.users[name]:
                if not position < self.positions[user]:
                    raise self.fail(f"node {user!r} would use {name!r}, which comes after it", user)

    def check_target(self, name: str, op: str, target: Any) -> None:
        if op not in OPS:
            raise self.fail(f"node {name!r}: unknown op {op!r}", name)
        if op == "call_module" and target not in self.modules:
            raise self.fail(f"node {name!r} would call module {target!r}, which does not exist", name)
        if op == "get_attr" and target not in self.constants:
            raise self.fail(f"node {name!r} would read constant {target!r}, which does not exist", name)
        if op == "call_function" and not callable(target):
            raise self.fail(f"node {name!r}: call_function target {target!r} is not callable", name)
        if op in ("call_method", "call_module", "get_attr") and not isinstance(target, str):
            raise self.fail(f"node {name!r}: {op} target must be a string, got {target!r}", name)

    def link(self, user: str, used: Iterable[str]) -> None:
        for name in used:
            self.users[name] = self.users[name] | {user}

    def unlink(self, user: str, used: Iterable[str]) -> None:
        for name in used:
            self.users[name] = self.users[name] - {user}

    # one method per edit kind -------------------------------------------------------------
    def add_node(self, edit: AddNode) -> None:
        node = edit.node
        if node.name in self.nodes:
            raise self.fail(f"cannot add node {node.name!r}: the name is taken", node.name)
        if not node.name.isidentifier():
            raise self.fail(f"cannot add node {node.name!r}: not a valid identifier", node.name)
        if (edit.after is None) == (edit.before is None):
            raise self.fail(f"cannot add node {node.name!r}: give exactly one of after= and before=", node.name)
        if edit.after is not None:
            self.require_node(edit.after, f"node {node.name!r} is to follow node")
        else:
            self.require_node(edit.before, f"node {node.name!r} is to precede node")
        if node.op == "output":
            raise self.fail(f"cannot add node {node.name!r}: the program already has an output", node.name)
        self.check_target(node.name, node.op, node.target)
        used = self.check_inputs(node.name, node.args, node.kwargs)
        position = self.position_after(edit.after) if edit.after is not None else self.position_before(edit.before)
        self.nodes[node.name] = node
        self.positions[node.name] = position
        self.users[node.name] = frozenset()
        self.link(node.name, used)

    def move_node(self, edit: MoveNode) -> None:
        node = self.require_node(edit.name, "node to move")
        self.require_node(edit.after, f"node {edit.name!r} is to follow node")
        if node.op in ("placeholder", "output") or edit.name == edit.after:
            raise self.fail(f"cannot move node {edit.name!r}", edit.name)
        self.positions[edit.name] = self.position_after(edit.after)
        self.touched[edit.name] = None

    def remove_node(self, edit: RemoveNode) -> None:
        node = self.require_node(edit.name, "node to remove")
        if node.op == "output":
            raise self.fail(f"cannot remove the output node {edit.name!r}", edit.name)
        users = self.users[edit.name]
        if users:
            raise self.fail(f"cannot remove node {edit.name!r}: still used by {sorted(users)}", edit.name)
        self.unlink(edit.name, node.refs())
        del self.nodes[edit.name]
        del self.positions[edit.name]
        del self.users[edit.name]

    def set_args(self, edit: SetArgs) -> None:
        node = self.require_node(edit.name, "node")
        kwargs = edit.kwargs if isinstance(edit.kwargs, FrozenDict) else FrozenDict(edit.kwargs)
        used = self.check_inputs(edit.name, edit.args, kwargs)
        self.unlink(edit.name, node.refs())
        self.link(edit.name, used)
        self.nodes[edit.name] = _node(node, node.op, node.target, tuple(edit.args), kwargs, node.meta)

    def set_target(self, edit: SetTarget) -> None:
        node = self.require_node(edit.name, "node")
        if "output" in (node.op, edit.op) and node.op != edit.op:
            raise self.fail(f"node {edit.name!r}: cannot turn {node.op} into {edit.op}", edit.name)
        self.check_target(edit.name, edit.op, edit.target)
        self.nodes[edit.name] = _node(node, edit.op, edit.target, node.args, node.kwargs, node.meta)

    def replace_uses(self, edit: ReplaceUses) -> None:
        self.require_node(edit.old, "node whose uses are replaced,")
        self.require_node(edit.new, "replacement node")
        moved = [user for user in self.users[edit.old] if user != edit.new]
        self.touched.update(dict.fromkeys(moved))

        def swap(ref: Ref) -> Ref:
            return Ref(edit.new) if ref.name == edit.old else ref

        for user in moved:
            node = self.nodes[user]
            self.nodes[user] = _node(node, node.op, node.target, map_arg(node.args, swap), map_arg(node.kwargs, swap), node.meta)
        self.users[edit.old] = self.users[edit.old].difference(moved)
        self.users[edit.new] = self.users[edit.new].union(moved)

    def set_meta(self, edit: SetMeta) -> None:
        node = self.require_node(edit.name, "node")
        self.nodes[edit.name] = _node(node, node.op, node.target, node.args, node.kwargs, node.meta.set(edit.key, edit.value))

    def set_module(self, edit: SetModule) -> None:
        if not isinstance(edit.module, (torch.nn.Module, Build)):
            raise self.fail(
                f"module path {edit.path!r}: expected a torch.nn.Module or a Build spec, got {type(edit.module).__name__}",
                None,
            )
        _check_path(self, edit.path)
        self.modules[edit.path] = edit.module

    def set_constant(self, edit: SetConstant) -> None:
        _check_path(self, edit.attr)
        self.constants[edit.attr] = edit.value

    def finish(self) -> Program:
        self.check_order()
        graph = Graph(
            nodes=self.nodes.finish(),
            positions=self.positions.finish(),
            users=self.users.finish(),
            next_serial=self.serial,
        )
        program = self.program  # Program(...) directly: attrs.evolve introspects on every call
        return Program(
            graph, self.modules.persistent(), self.constants.persistent(), program.originals, program.qconfig, program.scope, program.context
        )


def _node(node: Node, op: str, target: Any, args: tuple[Any, ...], kwargs: FrozenDict, meta: FrozenDict) -> Node:
    """`node` with these fields (attrs.evolve, without its per-call field introspection)."""
    return Node(node.name, op, target, args, kwargs, meta, node.type)


def _check_path(draft: _Draft, path: str) -> None:
    if not isinstance(path, str) or not path or not all(part.isidentifier() or part.isdigit() for part in path.split(".")):
        raise draft.fail(f"invalid attribute path {path!r}", None)


_APPLY = {
    AddNode: _Draft.add_node,
    MoveNode: _Draft.move_node,
    RemoveNode: _Draft.remove_node,
    SetArgs: _Draft.set_args,
    SetTarget: _Draft.set_target,
    ReplaceUses: _Draft.replace_uses,
    SetMeta: _Draft.set_meta,
    SetModule: _Draft.set_module,
    SetConstant: _Draft.set_constant,
}


def apply(program: Program, edits: Iterable[Edit]) -> Program:
    """The program after `edits`, in order; all of them or, on an IRError, none."""
    draft = _Draft(program)
    for edit in edits:
        handler = _APPLY.get(type(edit))
        if handler is None:
            raise IRError(f"not an edit: {edit!r}")
        handler(draft, edit)
    return draft.finish()
