"""Nodes, graphs and programs: the immutable IR, and its printer.

A `Program` is a value: a `Graph` of `Node` records plus the tables a GraphModule
carries (modules by path, get_attr constants, the qconfig and scope maps). Node
references inside args/kwargs are `Ref(name)`; lists are `ListArg`, dicts are
`FrozenDict`, so every arg is immutable. Torch modules and tensors are held by
reference and never mutated. Only `fqlower.engine.draft.apply` builds a changed program.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from typing import Any, Protocol

import attrs
import immutables
import torch
import torch.fx
from pyrsistent import PMap

from fqlower.errors import IRError, set_excerpt_printer
from fqlower.ir.values import EMPTY, Build, FrozenDict, ListArg, Original, Ref, ref_names

OPS = frozenset({"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"})

Position = tuple[int, ...]
"""Sort key of a node. A node added after X gets X's key plus a fresh serial, so it
sorts after X and everything added after X before it, and before X's successor."""

@attrs.frozen
class Node:
    """One FX node as a value."""

    name: str
    op: str  # placeholder | get_attr | call_function | call_method | call_module | output
    target: Any  # callable for call_function; str otherwise
    args: tuple[Any, ...] = ()
    kwargs: FrozenDict = EMPTY
    meta: FrozenDict = attrs.field(default=EMPTY, eq=False)  # FX node.meta, by reference
    type: Any = None  # FX's type annotation (placeholders' annotations in forward's signature)

    def refs(self) -> tuple[str, ...]:
        """Names of the nodes this node reads, in argument order, without repeats."""
        return self._refs

    @functools.cached_property
    def _refs(self) -> tuple[str, ...]:  # asked for on every edit that touches the node
        return ref_names(self.args, self.kwargs)

    def arg(self, index: int, keyword: str, default: Any = None) -> Any:
        """Argument by position or keyword, as FX callers pass either."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(keyword, default)

# --- graph and program ---------------------------------------------------------------------


@attrs.frozen
class Graph:
    """Nodes by name, their order, and who uses whom.

    The tables are `immutables.Map`s (a hash array mapped trie in C): lookups and
    batched updates cost a fraction of a pyrsistent PMap's, and every edit and match
    does many. (`Program`'s own tables stay PMaps, which compare equal to dicts.)"""

    nodes: immutables.Map[str, Node]
    positions: immutables.Map[str, Position]
    users: immutables.Map[str, frozenset[str]]  # user names (small sets: C-speed add/discard)
    next_serial: int
    # The order of an earlier graph this one only removed nodes from (or None): filtering
    # it costs a tenth of sorting the positions, and most passes only remove nodes.
    order_hint: tuple[str, ...] | None = attrs.field(default=None, eq=False, repr=False)

    @functools.cached_property
    def order(self) -> tuple[str, ...]:
        """Node names in program order (computed once per graph value)."""
        positions = self.positions
        if self.order_hint is not None:
            return tuple([name for name in self.order_hint if name in positions])
        return tuple(name for name, _ in sorted(positions.items(), key=operator.itemgetter(1)))

    def known_order(self) -> tuple[str, ...] | None:
        """The order if already computed, else the hint (what a graph that only removes
        nodes from this one may take as its hint)."""
        try:
            order: tuple[str, ...] = object.__getattribute__(self, "order")  # the slot, without computing it
            return order
        except AttributeError:
            return self.order_hint


@attrs.frozen
class FxContext:
    """What a GraphModule carries besides nodes and attributes, kept to rebuild it."""

    class_name: str = "GraphModule"
    training: bool = False
    codegen: Any = None  # torch.fx CodeGen (pytree in/out specs), by reference
    tracer_cls: Any = None
    tracer_extras: Any = None
    meta: FrozenDict = EMPTY  # GraphModule.meta, shallow
    # get_attr targets that are non-persistent buffers of their owner in the input: torch
    # >= 2.14's GraphModule(root, graph) keeps them out of the state_dict (see emit.to_fx)
    non_persistent_buffers: frozenset[str] = frozenset()


@attrs.frozen
class Program:
    """A whole model: the graph plus the tables its nodes refer to."""

    graph: Graph
    modules: PMap[str, Any]  # call_module path -> nn.Module | Build
    constants: PMap[str, Any]  # get_attr target -> value | Build
    originals: PMap[str, Any]  # path -> the input model's object there; specs read it via Original
    qconfig: PMap[str, Any]  # node name -> QConfigAny
    scope: PMap[str, Any]  # node name -> (module path, module type)
    context: FxContext = attrs.field(factory=FxContext, eq=False)

    # queries ----------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self.graph.nodes[name]
        except KeyError:
            raise IRError(f"node {name!r} does not exist", node=name) from None

    def __contains__(self, name: object) -> bool:
        return name in self.graph.nodes

    def nodes(self) -> Iterator[Node]:
        """Nodes in program order."""
        nodes = self.graph.nodes
        return (nodes[name] for name in self.graph.order)

    def users(self, name: str) -> tuple[str, ...]:
        """Names of the nodes that read `name`, in program order."""
        users = self.graph.users.get(name, ())
        return tuple(sorted(users, key=self.graph.positions.__getitem__))

    def position(self, name: str) -> Position:
        return self.graph.positions[name]

    def module(self, node: Node) -> Any:
        """The module (or spec) a call_module node calls."""
        return self.modules.get(node.target)

    def __len__(self) -> int:
        return len(self.graph.nodes)

    def __str__(self) -> str:
        return format_program(self)


class ProgramView(Protocol):
    """What matchers, rewriters and hashes read: a `Program`, or the `Draft` a pass
    works on (fqlower.engine.draft), which reads the same way."""

    @property
    def graph(self) -> Graph: ...
    @property
    def modules(self) -> PMap[str, Any]: ...
    @property
    def constants(self) -> PMap[str, Any]: ...
    @property
    def originals(self) -> PMap[str, Any]: ...
    @property
    def qconfig(self) -> PMap[str, Any]: ...
    @property
    def scope(self) -> PMap[str, Any]: ...
    def node(self, name: str) -> Node: ...
    def __contains__(self, name: object) -> bool: ...
    def nodes(self) -> Iterator[Node]: ...
    def users(self, name: str) -> tuple[str, ...]: ...
    def position(self, name: str) -> Position: ...
    def module(self, node: Node) -> Any: ...

# --- printing ------------------------------------------------------------------------------


def format_arg(value: Any) -> str:
    if isinstance(value, Ref):
        return f"%{value.name}"
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        inner = ", ".join(format_arg(item) for item in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, ListArg):
        return "[" + ", ".join(format_arg(item) for item in value.items) + "]"
    if isinstance(value, FrozenDict):
        return "{" + ", ".join(f"{key!r}: {format_arg(item)}" for key, item in value.items()) + "}"
    if isinstance(value, slice):
        return f"slice({format_arg(value.start)}, {format_arg(value.stop)}, {format_arg(value.step)})"
    if isinstance(value, Build):
        return format_build(value)
    if isinstance(value, Original):
        return f"<{value.path}>"
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}:{str(value.dtype).removeprefix('torch.')}"
    if callable(value) and not isinstance(value, type):
        return format_target(value)
    return repr(value)


