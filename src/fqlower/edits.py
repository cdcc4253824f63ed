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
from fqlower.ir import OPS, Build, FrozenDict, Graph, Node, Program, Ref, map_arg, ref_names


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
        # the PMaps themselves until a SetModule/SetConstant: most batches change neither,
        # and an evolver costs more than the lookups `check_target` makes on the map
        self.modules = program.modules
        self.constants = program.constants
        self.serial = graph.next_serial
        self.touched: dict[str, None] = {}  # nodes whose order is checked when the batch is in
        self.reordered = False  # a node was added or moved: positions are no longer a subset
        self.altered: dict[str, None] = {}  # nodes added, given args or a target, or moved
        # node.refs() of the nodes this draft built (a node's first refs() call is costly)
        self.refs: dict[str, tuple[str, ...]] = {}

    def fail(self, message: str, node: str | None) -> IRError:
        return IRError(message, node=node, program=self.program)

    def refs_of(self, name: str, node: Node) -> tuple[str, ...]:
        """`node.refs()` of the node now called `name`, without caching it on the node (a
        node's first `refs()` call goes through attrs' cached-property hook, and most
        nodes a batch reads are read once)."""
        refs = self.refs.get(name)
        return refs if refs is not None else ref_names(node.args, node.kwargs)

    def require_node(self, name: str, role: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            raise self.fail(f"{role} {name!r} does not exist", name)
        return node

    def check_inputs(self, name: str, used: tuple[str, ...]) -> tuple[str, ...]:
        nodes = self.nodes
        for ref in used:
            if ref not in nodes:
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
        nodes, positions, users = self.nodes, self.positions, self.users
        for name in self.touched:
            node = nodes.get(name)
            if node is None:
                continue
            position = positions[name]
            for used in self.refs_of(name, node):
                if not positions[used] < position:
                    raise self.fail(f"node {name!r} would use {used!r}, which comes after it", name)
            for user in users[name]:
                if not position < positions[user]:
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
        users = self.users
        for name in used:
            users[name] = users[name] | {user}

    def unlink(self, user: str, used: Iterable[str]) -> None:
        users = self.users
        for name in used:
            users[name] = users[name] - {user}

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
        used = self.check_inputs(node.name, ref_names(node.args, node.kwargs))
        position = self.position_after(edit.after) if edit.after is not None else self.position_before(edit.before)
        self.nodes[node.name] = node
        self.refs[node.name] = used
        self.positions[node.name] = position
        self.reordered = True
        self.users[node.name] = frozenset()
        self.link(node.name, used)
        self.altered[node.name] = None

    def move_node(self, edit: MoveNode) -> None:
        node = self.require_node(edit.name, "node to move")
        self.require_node(edit.after, f"node {edit.name!r} is to follow node")
        if node.op in ("placeholder", "output") or edit.name == edit.after:
            raise self.fail(f"cannot move node {edit.name!r}", edit.name)
        self.positions[edit.name] = self.position_after(edit.after)
        self.reordered = True
        self.touched[edit.name] = None
        self.altered[edit.name] = None

    def remove_node(self, edit: RemoveNode) -> None:
        name = edit.name
        node = self.require_node(name, "node to remove")
        if node.op == "output":
            raise self.fail(f"cannot remove the output node {name!r}", name)
        users = self.users[name]
        if users:
            raise self.fail(f"cannot remove node {name!r}: still used by {sorted(users)}", name)
        self.unlink(name, self.refs_of(name, node))
        self.refs.pop(name, None)
        del self.nodes[name]
        del self.positions[name]
        del self.users[name]

    def set_args(self, edit: SetArgs) -> None:
        name = edit.name
        node = self.require_node(name, "node")
        kwargs = edit.kwargs if isinstance(edit.kwargs, FrozenDict) else FrozenDict(edit.kwargs)
        used = self.check_inputs(name, ref_names(edit.args, kwargs))
        self.unlink(name, self.refs_of(name, node))
        self.link(name, used)
        new = self.nodes[name] = _node(node, node.op, node.target, tuple(edit.args), kwargs, node.meta)
        # (a list's items are no inputs to check_inputs, as ever, but are the node's refs)
        self.refs[name] = used if isinstance(edit.args, tuple) else ref_names(new.args, new.kwargs)
        self.altered[name] = None

    def set_target(self, edit: SetTarget) -> None:
        node = self.require_node(edit.name, "node")
        if "output" in (node.op, edit.op) and node.op != edit.op:
            raise self.fail(f"node {edit.name!r}: cannot turn {node.op} into {edit.op}", edit.name)
        self.check_target(edit.name, edit.op, edit.target)
        self.nodes[edit.name] = _node(node, edit.op, edit.target, node.args, node.kwargs, node.meta)
        self.altered[edit.name] = None

    def replace_uses(self, edit: ReplaceUses) -> None:
        old, new = edit.old, edit.new
        self.require_node(old, "node whose uses are replaced,")
        self.require_node(new, "replacement node")
        users = self.users
        moved = [user for user in users[old] if user != new]
        self.touched.update(dict.fromkeys(moved))
        nodes, refs, replacement = self.nodes, self.refs, Ref(new)

        def swap(ref: Ref) -> Ref:
            return replacement if ref.name == old else ref

        for user in moved:
            node = nodes[user]
            kwargs = map_arg(node.kwargs, swap) if node.kwargs else node.kwargs
            nodes[user] = _node(node, node.op, node.target, map_arg(node.args, swap), kwargs, node.meta)
            refs[user] = tuple(dict.fromkeys([new if used == old else used for used in self.refs_of(user, node)]))
        users[old] = users[old].difference(moved)
        users[new] = users[new].union(moved)

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
        if self.modules is self.program.modules:
            self.modules = self.modules.evolver()
        self.modules[edit.path] = edit.module

    def set_constant(self, edit: SetConstant) -> None:
        _check_path(self, edit.attr)
        if self.constants is self.program.constants:
            self.constants = self.constants.evolver()
        self.constants[edit.attr] = edit.value

    def mark_altered(self, key: str, value: Any) -> None:
        """Set meta `key` to `value` on every node the batch added or altered and kept."""
        nodes = self.nodes
        for name in self.altered:
            node = nodes.get(name)
            if node is not None:
                nodes[name] = _node(node, node.op, node.target, node.args, node.kwargs, node.meta.set(key, value))

    def finish(self) -> Program:
        self.check_order()
        hint = None if self.reordered else self.program.graph.known_order()
        graph = Graph(self.nodes.finish(), self.positions.finish(), self.users.finish(), self.serial, hint)
        program = self.program  # Program(...) directly: attrs.evolve introspects on every call
        modules = program.modules if self.modules is program.modules else self.modules.persistent()
        constants = program.constants if self.constants is program.constants else self.constants.persistent()
        return Program(graph, modules, constants, program.originals, program.qconfig, program.scope, program.context)


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


def _edited(program: Program, edits: Iterable[Edit]) -> _Draft:
    draft = _Draft(program)
    for edit in edits:
        handler = _APPLY.get(type(edit))
        if handler is None:
            raise IRError(f"not an edit: {edit!r}")
        handler(draft, edit)
    return draft


def apply(program: Program, edits: Iterable[Edit]) -> Program:
    """The program after `edits`, in order; all of them or, on an IRError, none."""
    return _edited(program, edits).finish()


def apply_marked(program: Program, edits: Iterable[Edit], key: str, value: Any) -> Program:
    """`apply(program, edits)`, then meta `key` set to `value` on every node the edits
    added, gave args or a target, or moved, and did not remove: what one more SetMeta
    edit per such node would do, without building and checking those edits (the
    pipeline marks every change's nodes with its provenance this way)."""
    draft = _edited(program, edits)
    draft.mark_altered(key, value)  # before finish: check_order then caches the final nodes' refs
    return draft.finish()
