"""The change log's JSON form: one cattrs converter, `CONVERTER`, that writes and reads
every log record (fqlower.log.records registers how each record is laid out).

IR values inside records are written with type tags, one writer per type: cattrs
dispatches on the value's class by its MRO, so `torch.Size` is written as a size
although it is a tuple, and a `Parameter` is refused although it is a tensor.

    x                         -> {"$ref": "x"}
    (x, 2)                    -> {"$tuple": [{"$ref": "x"}, 2]}
    [x, 2] (a ListArg)        -> {"$list": [{"$ref": "x"}, 2]}
    {"dim": 1}                -> {"$dict": [["dim", 1]]}
    operator.add              -> {"$name": "operator.add"}
    torch.quint8              -> {"$torch": "quint8"}
    float("inf")              -> {"$float": "inf"}

Reading is the inverse, a table from tag to reader. Primitive fields are read strictly:
a string field holds a string and an integer field an integer (not a bool), where
cattrs by default would convert.
"""

from __future__ import annotations

import base64
import io
import math
import types
from typing import Any, Callable

import cattrs
import torch

from fqlower.errors import ChangeLogError
from fqlower.ir import Build, FrozenDict, ListArg, Node, Original, Ref
from fqlower.names import qualified_name, resolve

CONVERTER = cattrs.Converter()

_TORCH_ENUMS = (torch.dtype, torch.memory_format, torch.layout, torch.qscheme)


def encode(value: Any) -> Any:
    """A JSON-ready, type-tagged form of an IR value."""
    return CONVERTER.unstructure(value)


