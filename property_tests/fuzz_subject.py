"""The fuzzer's subjects: the zoo cases it damages, their undamaged logs, and the
FX helpers every mutation uses (slots, attributes, names). See test_fuzz.py."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from hypothesis import strategies as st

import fqlower
from fqlower.ir import format_target
from fqlower.reference import ReferenceModel

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
import zoo


def _make_local_function() -> Callable[..., Any]:
    def local(x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    return local


_LOCAL_FUNCTION = _make_local_function()  # "<locals>" in its qualname: no qualified name resolves to it


# static modules (fused LinearReLU) + scalar add; dynamic module; static functional
# conv/linear with weight folding; dynamic functional linear; binary ops with relu,
# cat, hardswish, sigmoid; module swaps, tensor metadata, layer_norm quantized op.
CASE_IDS = (
    "LinearReluAdd-static_fbgemm",
    "LinearRelu-dynamic_int8",
    "FunctionalConvLinear-static_fbgemm",
    "FunctionalConvLinear-dynamic_int8",
    "ElementwiseMix-static_fbgemm",
    "NormPoolReshape-static_fbgemm",
)

_BASES: dict[str, ReferenceModel] = {}
_LOGS: dict[str, tuple[str, str, str]] = {}  # case -> (log text, output fingerprint, replayed code)


def base(case_id: str) -> ReferenceModel:
    """The zoo case, built once per module; callers deep-copy before changing anything."""
    if case_id not in _BASES:
        _BASES[case_id] = zoo.case_by_id(case_id).build()
    return _BASES[case_id]


def undamaged_log(case_id: str) -> tuple[str, str, str]:
    if case_id not in _LOGS:
        ref = base(case_id)
        lowering = fqlower.lower(copy.deepcopy(ref.module), ref.qconfig_map, ref.node_name_to_scope)
        text = lowering.log.dumps()
        replayed = fqlower.replay(copy.deepcopy(ref.module), text, ref.qconfig_map, ref.node_name_to_scope)
        _LOGS[case_id] = (text, lowering.log.header.output, replayed.module.code)
    return _LOGS[case_id]


def pick(draw: Callable[[st.SearchStrategy], Any], items: list[Any] | tuple[Any, ...]) -> Any:
    """One of `items`, drawn as an index (a strategy built per call is slow)."""
    return items[draw(st.integers(0, len(items) - 1))]


# --- FX helpers ----------------------------------------------------------------------------

Slot = tuple[Any, ...]  # ("args", 0, 1) or ("kwargs", "dim"): where a node sits in another's arguments


def _slots_in(value: Any, path: Slot) -> Iterator[tuple[Slot, torch.fx.Node]]:
    if isinstance(value, torch.fx.Node):
        yield path, value
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _slots_in(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _slots_in(item, (*path, key))


def slots(node: torch.fx.Node) -> list[tuple[Slot, torch.fx.Node]]:
    return [*_slots_in(node.args, ("args",)), *_slots_in(node.kwargs, ("kwargs",))]


def _replace_at(value: Any, path: Slot, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, tuple):
        items = list(value)
        items[head] = _replace_at(items[head], rest, new)
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        items = list(value)
        items[head] = _replace_at(items[head], rest, new)
        return items
    if isinstance(value, dict):
        return {**value, head: _replace_at(value[head], rest, new)}
    raise AssertionError(f"no slot {path!r} in {value!r}")


def set_slot(node: torch.fx.Node, slot: Slot, new: Any) -> None:
    if slot[0] == "args":
        node.args = _replace_at(node.args, slot[1:], new)
    else:
        node.kwargs = _replace_at(node.kwargs, slot[1:], new)


def format_slot(node: str, slot: Slot) -> str:
    return f"%{node}.{slot[0]}" + "".join(f"[{part!r}]" for part in slot[1:])


def node_named(gm: torch.fx.GraphModule, name: str) -> torch.fx.Node:
    for node in gm.graph.nodes:
        if node.name == name:
            return node
    raise AssertionError(f"no node {name!r}")


def lookup(root: Any, path: str) -> Any:
    value = root
    for part in path.split("."):
        value = getattr(value, part)
    return value


def owner_and_field(gm: torch.fx.GraphModule, path: str) -> tuple[Any, str]:
    *parents, field = path.split(".")
    return (lookup(gm, ".".join(parents)) if parents else gm), field


def exists(gm: torch.fx.GraphModule, path: str) -> bool:
    try:
        lookup(gm, path)
    except Exception:
        return False
    return True


def set_attribute(gm: torch.fx.GraphModule, path: str, value: Any) -> None:
    """Put `value` at `path`, whatever was there (parameter, buffer, plain attribute)."""
    owner, field = owner_and_field(gm, path)
    for table in ("_parameters", "_buffers", "_modules"):
        getattr(owner, table, {}).pop(field, None)
    owner.__dict__.pop(field, None)
    if isinstance(value, torch.Tensor) and isinstance(owner, nn.Module):
        owner.register_buffer(field, value)
    else:
        setattr(owner, field, value)


def describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)[:3].tolist()
        return f"tensor{tuple(value.shape)}:{str(value.dtype).removeprefix('torch.')} {flat}"
    if isinstance(value, nn.Module):
        return type(value).__name__
    return repr(value)


def callable_name(target: Any) -> str:
    if target is _LOCAL_FUNCTION:
        return "<a local function, without a qualified name>"
    return format_target(target)


# --- the subject of mutation -----------------------------------------------------------------


class Subject:
    """What a mutation edits: a deep copy of a reference model and copies of its maps."""

    def __init__(self, ref: ReferenceModel):
        self.gm: torch.fx.GraphModule = copy.deepcopy(ref.module)
        self.qconfig_map: Any = dict(ref.qconfig_map)
        self.scope: Any = dict(ref.node_name_to_scope)

    def nodes(self) -> list[torch.fx.Node]:
        return list(self.gm.graph.nodes)

    def node(self, name: str) -> torch.fx.Node:
        return node_named(self.gm, name)
