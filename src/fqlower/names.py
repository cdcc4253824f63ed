"""The one two-way registry between callables and their qualified names.

Logs and fingerprints name every callable (`operator.add`,
`torch.nn.functional.linear`, `torch.ops.quantized.add`, a module class, a
factory such as `torch.ao.nn.quantized.modules.linear.Linear.from_reference`);
`resolve` turns the name back into the same object. `qualified_name` refuses to
name anything that does not resolve back, so a log can always be read again.
"""

from __future__ import annotations

import builtins
import importlib
import math
import operator
from typing import Any

import torch

from fqlower.errors import ChangeLogError

# Searched in this order, so an object reachable from several places gets the
# first name: `torch.nn.functional.conv2d` rather than `torch.conv2d`.
_NAMESPACES: tuple[tuple[str, Any], ...] = (
    ("operator", operator),
    ("builtins", builtins),
    ("math", math),
    ("torch.nn.functional", torch.nn.functional),
    ("torch", torch),
    ("torch.Tensor", torch.Tensor),
    ("torch.special", torch.special),
    ("torch.linalg", torch.linalg),
    ("torch.fft", torch.fft),
)

_namespace_index: dict[int, str] | None = None
_name_cache: dict[Any, str] = {}
_resolve_cache: dict[str, Any] = {}


def _build_namespace_index() -> dict[int, str]:
    # Keyed by id(): the objects are module attributes and so stay alive.
    index: dict[int, str] = {}
    for prefix, namespace in _NAMESPACES:
        for attr in dir(namespace):
            if attr.startswith("__"):
                continue
            try:
                value = getattr(namespace, attr)
            except Exception:  # some lazy attributes raise on access
                continue
            if callable(value) and not isinstance(value, type):
                index.setdefault(id(value), f"{prefix}.{attr}")
    return index


def _candidate_name(obj: Any) -> str | None:
    global _namespace_index
    if isinstance(obj, torch._ops.OpOverloadPacket):
        namespace, op = obj._qualified_op_name.split("::")
        return f"torch.ops.{namespace}.{op}"
    if isinstance(obj, torch._ops.OpOverload):
        namespace, op = obj.name().split("::")
        return f"torch.ops.{namespace}.{op.split('.')[0]}.{obj._overloadname}"
    if _namespace_index is None:
        _namespace_index = _build_namespace_index()
    indexed = _namespace_index.get(id(obj))
    if indexed is not None:
        return indexed
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, type):  # a classmethod bound to its class
        return f"{qualified_name(owner)}.{obj.__name__}"
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname and "<locals>" not in qualname:
        return f"{module}.{qualname}"
    return None


def qualified_name(obj: Any) -> str:
    """The name under which `resolve` finds `obj` again; raises ChangeLogError if none."""
    try:
        return _name_cache[obj]
    except (KeyError, TypeError):
        pass
    name = _candidate_name(obj)
    if name is None or not _same(resolve_or_none(name), obj):
        raise ChangeLogError(
            f"cannot name {obj!r}: it is not reachable by a qualified name "
            "(define it at module level to use it in a program that is logged)"
        )
    try:
        _name_cache[obj] = name
    except TypeError:
        pass
    return name


def _same(found: Any, obj: Any) -> bool:
    if found is obj:
        return True
    try:
        return bool(found == obj)  # bound methods are new objects on each access
    except Exception:
        return False


def resolve_or_none(name: str) -> Any | None:
    try:
        return resolve(name)
    except ChangeLogError:
        return None


def resolve(name: str) -> Any:
    """The object a qualified name refers to; raises ChangeLogError when it cannot be imported."""
    if name in _resolve_cache:
        return _resolve_cache[name]
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            value: Any = importlib.import_module(module_name)
        except Exception:
            continue
        try:
            for attr in parts[split:]:
                value = getattr(value, attr)
        except Exception:
            break
        _resolve_cache[name] = value
        return value
    raise ChangeLogError(f"cannot resolve {name!r}: no importable object has that qualified name")
