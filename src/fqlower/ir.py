"""The immutable program representation and its import from torch.fx.

A `Program` is a value: a `Graph` of `Node` records plus the tables a GraphModule
carries (modules by path, get_attr constants, the qconfig and scope maps). Node
references inside args/kwargs are `Ref(name)`; lists are `ListArg`, dicts are
`FrozenDict`, so every arg is immutable. Torch modules and tensors are held by
reference and never mutated.

Only `fqlower.draft.apply` builds a changed program; this module builds the first
one (`from_fx`) and answers queries.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import operator
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, Protocol

import attrs
import immutables
import torch
import torch.fx
from pyrsistent import PMap, pmap

from fqlower.errors import IRError, UnsupportedInput, set_excerpt_printer

OPS = frozenset({"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"})

Position = tuple[int, ...]
"""Sort key of a node. A node added after X gets X's key plus a fresh serial, so it
sorts after X and everything added after X before it, and before X's successor."""


class FrozenDict(Mapping[str, Any]):
    """An immutable, insertion-ordered dict (kwargs and dict args).

    Order is kept so that emitted code lists keyword arguments as the input did;
    PMap's order would depend on the process's string hash seed.
    """

    __slots__ = ("_items", "_dict")

    def __init__(self, items: Iterable[tuple[Any, Any]] | Mapping[Any, Any] = ()):
        # type(...) is dict first: isinstance against the Mapping ABC is slow, and
        # every imported node makes two of these
        pairs = tuple(items.items() if type(items) is dict or isinstance(items, Mapping) else items)
        self._items = pairs
        self._dict = dict(pairs)

    def __getitem__(self, key: Any) -> Any:
        return self._dict[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    # the dict's own methods: Mapping's mixins go through __getitem__ and __iter__ in Python
    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def get(self, key: Any, default: Any = None) -> Any:
        return self._dict.get(key, default)

    def keys(self) -> KeysView[Any]:
        return self._dict.keys()

    def values(self) -> ValuesView[Any]:
        return self._dict.values()

    def items(self) -> ItemsView[Any, Any]:
        return self._dict.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._dict == other._dict
        if isinstance(other, Mapping):
            return self._dict == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._dict.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({self._dict!r})"

    def set(self, key: Any, value: Any) -> FrozenDict:
        """A copy with `key` set (appended if new, replaced in place if present)."""
        items = dict(self._dict)  # from a dict: __init__'s fast path
        items[key] = value
        return FrozenDict(items)

    def remove(self, key: Any) -> FrozenDict:
        return FrozenDict((k, v) for k, v in self._items if k != key)


EMPTY = FrozenDict()


def _import_meta(meta: Any) -> FrozenDict:
    """FrozenDict(meta), one per imported node: most nodes have no meta and share the
    empty one, and a plain dict skips __init__'s type checks."""
    if type(meta) is not dict:
        return FrozenDict(meta)
    if not meta:
        return EMPTY
    frozen = object.__new__(FrozenDict)
    frozen._dict = own = dict(meta)
    frozen._items = tuple(own.items())
    return frozen


@attrs.frozen
class Ref:
    """A reference to the node called `name`."""

    name: str

    def __repr__(self) -> str:
        return f"%{self.name}"


@attrs.frozen
class ListArg:
    """A list argument (`torch.cat([a, b])`), kept distinct from a tuple."""

    items: tuple[Any, ...]


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


# --- specs: objects the emitter builds, described as data ---------------------------------


@attrs.frozen
class Original:
    """The module or attribute at `path` in the input model (never edited)."""

    path: str


@attrs.frozen
class Build:
    """An object the emitter builds by calling `factory(*args, **kwargs)`.

    `factory` is a qualified name (see `fqlower.names`); args may hold `Original`
    and nested `Build` values. Used for quantized modules and packed weights.
    """

    factory: str
    args: tuple[Any, ...] = ()
    kwargs: FrozenDict = EMPTY


# --- graph and program ---------------------------------------------------------------------


@attrs.frozen
class Graph:
    """Nodes by name, their order, and who uses whom.

    The tables are `immutables.Map`s (a hash array mapped trie in C): lookups and
    batched updates cost a fraction of a pyrsistent PMap's, and every edit and match
    does many. (`Program`'s own tables stay PMaps, which compare equal to dicts.)"""

    nodes: immutables.Map  # name -> Node
    positions: immutables.Map  # name -> Position
    users: immutables.Map  # name -> frozenset of user names (small sets: C-speed add/discard)
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
            return object.__getattribute__(self, "order")  # the slot, without computing it
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


@attrs.frozen
class Program:
    """A whole model: the graph plus the tables its nodes refer to."""

    graph: Graph
    modules: PMap  # call_module path -> nn.Module | Build
    constants: PMap  # get_attr target -> value | Build
    originals: PMap  # path -> the input model's object there; specs read it via Original
    qconfig: PMap  # node name -> QConfigAny
    scope: PMap  # node name -> (module path, module type)
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
    works on (fqlower.draft), which reads the same way."""

    @property
    def graph(self) -> Graph: ...
    @property
    def modules(self) -> PMap: ...
    @property
    def constants(self) -> PMap: ...
    @property
    def originals(self) -> PMap: ...
    @property
    def qconfig(self) -> PMap: ...
    @property
    def scope(self) -> PMap: ...
    def node(self, name: str) -> Node: ...
    def __contains__(self, name: object) -> bool: ...
    def nodes(self) -> Iterator[Node]: ...
    def users(self, name: str) -> tuple[str, ...]: ...
    def position(self, name: str) -> Position: ...
    def module(self, node: Node) -> Any: ...


# --- args ----------------------------------------------------------------------------------


_CONTAINERS = (tuple, ListArg, FrozenDict, slice)


def map_arg(value: Any, fn: Callable[[Ref], Any]) -> Any:
    """Rebuild `value` with every Ref replaced by fn(ref)."""
    if type(value) is tuple:  # most args: one pass, recursing only into containers
        return tuple([fn(item) if isinstance(item, Ref) else map_arg(item, fn) if isinstance(item, _CONTAINERS) else item for item in value])
    if isinstance(value, Ref):
        return fn(value)
    if isinstance(value, tuple):
        mapped = [map_arg(item, fn) for item in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else tuple(mapped)
    if isinstance(value, ListArg):
        return ListArg(tuple(map_arg(item, fn) for item in value.items))
    if isinstance(value, FrozenDict):
        return FrozenDict((key, map_arg(item, fn)) for key, item in value.items())
    if isinstance(value, slice):
        return slice(map_arg(value.start, fn), map_arg(value.stop, fn), map_arg(value.step, fn))
    return value


def ref_names(args: Any, kwargs: Any = EMPTY) -> tuple[str, ...]:
    """Names of the nodes `args` and `kwargs` refer to, in order, without repeats
    (`Node.refs`, computed afresh: for nodes a batch of edits builds or reads once)."""
    found: dict[str, None] = {}
    _collect_refs(args, found)
    if kwargs:
        _collect_refs(kwargs, found)
    return tuple(found)


def _collect_refs(value: Any, found: dict[str, None]) -> None:
    """Names of the Refs inside `value` into `found`, in order (refs_in without generators)."""
    if isinstance(value, Ref):
        found[value.name] = None
    elif isinstance(value, tuple):
        for item in value:
            if isinstance(item, Ref):
                found[item.name] = None
            elif isinstance(item, (tuple, ListArg, FrozenDict, slice)):
                _collect_refs(item, found)
    elif isinstance(value, ListArg):
        _collect_refs(value.items, found)
    elif isinstance(value, FrozenDict):
        _collect_refs(tuple(value._dict.values()), found)
    elif isinstance(value, slice):
        _collect_refs((value.start, value.stop, value.step), found)


def refs_in(value: Any) -> Iterator[Ref]:
    """Every Ref inside `value`, in order."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from refs_in(item)
    elif isinstance(value, ListArg):
        for item in value.items:
            yield from refs_in(item)
    elif isinstance(value, FrozenDict):
        for item in value.values():
            yield from refs_in(item)
    elif isinstance(value, slice):
        yield from refs_in((value.start, value.stop, value.step))


def _slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...] | None:
    """The slot setters of an attrs class's fields, in order, if its __init__ does nothing
    but set them (no validators, converters or post-init); else None."""
    fields = attrs.fields(cls)
    if hasattr(cls, "__attrs_post_init__") or any(field.validator or field.converter for field in fields):
        return None
    return tuple(cls.__dict__[field.name].__set__ for field in fields)


