"""Mutations of a model's state and maps: corrupt, inline or delete constants,
replace modules, edit arguments, damage the qconfig and scope maps. See test_fuzz.py."""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st
from fuzz_graph import Dangle, Draw, DropNode, MoveBeforeInput, Rewire, SwapTarget
from fuzz_subject import Slot, Subject, describe_value, exists, format_slot, lookup, owner_and_field, pick, set_attribute, set_slot, slots


CORRUPTIONS = (
    "negative",
    "zero",
    "nan",
    "inf",
    "huge",
    "tiny",
    "wrong shape",
    "empty",
    "float64",
    "int64",
    "float16",
    "python float",
    "python int",
    "None",
)


def corrupt(value: Any, how: str) -> Any:
    tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value if isinstance(value, (int, float)) else 1.0)
    tensor = tensor.detach()
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    floating = tensor.to(torch.float32) if not tensor.is_floating_point() else tensor
    first = float(tensor.reshape(-1)[0]) if tensor.numel() else 0.5
    if how == "negative":
        return -floating.abs() - 0.5
    if how == "zero":
        return torch.zeros_like(tensor)
    if how == "nan":
        return torch.full_like(floating, math.nan)
    if how == "inf":
        return torch.full_like(floating, math.inf)
    if how == "huge":
        return torch.full_like(floating, 1e30)
    if how == "tiny":
        return torch.full_like(floating, 1e-30)
    if how == "wrong shape":
        return torch.cat([tensor.reshape(-1), tensor.reshape(-1)]).reshape(2, -1)
    if how == "empty":
        return tensor.reshape(-1)[:0]
    if how in ("float64", "int64", "float16"):
        return tensor.to(getattr(torch, how))
    if how == "python float":
        return first
    if how == "python int":
        return int(first) if math.isfinite(first) else 0
    if how == "None":
        return None
    raise AssertionError(how)


@attrs.frozen(repr=False)
class CorruptConstant:
    path: str
    how: str
    value: Any = attrs.field(eq=False)

    touches_qparams = True

    def __repr__(self) -> str:
        return f"set attribute {self.path!r} ({self.how}) to {describe_value(self.value)}"

    def apply(self, s: Subject) -> None:
        set_attribute(s.gm, self.path, self.value)

    @staticmethod
    def draw(draw: Draw, s: Subject) -> CorruptConstant | None:
        paths = sorted({n.target for n in s.nodes() if n.op == "get_attr" and isinstance(n.target, str)})
        paths = [p for p in paths if exists(s.gm, p) and not isinstance(lookup(s.gm, p), nn.Module)]
        if not paths:
            return None
        path, how = pick(draw, paths), pick(draw, CORRUPTIONS)
        return CorruptConstant(path, how, corrupt(lookup(s.gm, path), how))


LITERALS = (0.0, -1.0, 1e-30, math.nan, math.inf, 0, 255, -3)


@attrs.frozen(repr=False)
class InlineConstant:
    node: str
    slot: Slot
    old: str
    value: Any

    touches_qparams = True

    def __repr__(self) -> str:
        return f"{format_slot(self.node, self.slot)}: %{self.old} -> the Python constant {self.value!r}"

    def apply(self, s: Subject) -> None:
        set_slot(s.node(self.node), self.slot, self.value)

    @staticmethod
    def draw(draw: Draw, s: Subject) -> InlineConstant | None:
        options = [(n, slot, used) for n in s.nodes() for slot, used in slots(n) if used.op == "get_attr"]
        if not options:
            return None
        node, slot, used = pick(draw, options)
        if draw(st.booleans()) and exists(s.gm, used.target):
            current = lookup(s.gm, used.target)
            if isinstance(current, torch.Tensor) and current.numel() == 1 and not current.is_quantized:
                value: Any = current.item()
            else:
                value = pick(draw, LITERALS)
        else:
            value = pick(draw, LITERALS)
        return InlineConstant(node.name, slot, used.name, value)


@attrs.frozen(repr=False)
class DeleteAttribute:
    path: str
    read_by: str

    def __repr__(self) -> str:
        return f"delete {self.path!r} from the model (read by %{self.read_by})"

    def apply(self, s: Subject) -> None:
        owner, field = owner_and_field(s.gm, self.path)
        delattr(owner, field)

    @staticmethod
    def draw(draw: Draw, s: Subject) -> DeleteAttribute | None:
        options = [
            (n.target, n.name)
            for n in s.nodes()
            if n.op in ("call_module", "get_attr") and isinstance(n.target, str) and n.target and exists(s.gm, n.target)
        ]
        if not options:
            return None
        path, name = pick(draw, options)
        return DeleteAttribute(path, name)