def decode(data: Any) -> Any:
    """The IR value `encode` wrote."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        raise ChangeLogError(f"untagged list in change log: {data!r}")
    if not isinstance(data, dict) or not data:
        raise ChangeLogError(f"unexpected value in change log: {data!r}")
    tag = next((key for key in data if key.startswith("$")), None)
    reader = _READERS.get(tag) if tag else None
    if reader is None:
        raise ChangeLogError(f"unknown value tag in change log: {data!r}")
    return reader(data[tag], data)


# --- writers, by the value's class ------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


def _refuse_object(value: Any) -> Any:
    raise ChangeLogError(
        f"cannot write {type(value).__name__} into a change log: passes must describe new "
        "modules and weights as Build specs"
    )


def _write_other(value: Any) -> Any:
    """Callables and classes by qualified name; anything else is refused."""
    if isinstance(value, type) or callable(value):
        return {"$name": qualified_name(value)}
    raise ChangeLogError(f"cannot write a value of type {type(value).__name__} into a change log: {value!r}")


def _write_tuple(value: tuple[Any, ...]) -> Any:
    items = [encode(item) for item in value]
    if hasattr(value, "_fields"):
        return {"$namedtuple": qualified_name(type(value)), "items": items}
    return {"$tuple": items}


def _write_tensor(value: torch.Tensor) -> Any:
    buffer = io.BytesIO()
    torch.save(value.detach(), buffer)
    return {"$tensor": base64.b64encode(buffer.getvalue()).decode("ascii")}


def _write_node(node: Node) -> Any:
    meta = {}
    for key, item in node.meta.items():
        try:
            meta[key] = encode(item)
        except ChangeLogError:
            continue  # meta that cannot be written (tracer values) is not part of replay
    fields = {"target": node.target, "args": node.args, "kwargs": node.kwargs, "type": node.type}
    return {"$node": {"name": node.name, "op": node.op, **{key: encode(item) for key, item in fields.items()}, "meta": meta}}


_WRITERS: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (object, _write_other),
    *((kind, _identity) for kind in (type(None), bool, int, str)),
    (float, lambda value: value if math.isfinite(value) else {"$float": repr(value)}),
    (Ref, lambda ref: {"$ref": ref.name}),
    (tuple, _write_tuple),
    (torch.Size, lambda size: {"$size": list(size)}),
    (ListArg, lambda arg: {"$list": [encode(item) for item in arg.items]}),
    (FrozenDict, lambda mapping: {"$dict": [[encode(key), encode(item)] for key, item in mapping.items()]}),
    (slice, lambda value: {"$slice": [encode(value.start), encode(value.stop), encode(value.step)]}),
    (types.EllipsisType, lambda _: {"$ellipsis": True}),
    *((enum, lambda value: {"$torch": str(value).removeprefix("torch.")}) for enum in _TORCH_ENUMS),
    (torch.device, lambda device: {"$device": str(device)}),
    (torch.Tensor, _write_tensor),
    (Original, lambda original: {"$original": original.path}),
    (Build, lambda spec: {"$build": spec.factory, "args": encode(spec.args), "kwargs": encode(spec.kwargs)}),
    (Node, _write_node),
    (torch.nn.Parameter, _refuse_object),
    (torch.nn.Module, _refuse_object),
    (torch._C.ScriptObject, _refuse_object),
)
for _cls, _writer in _WRITERS:
    CONVERTER.register_unstructure_hook(_cls, _writer)


# --- readers, by tag -------------------------------------------------------------------


def _read_namedtuple(name: str, data: dict[str, Any]) -> Any:
    cls = resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise ChangeLogError(f"{name!r} in change log is not a namedtuple type")
    return cls(*(decode(item) for item in data["items"]))


def _read_torch_enum(name: str, _: dict[str, Any]) -> Any:
    value = getattr(torch, name, None)
    if not isinstance(value, _TORCH_ENUMS):
        raise ChangeLogError(f"unknown torch constant {name!r} in change log")
    return value


def _read_build(factory: Any, data: dict[str, Any]) -> Build:
    args, kwargs = (decode(data[key]) if key in data else None for key in ("args", "kwargs"))
    if not isinstance(factory, str) or not isinstance(args, tuple) or not isinstance(kwargs, FrozenDict):
        raise ChangeLogError(f"malformed spec in change log: {data!r} (a factory name, an args tuple, a kwargs dict)")
    return Build(factory, args, kwargs)


def _read_node(data: dict[str, Any], _: dict[str, Any]) -> Node:
    return Node(
        name=data["name"],
        op=data["op"],
        target=decode(data["target"]),
        args=decode(data["args"]),
        kwargs=decode(data["kwargs"]),
        meta=FrozenDict((key, decode(item)) for key, item in data["meta"].items()),
        type=decode(data["type"]),
    )


_READERS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "$float": lambda text, _: float(text),
    "$ref": lambda name, _: Ref(name),
    "$tuple": lambda items, _: tuple(decode(item) for item in items),
    "$namedtuple": _read_namedtuple,
    "$list": lambda items, _: ListArg(tuple(decode(item) for item in items)),
    "$dict": lambda pairs, _: FrozenDict((decode(key), decode(item)) for key, item in pairs),
    "$slice": lambda parts, _: slice(*(decode(item) for item in parts)),
    "$ellipsis": lambda _, __: Ellipsis,
    "$torch": _read_torch_enum,
    "$device": lambda name, _: torch.device(name),
    "$size": lambda sizes, _: torch.Size(sizes),
    "$tensor": lambda text, _: torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True),
    "$original": lambda path, _: Original(path),
    "$build": _read_build,
    "$node": _read_node,
    "$name": lambda name, _: resolve(name),
}


# --- strict primitives, and errors a reader can act on ----------------------------------


def _strict(kind: type, noun: str) -> Callable[[Any, Any], Any]:
    def read(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise ChangeLogError(f"must be {noun}, got {value!r}")
        return value

    return read


CONVERTER.register_structure_hook(str, _strict(str, "a string"))
CONVERTER.register_structure_hook(int, _strict(int, "an integer"))


def value_field() -> Any:
    """A cattrs override for a record field that holds an IR value (tagged on disk)."""
    return cattrs.override(unstruct_hook=encode, struct_hook=lambda data, _: decode(data))


def list_field(items: Any) -> Any:
    """A cattrs override for a record field that holds a sequence (`tuple[Edit, ...]`):
    on disk it must be a JSON list, not any iterable cattrs would take (a string, an object)."""
    structure_items = CONVERTER.get_structure_hook(items)

    def read(data: Any, _: Any) -> Any:
        if not isinstance(data, list):
            raise ChangeLogError(f"must be a list, got {data!r}")
        return structure_items(data, items)

    return cattrs.override(struct_hook=read)


def validation_message(error: Exception, keys: dict[str, str]) -> str:
    """What a failed structure says, field by field (`step: must be an integer, got True`),
    naming each field by its key in the JSON (`keys` maps the renamed attributes)."""
    if not isinstance(error, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        return _format_exception(error, None)
    lines = cattrs.transform_error(error, path="", format_exception=_format_exception)
    return "; ".join(_field_first(line, keys) for line in lines)


def _format_exception(error: BaseException, expected: type | None) -> str:
    if isinstance(error, ChangeLogError):
        return str(error)
    if isinstance(error, KeyError):
        return "required field missing"
    return f"{type(error).__name__}: {error}"


def _field_first(line: str, keys: dict[str, str]) -> str:
    message, _, path = line.rpartition(" @ ")
    fields = ".".join(keys.get(part, part) for part in path.lstrip(".").split("."))
    return f"{fields}: {message}" if path else message