def format_target(target: Any) -> str:
    if isinstance(target, str):
        return target
    from fqlower.names import qualified_name
    from fqlower.errors import ChangeLogError

    try:
        return qualified_name(target)
    except ChangeLogError:
        return getattr(target, "__name__", repr(target))


def format_build(spec: Build) -> str:
    parts = [format_arg(item) for item in spec.args]
    parts += [f"{key}={format_arg(item)}" for key, item in spec.kwargs.items()]
    return f"{spec.factory}({', '.join(parts)})"


def _call_args(node: Node) -> str:
    parts = [format_arg(item) for item in node.args]
    parts += [f"{key}={format_arg(item)}" for key, item in node.kwargs.items()]
    return ", ".join(parts)


def format_node(node: Node, program: Program | None = None) -> str:
    """One line: `%name = what(args)`, the way a reader thinks of the node."""
    if node.op == "placeholder":
        default = f" = {format_arg(node.args[0])}" if node.args else ""
        return f"%{node.name} = placeholder {node.target}{default}"
    if node.op == "output":
        return f"return {format_arg(node.args[0]) if node.args else 'None'}"
    if node.op == "get_attr":
        return f"%{node.name} = get_attr {node.target}"
    if node.op == "call_method":
        receiver, *rest = node.args or (None,)
        rest_node = attrs.evolve(node, args=tuple(rest))
        return f"%{node.name} = {format_arg(receiver)}.{node.target}({_call_args(rest_node)})"
    line = f"%{node.name} = {format_target(node.target)}({_call_args(node)})"
    if node.op == "call_module" and program is not None:
        module = program.modules.get(node.target)
        kind = format_build(module) if isinstance(module, Build) else type(module).__name__
        line += f"  # {kind}"
    return line


def format_program(program: Program) -> str:
    return "\n".join(format_node(node, program) for node in program.nodes())


def format_program_around(program: Program, name: str, context_lines: int) -> str:
    """The printed program a few lines either side of `name`, with `name` marked."""
    order = program.graph.order
    if name not in program.graph.nodes:
        return ""
    at = order.index(name)
    first, last = max(0, at - context_lines), min(len(order), at + context_lines + 1)
    lines = []
    for index in range(first, last):
        marker = "-->" if index == at else "   "
        lines.append(f"{marker} {format_node(program.graph.nodes[order[index]], program)}")
    return "\n".join(lines)


set_excerpt_printer(format_program_around)  # what an FqlowerError shows around its node