REPLACEMENTS = ("Identity", "ReLU", "Sigmoid", "Softmax", "Dropout", "float base class", "module at another path")


def _float_base(module: nn.Module) -> nn.Module | None:
    """A copy of a reference quantized module whose class is its float base (nnqr.Linear -> nn.Linear)."""
    if not type(module).__module__.startswith("torch.ao.nn.quantized.reference"):
        return None
    floats = [cls for cls in type(module).__mro__[1:] if cls.__module__.startswith("torch.nn.modules")]
    if not floats:
        return None
    twin = copy.deepcopy(module)
    twin.__class__ = floats[0]
    return twin


@attrs.frozen(repr=False)
class ReplaceModule:
    path: str
    how: str
    other: str | None = None

    def __repr__(self) -> str:
        detail = f" ({self.other!r})" if self.other else ""
        return f"replace submodule {self.path!r} by {self.how}{detail}"

    def replacement(self, s: Subject) -> nn.Module:
        current = lookup(s.gm, self.path)
        if self.how == "float base class":
            twin = _float_base(current)
            assert twin is not None
            return twin
        if self.how == "module at another path":
            return lookup(s.gm, self.other)
        return {
            "Identity": nn.Identity,
            "ReLU": nn.ReLU,
            "Sigmoid": nn.Sigmoid,
            "Softmax": lambda: nn.Softmax(dim=1),
            "Dropout": nn.Dropout,
        }[self.how]().eval()  # eval: a training Dropout would make outputs random

    def apply(self, s: Subject) -> None:
        module = self.replacement(s)
        owner, field = owner_and_field(s.gm, self.path)
        setattr(owner, field, module)

    @staticmethod
    def draw(draw: Draw, s: Subject) -> ReplaceModule | None:
        modules = [(path, module) for path, module in s.gm.named_modules() if path]
        if not modules:
            return None
        path, module = pick(draw, modules)
        how = pick(draw, REPLACEMENTS)
        if how == "float base class" and _float_base(module) is None:
            how = "Identity"
        if how == "module at another path":
            others = [other for other, _ in modules if other != path and not other.startswith(path + ".") and not path.startswith(other + ".")]
            if not others:
                return None
            return ReplaceModule(path, how, pick(draw, others))
        return ReplaceModule(path, how)


# positional parameter names of builtins that inspect.signature cannot read
KNOWN_PARAMETERS: dict[Any, tuple[str, ...]] = {
    F.linear: ("input", "weight", "bias"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.quantize_per_tensor: ("input", "scale", "zero_point", "dtype"),
    torch.quantize_per_channel: ("input", "scales", "zero_points", "axis", "dtype"),
    torch.quantize_per_tensor_dynamic: ("input", "dtype", "reduce_range"),
    torch.add: ("input", "other"),
    torch.mul: ("input", "other"),
    torch.matmul: ("input", "other"),
    torch.cat: ("tensors", "dim"),
    torch.flatten: ("input", "start_dim", "end_dim"),
    torch.sigmoid: ("input",),
    torch.relu: ("input",),
}


def parameter_names(target: Any) -> tuple[str, ...] | None:
    if target in KNOWN_PARAMETERS:
        return KNOWN_PARAMETERS[target]
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD,)]
    return tuple(names) or None


@attrs.frozen(repr=False)
class EditArguments:
    node: str
    how: str  # "to keywords" | "drop trailing"
    start: int

    def __repr__(self) -> str:
        what = "pass positional arguments from" if self.how == "to keywords" else "drop positional arguments from"
        suffix = " on by keyword" if self.how == "to keywords" else " on"
        return f"%{self.node}: {what} #{self.start}{suffix}"

    def apply(self, s: Subject) -> None:
        node = s.node(self.node)
        if self.how == "drop trailing":
            node.args = node.args[: self.start]
            return
        names = parameter_names(node.target)
        assert names is not None
        moved = dict(zip(names[self.start :], node.args[self.start :]))
        node.args = node.args[: self.start]
        node.kwargs = {**moved, **node.kwargs}

    @staticmethod
    def draw(draw: Draw, s: Subject) -> EditArguments | None:
        options = [n for n in s.nodes() if n.op == "call_function" and n.args]
        if not options:
            return None
        node = pick(draw, options)
        start = draw(st.integers(0, len(node.args) - 1))
        names = parameter_names(node.target)
        if names is not None and len(names) >= len(node.args) and not set(names[start : len(node.args)]) & set(node.kwargs) and draw(st.booleans()):
            return EditArguments(node.name, "to keywords", start)
        return EditArguments(node.name, "drop trailing", max(start, 1) if len(node.args) > 1 else 0)


