"""A pass's working copy of a program, and `apply`: the only code that changes one.

    draft = Draft(program)                       # O(1): shares every table
    draft.apply((AddNode(q_fc, after="fc"), ReplaceUses("q_out", "q_fc"), RemoveNode("q_out")))
    draft.node("q_fc"), draft.users("fc")        # reads see every batch applied so far
    program2 = draft.freeze()                    # the new immutable Program

A `Draft` is Clojure's transient made into one object: `Program`'s read API
(`node`, `users`, `position`, `module`, `nodes`, `graph`, `modules`, `constants`, …)
over tables that `apply` replaces batch by batch. The driver makes one draft per
pass, so a pass builds one program, not one per change; the input program and
every frozen program stay values.

`apply` checks every edit against the draft as it stands after the edits before it
(no dangling reference, no removal of a used node, no duplicate name, no call of a
missing module or read of a missing constant) and, once the whole batch is in,
that every node it touched comes after its inputs and before its users; in between,
a batch may pass through orders that are not topological. A rejected batch raises
`IRError` naming the node, and the draft is as it was before the batch: its tables
are immutable maps, so the state before a batch is kept by reference and put back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable, cast

import torch
from pyrsistent import PMap

from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetMeta, SetModule, SetTarget
from fqlower.errors import IRError
from fqlower.ir import OPS, Build, FrozenDict, Graph, Node, Position, Program, Ref, format_program, map_arg, ref_names

_UNSET: Any = object()


class Draft:
    """A program being rewritten: read like a `Program`, changed with `apply`,
    turned back into a `Program` with `freeze`. Never let it escape the pass."""

    def __init__(self, program: Program):
        graph = program.graph
        self.base = program
        self.node_table: Any = graph.nodes  # immutables.Map; a MapMutation while a batch runs
        self.position_table: Any = graph.positions
        self.user_table: Any = graph.users  # name -> frozenset of user names
        self.modules: PMap[str, Any] = program.modules
        self.constants: PMap[str, Any] = program.constants
        self.originals, self.qconfig, self.scope, self.context = program.originals, program.qconfig, program.scope, program.context
        self.serial = graph.next_serial
        self.reordered = False  # a node was added or moved: the base order is no hint
        # node.refs() of nodes the draft built (a node's first refs() call is costly);
        # None: not known, compute it
        self.refs: dict[str, tuple[str, ...] | None] = {}
        self.changed = False
        self._graph: Graph | None = graph
        self._saved: tuple[Any, ...] | None = None  # the tables before the running batch
        self._batch_refs: dict[str, tuple[str, ...] | None] = {}
        self.touched: dict[str, None] = {}  # nodes whose order is checked when the batch is in
        self.altered: dict[str, None] = {}  # nodes added, given args or a target, or moved

    # --- reads: Program's API ------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        """The graph as it stands (a `Graph` value, built once per batch read)."""
        if self._saved is not None:
            raise IRError("a draft's graph is not readable while a batch of edits is being applied")
        if self._graph is None:
            self._graph = self._graph_of(self.node_table, self.position_table, self.user_table, self.serial, self.reordered)
        return self._graph

    def node(self, name: str) -> Node:
        node: Node | None = self.node_table.get(name)
        if node is None:
            raise IRError(f"node {name!r} does not exist", node=name)
        return node

    def __contains__(self, name: object) -> bool:
        return name in self.node_table

    def nodes(self) -> Iterator[Node]:
        graph = self.graph
        return (graph.nodes[name] for name in graph.order)

    def users(self, name: str) -> tuple[str, ...]:
        """Names of the nodes that read `name`, in program order."""
        return tuple(sorted(self.user_table.get(name, ()), key=self.position_table.__getitem__))

    def position(self, name: str) -> Position:
        position: Position = self.position_table[name]
        return position

    def module(self, node: Node) -> Any:
        return self.modules.get(node.target)

    def __len__(self) -> int:
        return len(self.node_table)

    def __str__(self) -> str:
        return format_program(self.freeze())

    # --- batches --------------------------------------------------------------------------------
    def apply(self, edits: Iterable[Edit], mark: tuple[str, Any] | None = None) -> None:
        """Apply `edits` in order, all of them or, on an IRError, none. With `mark`
        (key, value), every node the batch added, gave args or a target, or moved,
        and did not remove, then gets meta `key` = `value` (what one more SetMeta
        per such node would do, without building and checking those edits)."""
        self._saved = (self.node_table, self.position_table, self.user_table, self.modules, self.constants, self.serial, self.reordered)
        self.node_table, self.position_table, self.user_table = self.node_table.mutate(), self.position_table.mutate(), self.user_table.mutate()
        try:
            for edit in edits:
                handler = _APPLY.get(type(edit))
                if handler is None:
                    raise IRError(f"not an edit: {edit!r}")
                handler(self, edit)
            if mark is not None:
                self._mark_altered(*mark)
            self._check_order()
        except BaseException:
            (self.node_table, self.position_table, self.user_table, self.modules, self.constants, self.serial, self.reordered) = self._saved
            self._end_batch(keep=False)
            raise
        self.node_table, self.position_table, self.user_table = self.node_table.finish(), self.position_table.finish(), self.user_table.finish()
        self._end_batch(keep=True)

    def _end_batch(self, keep: bool) -> None:
        if keep:
            self.refs.update(self._batch_refs)
            self._graph = None
            self.changed = True
        self._saved = None
        self._batch_refs = {}
        self.touched = {}
        self.altered = {}

    def freeze(self) -> Program:
        """The program as it stands; the input program itself when nothing changed."""
        if not self.changed:
            return self.base
        return self._program_of(self.graph, self.modules, self.constants)

    def _committed(self) -> Program:
        """The program before the running batch (for error messages)."""
        if not self.changed:
            return self.base
        nodes, positions, users, modules, constants, serial, reordered = self._saved or (
            self.node_table, self.position_table, self.user_table, self.modules, self.constants, self.serial, self.reordered)
        return self._program_of(self._graph_of(nodes, positions, users, serial, reordered), modules, constants)

    def _graph_of(self, nodes: Any, positions: Any, users: Any, serial: int, reordered: bool) -> Graph:
        """A graph of these tables; one that only removed nodes from the input takes its
        order as a hint (filtering it costs a tenth of sorting the positions)."""
        return Graph(nodes, positions, users, serial, None if reordered else self.base.graph.known_order())

    def _program_of(self, graph: Graph, modules: PMap[str, Any], constants: PMap[str, Any]) -> Program:
        base = self.base
        return Program(graph, modules, constants, base.originals, base.qconfig, base.scope, base.context)

    def fail(self, message: str, node: str | None) -> IRError:
        return IRError(message, node=node, program=self._committed())

    # --- the checks -------------------------------------------------------------------------------
    def refs_of(self, name: str, node: Node) -> tuple[str, ...]:
        """`node.refs()` of the node now called `name`, without caching it on the node (a
        node's first `refs()` call goes through attrs' cached-property hook, and most
        nodes a batch reads are read once)."""
        refs = self._batch_refs.get(name, _UNSET)
        if refs is _UNSET:
            refs = self.refs.get(name)
        return refs if refs is not None else ref_names(node.args, node.kwargs)

    def require_node(self, name: str, role: str) -> Node:
        node: Node | None = self.node_table.get(name)
        if node is None:
            raise self.fail(f"{role} {name!r} does not exist", name)
        return node

    def check_inputs(self, name: str, used: tuple[str, ...]) -> tuple[str, ...]:
        nodes = self.node_table
        for ref in used:
            if ref not in nodes:
                raise self.fail(f"node {name!r} would use {ref!r}, which does not exist (dangling reference)", name)
        self.touched[name] = None
        return used

    def position_after(self, name: str) -> Position:
        self.serial += 1
        return (*self.position_table[name], self.serial - 1)

    def position_before(self, name: str) -> Position:
        # Sorts after everything now before `name` (serials only grow) and before `name`.
        position = self.position_table[name]
        self.serial += 1
        return (*position[:-1], position[-1] - 1, self.serial - 1)

    def _check_order(self) -> None:
        nodes, positions, users = self.node_table, self.position_table, self.user_table
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
        users = self.user_table
        for name in used:
            users[name] = users[name] | {user}

    def unlink(self, user: str, used: Iterable[str]) -> None:
        users = self.user_table
        for name in used:
            users[name] = users[name] - {user}

    # --- one method per edit kind ---------------------------------------------------------------
    def add_node(self, edit: AddNode) -> None:
        node = edit.node
        if node.name in self.node_table:
            raise self.fail(f"cannot add node {node.name!r}: the name is taken", node.name)
        if not node.name.isidentifier():
            raise self.fail(f"cannot add node {node.name!r}: not a valid identifier", node.name)
        if (edit.after is None) == (edit.before is None):
            raise self.fail(f"cannot add node {node.name!r}: give exactly one of after= and before=", node.name)
        if edit.after is not None:
            self.require_node(edit.after, f"node {node.name!r} is to follow node")
        else:
            self.require_node(cast(str, edit.before), f"node {node.name!r} is to precede node")
        if node.op == "output":
            raise self.fail(f"cannot add node {node.name!r}: the program already has an output", node.name)
        self.check_target(node.name, node.op, node.target)
        used = self.check_inputs(node.name, ref_names(node.args, node.kwargs))
        position = self.position_after(edit.after) if edit.after is not None else self.position_before(cast(str, edit.before))
        self.node_table[node.name] = node
        self._batch_refs[node.name] = used
        self.position_table[node.name] = position
        self.reordered = True
        self.user_table[node.name] = frozenset()
        self.link(node.name, used)
        self.altered[node.name] = None

    def move_node(self, edit: MoveNode) -> None:
        node = self.require_node(edit.name, "node to move")
        self.require_node(edit.after, f"node {edit.name!r} is to follow node")
        if node.op in ("placeholder", "output") or edit.name == edit.after:
            raise self.fail(f"cannot move node {edit.name!r}", edit.name)
        self.position_table[edit.name] = self.position_after(edit.after)
        self.reordered = True
        self.touched[edit.name] = None
        self.altered[edit.name] = None

    def remove_node(self, edit: RemoveNode) -> None:
        name = edit.name
        node = self.require_node(name, "node to remove")
        if node.op == "output":
            raise self.fail(f"cannot remove the output node {name!r}", name)
        users = self.user_table[name]
        if users:
            raise self.fail(f"cannot remove node {name!r}: still used by {sorted(users)}", name)
        self.unlink(name, self.refs_of(name, node))
        self._batch_refs[name] = None
        del self.node_table[name]
        del self.position_table[name]
        del self.user_table[name]

    def set_args(self, edit: SetArgs) -> None:
        name = edit.name
        node = self.require_node(name, "node")
        kwargs = edit.kwargs if isinstance(edit.kwargs, FrozenDict) else FrozenDict(edit.kwargs)
        args = tuple(edit.args)  # args given as a list: its items are the node's args, and inputs
        used = self.check_inputs(name, ref_names(args, kwargs))
        self.unlink(name, self.refs_of(name, node))
        self.link(name, used)
        self.node_table[name] = _node(node, node.op, node.target, args, kwargs, node.meta)
        self._batch_refs[name] = used
        self.altered[name] = None

    def set_target(self, edit: SetTarget) -> None:
        node = self.require_node(edit.name, "node")
        if "output" in (node.op, edit.op) and node.op != edit.op:
            raise self.fail(f"node {edit.name!r}: cannot turn {node.op} into {edit.op}", edit.name)
        self.check_target(edit.name, edit.op, edit.target)
        self.node_table[edit.name] = _node(node, edit.op, edit.target, node.args, node.kwargs, node.meta)
        self.altered[edit.name] = None

    def replace_uses(self, edit: ReplaceUses) -> None:
        old, new = edit.old, edit.new
        self.require_node(old, "node whose uses are replaced,")
        self.require_node(new, "replacement node")
        users = self.user_table
        moved = [user for user in users[old] if user != new]
        self.touched.update(dict.fromkeys(moved))
        nodes, refs, replacement = self.node_table, self._batch_refs, Ref(new)

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
        self.node_table[edit.name] = _node(node, node.op, node.target, node.args, node.kwargs, node.meta.set(edit.key, edit.value))

    def set_module(self, edit: SetModule) -> None:
        if not isinstance(edit.module, (torch.nn.Module, Build)):
            raise self.fail(
                f"module path {edit.path!r}: expected a torch.nn.Module or a Build spec, got {type(edit.module).__name__}",
                None,
            )
        _check_path(self, edit.path)
        self.modules = self.modules.set(edit.path, edit.module)

    def set_constant(self, edit: SetConstant) -> None:
        _check_path(self, edit.attr)
        self.constants = self.constants.set(edit.attr, edit.value)

    def _mark_altered(self, key: str, value: Any) -> None:
        nodes = self.node_table
        for name in self.altered:
            node = nodes.get(name)
            if node is not None:
                nodes[name] = _node(node, node.op, node.target, node.args, node.kwargs, node.meta.set(key, value))


def _node(node: Node, op: str, target: Any, args: tuple[Any, ...], kwargs: FrozenDict, meta: FrozenDict) -> Node:
    """`node` with these fields (attrs.evolve, without its per-call field introspection)."""
    return Node(node.name, op, target, args, kwargs, meta, node.type)


def _check_path(draft: Draft, path: str) -> None:
    """A path as torch's modules take it: dot-separated, no part empty. Parts need not be
    identifiers (`add_module` takes `block1-0`, `0conv`, `my conv`, `étage`)."""
    if not isinstance(path, str):
        raise draft.fail(f"invalid attribute path {path!r}: not a string", None)
    if not all(path.split(".")):
        raise draft.fail(f"invalid attribute path {path!r}: a part is empty", None)


_APPLY: dict[type, Callable[[Draft, Any], None]] = {
    AddNode: Draft.add_node,
    MoveNode: Draft.move_node,
    RemoveNode: Draft.remove_node,
    SetArgs: Draft.set_args,
    SetTarget: Draft.set_target,
    ReplaceUses: Draft.replace_uses,
    SetMeta: Draft.set_meta,
    SetModule: Draft.set_module,
    SetConstant: Draft.set_constant,
}


def apply(program: Program, edits: Iterable[Edit]) -> Program:
    """The program after `edits`, in order; all of them or, on an IRError, none."""
    draft = Draft(program)
    draft.apply(edits)
    return draft.freeze()


def apply_marked(program: Program, edits: Iterable[Edit], key: str, value: Any) -> Program:
    """`apply(program, edits)`, then meta `key` set to `value` on every node the edits
    added, gave args or a target, or moved, and did not remove."""
    draft = Draft(program)
    draft.apply(edits, mark=(key, value))
    return draft.freeze()