_new = object.__new__
_NODE_SETTERS = _slot_setters(Node)
_REF_SETTERS = _slot_setters(Ref)


def _new_node(
    name: str, op: str, target: Any, args: tuple[Any, ...], kwargs: FrozenDict, meta: FrozenDict, type: Any
) -> Node:
    """Node(...), positionally, for the import's one Node per FX node: setting the slots
    directly skips the frozen class's __init__ (measurable at 50k nodes)."""
    if _NODE_SETTERS is None:
        return Node(name, op, target, args, kwargs, meta, type)
    set_name, set_op, set_target, set_args, set_kwargs, set_meta, set_type = _NODE_SETTERS
    node = _new(Node)
    set_name(node, name)
    set_op(node, op)
    set_target(node, target)
    set_args(node, args)
    set_kwargs(node, kwargs)
    set_meta(node, meta)
    set_type(node, type)
    return node


def _new_ref(name: str) -> Ref:
    """Ref(name), the same way as _new_node (one per node argument)."""
    if _REF_SETTERS is None:
        return Ref(name)
    ref = _new(Ref)
    _REF_SETTERS[0](ref, name)
    return ref


# exact types import_arg returns as they are (none is a Node, tuple, list, dict or slice)
_ATOMS = frozenset({int, float, str, bool, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format})