class _Opaque:
    """A value of no type the maps should hold."""

    def __repr__(self) -> str:
        return "<opaque object>"


QCONFIG_DAMAGE = ("None", "None", "remove", "remove", "str", "int", "opaque")
SCOPE_DAMAGE = ("remove", "str", "1-tuple", "int path", "3-tuple", "other path", "dotted path", "empty path", "bad identifier")


@attrs.frozen(repr=False)
class DamageQconfig:
    node: str
    how: str

    def __repr__(self) -> str:
        return f"qconfig_map[{self.node!r}]: {self.how}"

    def apply(self, s: Subject) -> None:
        if self.how == "remove":
            s.qconfig_map.pop(self.node, None)
        else:
            s.qconfig_map[self.node] = {"None": None, "str": "fbgemm", "int": 3, "opaque": _Opaque()}[self.how]

    @staticmethod
    def draw(draw: Draw, s: Subject) -> DamageQconfig | None:
        if not isinstance(s.qconfig_map, dict):
            return None
        names = sorted({n.name for n in s.nodes()} | {k for k in s.qconfig_map if isinstance(k, str)})
        return DamageQconfig(pick(draw, names), pick(draw, QCONFIG_DAMAGE))


@attrs.frozen(repr=False)
class DamageScope:
    node: str
    how: str

    def __repr__(self) -> str:
        return f"node_name_to_scope[{self.node!r}]: {self.how}"

    def apply(self, s: Subject) -> None:
        if self.how == "remove":
            s.scope.pop(self.node, None)
            return
        current = s.scope.get(self.node)
        path, kind = current if isinstance(current, tuple) and len(current) == 2 else ("fc", nn.Linear)
        s.scope[self.node] = {
            "str": "fc",
            "1-tuple": (path,),
            "int path": (3, kind),
            "3-tuple": (path, kind, 1),
            "other path": ("elsewhere", nn.Linear),
            "dotted path": ("outer.inner.0", nn.Conv2d),
            "empty path": ("", None),
            "bad identifier": ("not-an identifier", nn.Linear),
        }[self.how]

    @staticmethod
    def draw(draw: Draw, s: Subject) -> DamageScope | None:
        if not isinstance(s.scope, dict):
            return None
        names = sorted({n.name for n in s.nodes()} | {k for k in s.scope if isinstance(k, str)})
        return DamageScope(pick(draw, names), pick(draw, SCOPE_DAMAGE))


MAP_DAMAGE = ("key 3", "key None", "entry for a missing node", "None", "list of items", "str")


@attrs.frozen(repr=False)
class DamageMap:
    which: str  # "qconfig_map" | "node_name_to_scope"
    how: str

    def __repr__(self) -> str:
        return f"{self.which}: {self.how}"

    def apply(self, s: Subject) -> None:
        attr = "qconfig_map" if self.which == "qconfig_map" else "scope"
        current = getattr(s, attr)
        entry = None if self.which == "qconfig_map" else ("fc", nn.Linear)
        if self.how == "key 3":
            current[3] = entry
        elif self.how == "key None":
            current[None] = entry
        elif self.how == "entry for a missing node":
            current["no_such_node"] = entry
        elif self.how == "None":
            setattr(s, attr, None)
        elif self.how == "list of items":
            setattr(s, attr, list(current.items()))
        elif self.how == "str":
            setattr(s, attr, "fbgemm")

    @staticmethod
    def draw(draw: Draw, s: Subject) -> DamageMap | None:
        which = pick(draw, ("qconfig_map", "node_name_to_scope"))
        if not isinstance(s.qconfig_map if which == "qconfig_map" else s.scope, dict):
            return None
        return DamageMap(which, pick(draw, MAP_DAMAGE))


# weights: mutations that every input check refuses (dangling, lint, missing attribute,
# maps of the wrong shape) are drawn less often than those that reach the passes
MUTATIONS: tuple[Any, ...] = (
    *[Rewire] * 3,
    *[DropNode] * 2,
    Dangle,
    MoveBeforeInput,
    *[SwapTarget] * 3,
    *[CorruptConstant] * 2,
    *[InlineConstant] * 2,
    DeleteAttribute,
    *[ReplaceModule] * 2,
    *[EditArguments] * 2,
    *[DamageQconfig] * 2,
    *[DamageScope] * 2,
    DamageMap,
)
