"""How IR values are written in a change log: JSON with type tags
(`{"$ref": "x"}`, `{"$tuple": [...]}`, `{"$name": "operator.add"}`, ...), read back
as the same values."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import torch

from fqlower.errors import ChangeLogError
from fqlower.ir import Build, FrozenDict, ListArg, Node, Original, Ref
from fqlower.names import qualified_name, resolve

_TORCH_ENUMS = (torch.dtype, torch.memory_format, torch.layout, torch.qscheme)


def encode(value: Any) -> Any:
    """A JSON-ready, type-tagged form of an IR value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Ref):
        return {"$ref": value.name}
    if isinstance(value, torch.Size):  # before tuple: a torch.Size is one
        return {"$size": list(value)}
    if isinstance(value, tuple):
        items = [encode(item) for item in value]
        if hasattr(value, "_fields"):
            return {"$namedtuple": qualified_name(type(value)), "items": items}
        return {"$tuple": items}
    if isinstance(value, ListArg):
        return {"$list": [encode(item) for item in value.items]}
    if isinstance(value, FrozenDict):
        return {"$dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, slice):
        return {"$slice": [encode(value.start), encode(value.stop), encode(value.step)]}
    if value is Ellipsis:
        return {"$ellipsis": True}
    if isinstance(value, _TORCH_ENUMS):
        return {"$torch": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"$device": str(value)}
    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        buffer = io.BytesIO()
        torch.save(value.detach(), buffer)
        return {"$tensor": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(value, Original):
        return {"$original": value.path}
    if isinstance(value, Build):
        return {"$build": value.factory, "args": encode(value.args), "kwargs": encode(value.kwargs)}
    if isinstance(value, Node):
        return {"$node": _node_json(value)}
    if isinstance(value, (torch.nn.Module, torch.nn.Parameter, torch._C.ScriptObject)):
        raise ChangeLogError(
            f"cannot write {type(value).__name__} into a change log: passes must describe new "
            "modules and weights as Build specs"
        )
    if isinstance(value, type) or callable(value):
        return {"$name": qualified_name(value)}
    raise ChangeLogError(f"cannot write a value of type {type(value).__name__} into a change log: {value!r}")


def decode(data: Any) -> Any:
    """The IR value `encode` wrote."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        raise ChangeLogError(f"untagged list in change log: {data!r}")
    if not isinstance(data, dict) or not data:
        raise ChangeLogError(f"unexpected value in change log: {data!r}")
    tag = next(key for key in data if key.startswith("$")) if any(k.startswith("$") for k in data) else None
    payload: Any = data.get(tag) if tag else None
    if tag == "$float":
        return float(payload)
    if tag == "$ref":
        return Ref(payload)
    if tag == "$tuple":
        return tuple(decode(item) for item in payload)
    if tag == "$namedtuple":
        cls = resolve(payload)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise ChangeLogError(f"{payload!r} in change log is not a namedtuple type")
        return cls(*(decode(item) for item in data["items"]))
    if tag == "$list":
        return ListArg(tuple(decode(item) for item in payload))
    if tag == "$dict":
        return FrozenDict((decode(key), decode(item)) for key, item in payload)
    if tag == "$slice":
        return slice(*(decode(item) for item in payload))
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$torch":
        return _torch_enum(payload)
    if tag == "$device":
        return torch.device(payload)
    if tag == "$size":
        return torch.Size(payload)
    if tag == "$tensor":
        return torch.load(io.BytesIO(base64.b64decode(payload)), weights_only=True)
    if tag == "$original":
        return Original(payload)
    if tag == "$build":
        args, kwargs = (decode(data[key]) if key in data else None for key in ("args", "kwargs"))
        if not isinstance(payload, str) or not isinstance(args, tuple) or not isinstance(kwargs, FrozenDict):
            raise ChangeLogError(f"malformed spec in change log: {data!r} (a factory name, an args tuple, a kwargs dict)")
        return Build(payload, args, kwargs)
    if tag == "$node":
        return _node_from(payload)
    if tag == "$name":
        return resolve(payload)
    raise ChangeLogError(f"unknown value tag in change log: {data!r}")


def _torch_enum(name: str) -> Any:
    value = getattr(torch, name, None)
    if not isinstance(value, _TORCH_ENUMS):
        raise ChangeLogError(f"unknown torch constant {name!r} in change log")
    return value


def _node_json(node: Node) -> dict[str, Any]:
    meta = {}
    for key, item in node.meta.items():
        try:
            meta[key] = encode(item)
        except ChangeLogError:
            continue  # meta that cannot be written (tracer values) is not part of replay
    return {
        "name": node.name,
        "op": node.op,
        "target": encode(node.target),
        "args": encode(node.args),
        "kwargs": encode(node.kwargs),
        "type": encode(node.type),
        "meta": meta,
    }


def _node_from(data: dict[str, Any]) -> Node:
    return Node(
        name=data["name"],
        op=data["op"],
        target=decode(data["target"]),
        args=decode(data["args"]),
        kwargs=decode(data["kwargs"]),
        meta=FrozenDict((key, decode(item)) for key, item in data["meta"].items()),
        type=decode(data["type"]),
    )