def import_arg(value: Any) -> Any:
    """An FX argument as an IR value (fx.Node -> Ref, list -> ListArg, dict -> FrozenDict)."""
    kind = type(value)
    if kind in _ATOMS:  # fast paths: most arguments are nodes, plain numbers and plain tuples
        return value
    if kind is torch.fx.Node:
        return Ref(value.name)
    if kind is tuple:
        return _import_items(value)
    if isinstance(value, torch.fx.Node):
        return Ref(value.name)
    if isinstance(value, tuple):
        items = [import_arg(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return ListArg(_import_items(value))
    if isinstance(value, dict):
        return FrozenDict((key, import_arg(item)) for key, item in value.items())
    if isinstance(value, slice):
        return slice(import_arg(value.start), import_arg(value.stop), import_arg(value.step))
    return value


def _import_items(values: Iterable[Any]) -> tuple[Any, ...]:
    """import_arg of each item, as a tuple. Inlines the two common kinds (nodes and
    atoms): a node's args are mostly those, and a call per item is most of the cost."""
    items: list[Any] = []
    append = items.append
    fx_node = torch.fx.Node
    for value in values:
        kind = type(value)
        if kind is fx_node:
            append(_new_ref(value.name))
        elif kind in _ATOMS:
            append(value)
        else:
            append(import_arg(value))
    return tuple(items)


# --- import --------------------------------------------------------------------------------


def _check_maps(qconfig_map: Mapping[str, Any], node_name_to_scope: Mapping[str, Any]) -> None:
    """Entries must have the shapes torch's lowering reads; entries naming nodes the
    graph does not have are harmless and kept (torch ignores them too)."""
    for name, qconfig in qconfig_map.items():
        if not isinstance(name, str):
            raise UnsupportedInput(f"qconfig_map key {name!r} is not a node name")
        if qconfig is not None and not (hasattr(qconfig, "activation") and hasattr(qconfig, "weight")):
            raise UnsupportedInput(
                f"qconfig_map[{name!r}] is a {type(qconfig).__name__}, not a QConfig or None", node=name
            )
    for name, scope in node_name_to_scope.items():
        if not isinstance(name, str):
            raise UnsupportedInput(f"node_name_to_scope key {name!r} is not a node name")
        if not (isinstance(scope, tuple) and len(scope) == 2 and isinstance(scope[0], str)):
            raise UnsupportedInput(
                f"node_name_to_scope[{name!r}] must be a (module path, module type) pair, got {scope!r}", node=name
            )


_MISSING = object()
_NO_TABLE: dict[str, Any] = {}
_MODULE_GETATTR = torch.nn.Module.__getattr__


class _Lookup:
    """getattr along dotted paths from one root, for the import's module and attribute lookups.

    `getattr(module, name)` on a submodule, parameter or buffer first fails Python's own
    lookup (raising and catching an AttributeError) and then runs `Module.__getattr__`
    in Python; `get_submodule` does that twice per step. Where the answer cannot differ
    (the class keeps the default lookup and defines no attribute of that name) this reads
    the instance dict and the module's tables directly, in `Module.__getattr__`'s order;
    otherwise, or when the name is in none of them, it asks `getattr` itself. Resolved
    prefixes are remembered: nothing changes the model during the import."""

    def __init__(self, root: torch.nn.Module) -> None:
        self.root = root
        self.resolved: dict[str, Any] = {}
        self.class_names: dict[type, frozenset[str] | None] = {}
        self.plain_get_submodule = getattr(type(root), "get_submodule", None) is torch.nn.Module.get_submodule

    def _names(self, cls: type) -> frozenset[str] | None:
        """Every name `cls` and its bases define, or None if getattr on a `cls` instance
        is not Python's default lookup followed by `Module.__getattr__`."""
        try:
            return self.class_names[cls]
        except KeyError:
            pass
        plain = (
            issubclass(cls, torch.nn.Module)
            and getattr(cls, "__getattribute__", None) is object.__getattribute__
            and getattr(cls, "__getattr__", None) is _MODULE_GETATTR
        )
        names = frozenset().union(*(vars(base) for base in cls.__mro__)) if plain else None
        self.class_names[cls] = names
        return names

    def _step(self, value: Any, name: str) -> Any:
        """getattr(value, name) where it is a plain lookup, else _MISSING."""
        cls = type(value)
        names = self.class_names[cls] if cls in self.class_names else self._names(cls)
        if names is None or name in names:
            return _MISSING
        own = value.__dict__
        if name in own:
            return own[name]
        # Module.__getattr__'s order; a missing table is skipped, as there (the empty dict)
        for table in (own.get("_parameters", _NO_TABLE), own.get("_buffers", _NO_TABLE), own.get("_modules", _NO_TABLE)):
            if type(table) is not dict:
                return _MISSING
            if name in table:
                return table[name]
        return _MISSING

    def _plain(self, path: str) -> Any:
        """The object at `path` if every step is a plain lookup, else _MISSING."""
        value = self.resolved.get(path, _MISSING)
        if value is not _MISSING:
            return value
        if "." in path:
            parent_path, _, name = path.rpartition(".")
            parent = self._plain(parent_path)
        else:  # most get_attr targets are attributes of the root
            parent, name = self.root, path
        if parent is not _MISSING:
            value = self._step(parent, name)
            if value is not _MISSING:
                self.resolved[path] = value
        return value

    def attr(self, path: str) -> Any:
        """What `getattr` along `path` gives (a get_attr node's value)."""
        value = self._plain(path)
        if value is _MISSING:
            value = self.root
            for name in path.split("."):
                value = getattr(value, name)
        return value

    def submodule(self, path: str) -> torch.nn.Module:
        """What `root.get_submodule(path)` gives; raises AttributeError where it would."""
        if self.plain_get_submodule and path:
            value = self._plain(path)
            # the steps before the last were plain lookups on modules (see _names)
            if isinstance(value, torch.nn.Module):
                return value
        return self.root.get_submodule(path)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small immutable objects
    (none of them cyclic): its generational scans otherwise make the cost per node
    grow with the model (measured 61 -> 152 us/node from 1k to 50k nodes)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def from_fx(
    gm: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
) -> Program:
    """The program a GraphModule describes. Reads `gm`; changes nothing in it."""
    with gc_paused():
        return _from_fx(gm, qconfig_map, node_name_to_scope)


def _from_fx(
    gm: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None,
) -> Program:
    if not isinstance(gm, torch.fx.GraphModule):
        raise UnsupportedInput(
            f"expected a torch.fx.GraphModule, got {type(gm).__name__}; "
            "trace the model first (torch.fx.symbolic_trace or prepare_fx/convert_fx)"
        )
    for label, given in (("qconfig_map", qconfig_map), ("node_name_to_scope", node_name_to_scope)):
        if given is not None and not isinstance(given, Mapping):
            raise UnsupportedInput(f"{label} must be a mapping of node names, got {type(given).__name__}")
    _check_maps(qconfig_map or {}, node_name_to_scope or {})

    nodes: dict[str, Node] = {}
    positions: dict[str, Position] = {}
    users: dict[str, list[str]] = {}
    modules: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    lookup = _Lookup(gm)
    new_node = _new_node
    for index, fx_node in enumerate(gm.graph.nodes):
        name = fx_node.name
        op = fx_node.op
        target = fx_node.target
        args = fx_node.args
        kwargs = fx_node.kwargs
        node = new_node(
            name,
            op,
            target,
            _import_items(args) if args else (),
            import_arg(dict(kwargs)) if kwargs else EMPTY,
            _import_meta(fx_node.meta),
            fx_node.type,
        )
        # the nodes it reads, as node.refs() names them (FX keeps them, in order, without
        # repeats); only args and kwargs hold them
        for input_node in fx_node.all_input_nodes if args or kwargs else ():
            try:
                users[input_node.name].append(name)
            except KeyError:
                raise UnsupportedInput(
                    f"node {name!r} uses {input_node.name!r}, which is not defined before it "
                    "(the graph fails torch.fx lint)",
                    node=name,
                    stack_trace=node.meta.get("stack_trace"),
                ) from None
        if op == "call_module":
            try:
                modules[target] = lookup.submodule(target)
            except AttributeError:
                raise UnsupportedInput(
                    f"node {name!r} calls module {target!r}, which the model does not have",
                    node=name,
                    stack_trace=node.meta.get("stack_trace"),
                ) from None
        elif op == "get_attr":
            try:
                constants[target] = lookup.attr(target)
            except AttributeError:
                raise UnsupportedInput(
                    f"node {name!r} reads attribute {target!r}, which the model does not have",
                    node=name,
                    stack_trace=node.meta.get("stack_trace"),
                ) from None
        nodes[name] = node
        positions[name] = (index,)
        users[name] = []

    graph = Graph(
        nodes=immutables.Map(nodes),
        positions=immutables.Map(positions),
        users=immutables.Map(zip(users, map(frozenset, users.values()))),
        next_serial=len(nodes),
    )
    fx_graph = gm.graph
    context = FxContext(
        class_name=type(gm).__name__,
        training=gm.training,
        codegen=fx_graph._codegen,
        tracer_cls=fx_graph._tracer_cls,
        tracer_extras=fx_graph._tracer_extras,
        meta=FrozenDict(getattr(gm, "meta", {})),
    )
    return Program(
        graph=graph,
        modules=pmap(modules),
        constants=pmap(constants),
        originals=pmap({**constants, **modules}),
        qconfig=pmap(dict(qconfig_map or {})),
        scope=pmap(dict(node_name_to_scope or {})),
        context=context,
    )


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

__all__ = [
    "EMPTY",
    "Build",
    "FrozenDict",
    "FxContext",
    "Graph",
    "ListArg",
    "Node",
    "Original",
    "Position",
    "Program",
    "ProgramView",
    "Ref",
    "format_node",
    "format_program",
    "from_fx",
    "import_arg",
    "map_arg",
    "refs_in",
]

