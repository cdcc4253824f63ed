"""Import from torch.fx: `from_fx` turns a GraphModule (and the maps torch's
lowering receives) into the first `Program`; every later one comes from edits."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import immutables
import torch
import torch.fx
from pyrsistent import pmap

from fqlower.errors import UnsupportedInput
from fqlower.ir.program import FxContext, Graph, Node, Position, Program
from fqlower.ir.values import EMPTY, FrozenDict, ListArg, Ref

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


def _non_persistent_buffers(gm: torch.fx.GraphModule, lookup: _Lookup, constants: Mapping[str, Any]) -> frozenset[str]:
    """The get_attr targets that are non-persistent buffers of the module holding them."""
    found = []
    for path, value in constants.items():
        if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
            parent, _, field = path.rpartition(".")
            owner = lookup.attr(parent) if parent else gm
            if isinstance(owner, torch.nn.Module) and field in owner._non_persistent_buffers_set:
                found.append(path)
    return frozenset(found)


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
        non_persistent_buffers=_non_persistent_buffers(gm, lookup, constants),
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
