"""The values inside IR nodes' args: immutable dicts and lists, node references,
and the specs the emitter builds (`Original`, `Build`); walking and rewriting the
references in them."""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

import attrs


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
