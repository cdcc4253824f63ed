"""Fuzzing fqlower with damaged reference models, maps and change logs.

Each example starts from one of a few valid reference models of the zoo (built once
per module, in `_BASES`) and applies one to three drawn mutations to deep copies of
the GraphModule and of its two maps: rewire an edge, drop a node (its users read one
of its inputs), erase a node while its users still read it (they then read a node of
another graph), move a node before its own input (the graph fails `lint()`), swap a
call_function / call_method / call_module / get_attr target, corrupt a constant
(scale, zero point or weight: negative, zero, NaN, inf, wrong shape or dtype, None, a
Python number), inline a Python number where a get_attr was read, delete an attribute
or submodule the graph reads, replace a submodule (by Identity, ReLU, ..., by its
float base class, by the module at another path), move arguments to keywords or drop
trailing ones, and damage the maps (qconfig None or removed or of the wrong type,
scope removed or of the wrong shape or at another path, keys that are no strings, a
whole map that is None, a list or a string). Logs of the undamaged models are damaged
by truncation, flipped characters, dropped / duplicated / swapped / blank lines, CRLF
and trailing or leading whitespace, another schema number, or an unknown or other
qualified name. Every drawn mutation prints as one readable line.

The laws:

- `test_lowering_never_raises_anything_but_fqlower_errors`: `fqlower.lower` returns or
  raises an `FqlowerError`; any other exception fails the test. When it returns, the
  mutated model runs on the example inputs (otherwise it is no model to lower
  correctly) and torch's lowering of a copy returns too, the two results are equal:
  `lowering_differences` (graph up to node names, module types, state_dict,
  bit-identical outputs), with outputs computed on separate copies of the inputs and
  two results that both fail to run counting as equal outputs. Where they differ, the
  log must hold departures (entries with a `torch-*` reason code, `fqlower.departures`),
  the graph, module types and state_dict must equal torch's outside the departed nodes'
  regions, and fqlower's result must run and be near the mutated reference model's
  outputs: |ours - ref| <= 0.25 * max|ref| + 1e-3 elementwise, over the positions where
  both are finite. The bound is loose on purpose: the reference model simulates
  quantization in float, the lowering runs integer kernels. It is not checked when a
  mutation changed a constant or which constant a node reads: a reroute drops its
  quantize in torch's lowering and fqlower's alike, so a corrupted scale there is
  applied by the reference model only. When torch's lowering raises, or both lowered
  models fail to run with the same error, nothing beyond "no other exception" is
  asserted: the mutated inputs include garbage (a dequantize of a float tensor, a zero
  scale) on which torch's lowering would build the same failing model. Half the
  examples draw only gentle mutations (`draw_gentle`: arguments to keywords, a qconfig
  set to None), which keep the model lowerable, and at least 30 % of all examples
  must get as far as a comparison with torch (property_tests/reach.py).
- `test_lowering_never_mutates_its_input`: the model (code, graph, node names and
  meta keys, module types, state, attributes) and both maps (keys, order, value
  identity) are the same after `lower`, whatever it returned or raised.
- `test_replay_refuses_damaged_logs_precisely`: a damaged log that `ChangeLog.loads`
  refuses is refused by `replay` with a `ChangeLogError`; one it reads is either
  refused with a `ReplayMismatch` or replays to the undamaged output fingerprint and
  code (whitespace-only damage must replay). Never another exception; the model and
  the maps are unchanged.
- `test_replay_refuses_logs_with_retyped_values_precisely`: the same law for logs that
  stay valid JSON lines but hold a value of another type or form somewhere (a list
  where a node name belongs, an object where a fingerprint belongs, an unknown device,
  a broken tensor).

Example counts come from the hypothesis profiles in conftest.py (`ci`: 40,
`fuzz-thorough`: 10,000 per property).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import inspect
import io
import json
import math
import operator
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import Phase, event, given, note, reject, settings
from hypothesis import strategies as st
from reach import run_law

import fqlower
from fqlower import ChangeLog, ChangeLogError, FqlowerError, ReplayMismatch
from fqlower.compare import (
    ModelSnapshot,
    graph_differences,
    module_type_differences,
    state_dict_differences,
    values_equal,
)
from fqlower.ir import format_target
from fqlower.departures import departed_nodes, departures, differences_outside
from fqlower.reference import ReferenceModel, torch_lowering

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
import zoo

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


# --- mutations: each a record that prints as one line, applied to a Subject ----------------

Draw = Callable[[st.SearchStrategy], Any]


@attrs.frozen(repr=False)
class Rewire:
    node: str
    slot: Slot
    old: str
    new: str
    touches_qparams: bool = attrs.field(default=False, eq=False)  # old or new is a get_attr

    def __repr__(self) -> str:
        return f"rewire {format_slot(self.node, self.slot)}: %{self.old} -> %{self.new}"

    def apply(self, s: Subject) -> None:
        set_slot(s.node(self.node), self.slot, s.node(self.new))

    @staticmethod
    def draw(draw: Draw, s: Subject) -> Rewire | None:
        nodes = s.nodes()
        options = [(n, slot, used) for n in nodes for slot, used in slots(n)]
        if not options:
            return None
        node, slot, used = pick(draw, options)
        earlier = [other for other in nodes[: nodes.index(node)] if other is not used]
        if not earlier:
            return None
        other = pick(draw, earlier)
        return Rewire(node.name, slot, used.name, other.name, "get_attr" in (used.op, other.op))


@attrs.frozen(repr=False)
class DropNode:
    node: str
    replacement: str | None  # what its users read instead
    touches_qparams: bool = attrs.field(default=False, eq=False)  # a get_attr dropped

    def __repr__(self) -> str:
        instead = f", its users read %{self.replacement} instead" if self.replacement else ""
        return f"drop %{self.node}{instead}"

    def apply(self, s: Subject) -> None:
        node = s.node(self.node)
        if self.replacement is not None:
            node.replace_all_uses_with(s.node(self.replacement))
        s.gm.graph.erase_node(node)

    @staticmethod
    def draw(draw: Draw, s: Subject) -> DropNode | None:
        nodes = s.nodes()
        options = [n for n in nodes if n.op not in ("placeholder", "output")]
        if not options:
            return None
        node = pick(draw, options)
        if not node.users:
            return DropNode(node.name, None, node.op == "get_attr")
        inputs = [i for i in node.all_input_nodes if i.graph is node.graph] or nodes[: nodes.index(node)]
        if not inputs:
            return None
        return DropNode(node.name, pick(draw, inputs).name, node.op == "get_attr")


@attrs.frozen(repr=False)
class Dangle:
    node: str

    def __repr__(self) -> str:
        return f"erase %{self.node} while its users still read it (now a node of another graph of that name)"

    def apply(self, s: Subject) -> None:
        node = s.node(self.node)
        foreign = torch.fx.Graph().placeholder(node.name)
        for user in list(node.users):
            user.replace_input_with(node, foreign)
        s.gm.graph.erase_node(node)

    @staticmethod
    def draw(draw: Draw, s: Subject) -> Dangle | None:
        options = [n for n in s.nodes() if n.op not in ("placeholder", "output") and n.users]
        return Dangle(pick(draw, options).name) if options else None


@attrs.frozen(repr=False)
class MoveBeforeInput:
    node: str
    input: str

    def __repr__(self) -> str:
        return f"move %{self.node} before its input %{self.input} (the graph fails lint)"

    def apply(self, s: Subject) -> None:
        s.node(self.input).prepend(s.node(self.node))

    @staticmethod
    def draw(draw: Draw, s: Subject) -> MoveBeforeInput | None:
        options = [(n, i) for n in s.nodes() if n.op != "output" for i in n.all_input_nodes if i.graph is n.graph]
        if not options:
            return None
        node, used = pick(draw, options)
        return MoveBeforeInput(node.name, used.name)


def _make_local_function() -> Callable[..., Any]:
    def local(x: Any, *args: Any, **kwargs: Any) -> Any:
        return x

    return local


_LOCAL_FUNCTION = _make_local_function()  # "<locals>" in its qualname: no qualified name resolves to it

FUNCTIONS: tuple[Any, ...] = (
    operator.add,
    torch.add,
    operator.mul,
    torch.mul,
    torch.matmul,
    operator.matmul,
    operator.floordiv,
    operator.getitem,
    builtins.getattr,
    F.relu,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.hardswish,
    F.layer_norm,
    F.elu,
    F.leaky_relu,
    torch.flatten,
    torch.cat,
    torch.mean,
    torch.clamp,
    torch.transpose,
    torch.unsqueeze,
    torch.neg,
    F.linear,
    F.conv2d,
    F.conv_transpose2d,
    torch.quantize_per_tensor,
    torch.quantize_per_channel,
    torch.quantize_per_tensor_dynamic,
    torch.ops.quantized.linear_prepack,
    torch.ops.quantized.add,
    torch._assert,
    _LOCAL_FUNCTION,
)

METHODS: tuple[str, ...] = (
    "dequantize",
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh_",
    "size",
    "shape",
    "reshape",
    "view",
    "to",
    "mean",
    "contiguous",
    "detach",
    "transpose",
    "clamp",
    "float",
    "flatten",
    "int_repr",
    "no_such_method",
)

MISSING_PATHS = ("no_such_attribute", "no.such.path", "")


@attrs.frozen(repr=False)
class SwapTarget:
    node: str
    op: str
    old: Any
    new: Any

    def __repr__(self) -> str:
        return f"%{self.node}: {self.op} target {callable_name(self.old)!r} -> {callable_name(self.new)!r}"

    @property
    def touches_qparams(self) -> bool:
        return self.op == "get_attr"

    def apply(self, s: Subject) -> None:
        s.node(self.node).target = self.new

    @staticmethod
    def draw(draw: Draw, s: Subject) -> SwapTarget | None:
        options = [n for n in s.nodes() if n.op in ("call_function", "call_method", "call_module", "get_attr")]
        if not options:
            return None
        node = pick(draw, options)
        modules = [path for path, _ in s.gm.named_modules() if path]
        tensors = [path for path, _ in (*s.gm.named_parameters(), *s.gm.named_buffers())]
        pool: list[Any]
        if node.op == "call_function":
            pool = list(FUNCTIONS)
        elif node.op == "call_method":
            pool = list(METHODS)
        elif node.op == "call_module":
            pool = [*modules, *tensors[:3], *MISSING_PATHS]
        else:
            pool = [*tensors, *modules[:3], *MISSING_PATHS]
        pool = [target for target in pool if target is not node.target and target != node.target]
        return SwapTarget(node.name, node.op, node.target, pick(draw, pool)) if pool else None


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


def draw_gentle(draw: Draw, s: Subject) -> Any:
    """A mutation that keeps the model runnable and lowerable: arguments moved to keywords
    (what the model computes stays) or a qconfig set to None. Half the fuzzer's examples use only these, so that enough of them get as
    far as a comparison with torch's lowering (the other mutations mostly make models
    that do not run or that fqlower refuses)."""
    kind = pick(draw, ("qconfig", "qconfig", "keywords"))
    if kind == "keywords":
        options = [
            n
            for n in s.nodes()
            if n.op == "call_function" and n.args and len(parameter_names(n.target) or ()) >= len(n.args)
            and not set((parameter_names(n.target) or ())[: len(n.args)]) & set(n.kwargs)
        ]
        if options:
            node = pick(draw, options)
            return EditArguments(node.name, "to keywords", draw(st.integers(0, len(node.args) - 1)))
    if isinstance(s.qconfig_map, dict) and s.qconfig_map:
        return DamageQconfig(pick(draw, sorted(k for k in s.qconfig_map if isinstance(k, str))), "None")
    return None


def numbered(title: str, items: Any) -> str:
    """`title` and one numbered line per item: how a drawn example prints."""
    return "\n".join([title, *(f"  {index}. {item!r}" for index, item in enumerate(items, start=1))])


class PrintsByLine:
    """Hypothesis prints a drawn value with `_repr_pretty_`: keep its repr's lines."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        for index, line in enumerate(repr(self).splitlines()):
            if index:
                printer.break_()
            printer.text(line)


class Fuzzed(PrintsByLine):
    """A mutated reference model, its maps and the example inputs."""

    def __init__(self, case: str, mutations: tuple[Any, ...], subject: Subject, inputs: tuple[Any, ...], gentle: bool = False):
        self.gentle = gentle
        self.case = case
        self.mutations = mutations
        self.module = subject.gm
        self.qconfig_map = subject.qconfig_map
        self.scope = subject.scope
        self.inputs = inputs

    @property
    def touches_qparams(self) -> bool:
        """Whether a mutation changed a constant or which constant a node reads."""
        return any(getattr(mutation, "touches_qparams", False) for mutation in self.mutations)

    def __repr__(self) -> str:
        return numbered(f"{self.case} with {len(self.mutations)} mutation(s):", self.mutations)



@st.composite
def fuzzed_inputs(draw: Draw) -> Fuzzed:
    case = pick(draw, CASE_IDS)
    ref = base(case)
    subject = Subject(ref)
    applied = []
    gentle = draw(st.booleans())
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw_gentle(draw, subject) if gentle else pick(draw, MUTATIONS).draw(draw, subject)
        if mutation is None:
            continue
        mutation.apply(subject)
        applied.append(mutation)
        try:
            subject.gm.recompile()
        except Exception:
            reject()  # FX cannot generate code for it (e.g. getattr with one argument): not a model
    return Fuzzed(case, tuple(applied), subject, ref.example_inputs, gentle)


# --- running models --------------------------------------------------------------------------


def clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(clone(item) for item in value)
    return value


class Failed:
    """A call that raised: the exception, for messages."""

    def __init__(self, error: BaseException):
        self.error = error

    def __repr__(self) -> str:
        return f"{type(self.error).__name__}: {str(self.error).splitlines()[0] if str(self.error) else ''}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's lowering and some mutated models print; keep the test output readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run(model: Any, inputs: tuple[Any, ...]) -> Any:
    """The model's outputs on fresh copies of `inputs`, or Failed."""
    try:
        with torch.no_grad(), _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. quantized cat of inputs with different qparams
            return model(*clone(inputs))
    except Exception as error:
        return Failed(error)


def reference_outputs(fuzzed: Fuzzed) -> Any:
    """The mutated model's outputs (on a copy: some mutations run in-place ops), or Failed."""
    try:
        model = copy.deepcopy(fuzzed.module)
    except Exception as error:
        return Failed(error)
    return run(model, fuzzed.inputs)


def lower_with_torch(fuzzed: Fuzzed) -> Any:
    try:
        with _quiet():
            return torch_lowering(ReferenceModel(fuzzed.module, fuzzed.qconfig_map, fuzzed.scope, fuzzed.inputs))
    except Exception as error:
        return Failed(error)


def far_from(ours: Any, ref: Any, path: str = "output") -> str | None:
    """Why `ours` is not within 0.25 * max|ref| + 1e-3 of `ref` (finite positions), or None."""
    if isinstance(ref, torch.Tensor):
        if not isinstance(ours, torch.Tensor):
            return f"{path}: a {type(ours).__name__}, not a tensor"
        o = (ours.dequantize() if ours.is_quantized else ours).detach().double()
        r = (ref.dequantize() if ref.is_quantized else ref).detach().double()
        if o.shape != r.shape:
            return f"{path}: shape {tuple(o.shape)} vs the reference's {tuple(r.shape)}"
        both = torch.isfinite(o) & torch.isfinite(r)
        if not bool(both.any()):
            return None
        bound = 0.25 * float(r[both].abs().max()) + 1e-3
        error = float((o - r)[both].abs().max())
        return None if error <= bound else f"{path}: max |ours - reference| = {error:.4g} > {bound:.4g}"
    if isinstance(ref, (tuple, list)):
        if not isinstance(ours, (tuple, list)) or len(ours) != len(ref):
            return f"{path}: {type(ours).__name__} vs the reference's {type(ref).__name__} of {len(ref)}"
        for index, (a, b) in enumerate(zip(ours, ref)):
            problem = far_from(a, b, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(ref, dict):
        if not isinstance(ours, dict) or ours.keys() != ref.keys():
            return f"{path}: keys differ"
        for key in ref:
            problem = far_from(ours[key], ref[key], f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return None if values_equal(ours, ref) else f"{path}: {ours!r} vs the reference's {ref!r}"


def differences_from_torch(expected: torch.fx.GraphModule, actual: torch.fx.GraphModule, expected_out: Any, actual_out: Any) -> list[str]:
    """`lowering_differences`, with outputs computed on separate copies of the inputs;
    two results that both fail to run have equal outputs, one that fails differs."""
    found = graph_differences(expected, actual) + module_type_differences(expected, actual)
    found += state_dict_differences(expected, actual)
    failed = (isinstance(expected_out, Failed), isinstance(actual_out, Failed))
    if failed == (True, True):
        return found
    if any(failed) or not values_equal(expected_out, actual_out):
        found.append("outputs differ")
    return found


def _unexpected(call: str, fuzzed: Fuzzed, error: BaseException) -> AssertionError:
    return AssertionError(f"{call} raised {type(error).__name__}: {error}\non {fuzzed!r}")


# --- properties --------------------------------------------------------------------------------


def test_lowering_never_raises_anything_but_fqlower_errors() -> None:
    """lower() returns or raises an FqlowerError (see `check_fuzzed`); at least 30 % of the
    examples get as far as a comparison with torch's lowering."""
    run_law("fuzzer", fuzzed_inputs(), check_fuzzed, share=0.3)


def check_fuzzed(fuzzed: Fuzzed) -> tuple[str, bool]:
    outcome, reached = check_fuzzed_law(fuzzed)
    return f"{'gentle' if fuzzed.gentle else 'harsh'}: {outcome}", reached


def check_fuzzed_law(fuzzed: Fuzzed) -> tuple[str, bool]:
    """lower() returns or raises an FqlowerError. A lowering of a model that runs equals
    torch's (when torch's lowering returns), except where fqlower differs on purpose
    (README, "Where fqlower does better than torch 2.13"); there its result must run and
    stay within 0.25 * max|ref| + 1e-3 of the mutated reference model's outputs (a loose
    tolerance: the reference simulates quantization in float, the lowering runs integer
    kernels), unless a mutation changed a constant or which constant a node reads."""
    note(f"mutated model:\n{fuzzed.module.code}")
    try:
        lowering = fqlower.lower(fuzzed.module, fuzzed.qconfig_map, fuzzed.scope)
    except FqlowerError as error:
        return f"fqlower raises {type(error).__name__}", False
    except Exception as error:
        raise _unexpected("fqlower.lower", fuzzed, error) from error

    expected = reference_outputs(fuzzed)
    if isinstance(expected, Failed):
        return "fqlower lowers; the mutated model does not run", False  # not a model: nothing to lower correctly
    theirs = lower_with_torch(fuzzed)
    if isinstance(theirs, Failed):
        return "fqlower lowers; torch raises", False
    ours, theirs_out = run(lowering.module, fuzzed.inputs), run(theirs, fuzzed.inputs)
    try:
        differences = differences_from_torch(theirs, lowering.module, theirs_out, ours)
    except Exception as error:
        raise _unexpected("comparing the lowerings with fqlower.compare", fuzzed, error) from error
    if not differences:
        return "fqlower lowers; equal to torch" + (" (neither result runs)" if isinstance(ours, Failed) else ""), True
    deliberate = departures(lowering)
    note(f"differences from torch: {differences}\ndeparts: {deliberate}")
    assert deliberate, (
        f"fqlower's lowering differs from torch's, and not where fqlower differs on purpose: {differences}\n"
        f"torch ({'does not run: ' + repr(theirs_out) if isinstance(theirs_out, Failed) else 'runs'}):\n{theirs.code}\n"
        f"fqlower ({'does not run: ' + repr(ours) if isinstance(ours, Failed) else 'runs'}):\n{lowering.module.code}"
    )
    outside = differences_outside(theirs, lowering.module, departed_nodes(lowering))
    assert not outside, f"differences outside the departures {deliberate}: {outside}"
    if isinstance(ours, Failed) and isinstance(theirs_out, Failed) and repr(ours) == repr(theirs_out):
        # garbage in (e.g. a dequantize of a float model input feeding a quantized module):
        # both lowerings build a model that fails the same way, as when torch's lowering raises
        return "fqlower lowers; differs from torch on purpose, and both fail the same way", True
    assert not isinstance(ours, Failed), f"fqlower's lowering does not run: {ours!r}\n{lowering.module.code}"
    if fuzzed.touches_qparams:
        # a reroute drops its quantize (torch's lowering and fqlower's alike), so a corrupted
        # scale or zero point there is applied by the reference model and by neither lowering
        return "fqlower lowers; differs from torch on purpose (qparams touched: outputs not bounded)", True
    problem = far_from(ours, expected)
    assert problem is None, f"fqlower's lowering computes something else than the mutated model: {problem}\n{lowering.module.code}"
    return "fqlower lowers; differs from torch on purpose, near the mutated model", True


def _maps_record(value: Any) -> Any:
    if isinstance(value, dict):
        return [(key, id(item)) for key, item in value.items()]
    if isinstance(value, list):
        return ("list", [(id(item), item) for item in value])
    return ("other", id(value))


def _graph_record(gm: torch.fx.GraphModule) -> list[tuple[Any, ...]]:
    """Every node as names, works for graphs ModelSnapshot cannot walk (dangling references)."""
    def name_of(value: Any) -> Any:
        return torch.fx.node.map_arg(value, lambda node: f"%{node.name}")

    return [
        (node.name, node.op, repr(node.target), repr(name_of(node.args)), repr(name_of(node.kwargs)), tuple(sorted(node.meta)))
        for node in gm.graph.nodes
    ]


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by path, read without `state_dict` (which a damaged
    reference module may fail, e.g. without its `weight_scale`)."""
    found = dict(module.named_parameters(remove_duplicate=False))
    found.update(module.named_buffers(remove_duplicate=False))
    return {name: value.detach().clone() for name, value in found.items()}


class InputSnapshot:
    def __init__(self, fuzzed: Fuzzed):
        try:
            self.model: ModelSnapshot | None = ModelSnapshot.of(fuzzed.module)
        except (KeyError, AttributeError):
            # KeyError: a node reads a node of another graph (graph_shape cannot number it);
            # AttributeError: a reference module lost an attribute its state_dict reads
            self.model = None
            self.state = _tensors(fuzzed.module)
        self.graph = _graph_record(fuzzed.module)
        self.code = fuzzed.module.code
        self.maps = (_maps_record(fuzzed.qconfig_map), _maps_record(fuzzed.scope))

    def differences(self, fuzzed: Fuzzed) -> list[str]:
        found = self.model.differences(fuzzed.module) if self.model is not None else []
        if self.model is None:
            state = _tensors(fuzzed.module)
            if state.keys() != self.state.keys() or not all(values_equal(state[k], self.state[k]) for k in state):
                found.append("parameters or buffers changed")
        if _graph_record(fuzzed.module) != self.graph:
            found.append("nodes (names, targets, arguments or meta keys) changed")
        if fuzzed.module.code != self.code:
            found.append("code changed")
        if (_maps_record(fuzzed.qconfig_map), _maps_record(fuzzed.scope)) != self.maps:
            found.append("maps changed")
        return found


@given(fuzzed_inputs())
def test_lowering_never_mutates_its_input(fuzzed: Fuzzed) -> None:
    snapshot = InputSnapshot(fuzzed)
    try:
        fqlower.lower(fuzzed.module, fuzzed.qconfig_map, fuzzed.scope)
        outcome = "returned"
    except Exception as error:  # the other property judges the exception; this one judges purity
        outcome = f"raised {type(error).__name__}"
    changed = snapshot.differences(fuzzed)
    assert changed == [], f"fqlower.lower {outcome} and changed its input: {changed}"


# --- damaged logs ------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class Truncate:
    at: int

    def __repr__(self) -> str:
        return f"truncate at byte {self.at}"

    def apply(self, text: str) -> str:
        return text[: self.at]

    @staticmethod
    def draw(draw: Draw, text: str) -> Truncate:
        return Truncate(draw(st.integers(0, max(len(text) - 1, 0))))


FLIP_CHARS = "0123456789abcdefxyzAZ_$.,:;{}[]\"\\ -+eE\té\x00\x0c"


@attrs.frozen(repr=False)
class Flip:
    at: int
    char: str

    def __repr__(self) -> str:
        return f"replace the character at {self.at} by {self.char!r}"

    def apply(self, text: str) -> str:
        at = min(self.at, len(text) - 1)
        return text[:at] + self.char + text[at + 1 :] if text else text

    @staticmethod
    def draw(draw: Draw, text: str) -> Flip:
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        chars = [c for c in FLIP_CHARS if not text or c != text[at]]
        return Flip(at, pick(draw, chars))


@attrs.frozen(repr=False)
class Lines:
    how: str  # drop | duplicate | swap | move to end | blank line | trailing spaces | leading spaces | crlf
    first: int
    second: int = 0

    NULL = ("blank line", "trailing spaces", "leading spaces", "crlf")

    def __repr__(self) -> str:
        where = f"lines {self.first} and {self.second}" if self.how == "swap" else f"line {self.first}"
        return f"{self.how}: {where} (1-based)"

    def apply(self, text: str) -> str:
        lines = text.split("\n")
        ending = lines.pop() if lines and lines[-1] == "" else None
        if not lines:
            return text
        i, j = (self.first - 1) % len(lines), (self.second - 1) % len(lines)
        if self.how == "drop":
            del lines[i]
        elif self.how == "duplicate":
            lines.insert(i, lines[i])
        elif self.how == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif self.how == "move to end":
            lines.append(lines.pop(i))
        elif self.how == "blank line":
            lines.insert(i, "   ")
        elif self.how == "trailing spaces":
            lines[i] += " \t "
        elif self.how == "leading spaces":
            lines[i] = "  " + lines[i]
        elif self.how == "crlf":
            lines = [line + "\r" for line in lines]
        if ending is not None:
            lines.append(ending)
        return "\n".join(lines)

    @staticmethod
    def draw(draw: Draw, text: str) -> Lines:
        count = max(text.count("\n"), 1)
        how = pick(draw, ("drop", "duplicate", "swap", "move to end", *Lines.NULL))
        return Lines(how, draw(st.integers(1, count)), draw(st.integers(1, count)))


SCHEMAS = (0, 2, -1, 99, "1", 1.5, None, True)


@attrs.frozen(repr=False)
class Schema:
    value: Any

    def __repr__(self) -> str:
        return f"header schema -> {self.value!r}"

    def apply(self, text: str) -> str:
        header, sep, rest = text.partition("\n")
        try:
            record = json.loads(header)
        except ValueError:
            return text
        if not isinstance(record, dict):
            return text
        record["schema"] = self.value
        return json.dumps(record, sort_keys=True, separators=(",", ":")) + sep + rest

    @staticmethod
    def draw(draw: Draw, text: str) -> Schema:
        return Schema(pick(draw, SCHEMAS))


NAMES = ("torch.no_such_op", "operator.no_such_function", "no_such_module.at_all", "", "torch", "operator.mul", "torch.relu", "math.pi")
_NAME_FIELD = re.compile(r'"\$(name|build)":"((?:[^"\\]|\\.)*)"')


@attrs.frozen(repr=False)
class Rename:
    occurrence: int
    name: str

    def __repr__(self) -> str:
        return f"qualified name #{self.occurrence} ($name or $build) -> {self.name!r}"

    def apply(self, text: str) -> str:
        found = list(_NAME_FIELD.finditer(text))
        if not found:
            return text
        match = found[self.occurrence % len(found)]
        return text[: match.start(2)] + self.name + text[match.end(2) :]

    @staticmethod
    def draw(draw: Draw, text: str) -> Rename:
        return Rename(draw(st.integers(0, 50)), pick(draw, NAMES))


DAMAGES = (Truncate, Flip, Flip, Lines, Lines, Schema, Rename)


class DamagedLog(PrintsByLine):
    def __init__(self, case: str, damages: tuple[Any, ...], text: str):
        self.case, self.damages, self.text = case, damages, text

    @property
    def null(self) -> bool:
        """Whitespace only: the log reads the same."""
        return all(isinstance(d, Lines) and d.how in Lines.NULL for d in self.damages)

    def __repr__(self) -> str:
        return numbered(f"log of {self.case} with {len(self.damages)} damage(s):", self.damages)



@st.composite
def damaged_logs(draw: Draw) -> DamagedLog:
    case = pick(draw, CASE_IDS)
    text = undamaged_log(case)[0]
    damages = []
    for _ in range(draw(st.integers(1, 3))):
        damage = pick(draw, DAMAGES).draw(draw, text)
        text = damage.apply(text)
        damages.append(damage)
    return DamagedLog(case, tuple(damages), text)


JSON_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    "",
    "x",
    [],
    ["x"],
    {},
    {"$ref": ["x"]},
    {"$ref": "no_such_node"},
    {"$device": "cpux"},
    {"$tensor": "AAAA"},
    {"$float": "nan"},
    {"$torch": "no_such_dtype"},
    {"$namedtuple": "no.such.type", "items": []},
    {"$unknown": 1},
)


def json_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a JSON value, the value itself first."""
    yield path
    if isinstance(value, dict):
        for key in sorted(value):
            yield from json_paths(value[key], (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*path, index))


def _json_replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _json_replace(value[head], rest, new)}
    items = list(value)
    items[head] = _json_replace(items[head], rest, new)
    return items


@attrs.frozen(repr=False)
class Retype:
    """One JSON value of one line replaced by a value of another type or form."""

    line: int  # 0-based
    path: tuple[Any, ...]
    value: Any

    def __repr__(self) -> str:
        where = "".join(f"[{part!r}]" for part in self.path) or " (the whole record)"
        return f"line {self.line + 1}{where} -> {json.dumps(self.value)}"

    def apply(self, text: str) -> str:
        lines = text.split("\n")
        try:
            record = json.loads(lines[self.line])
        except (ValueError, IndexError):
            return text
        lines[self.line] = json.dumps(_json_replace(record, self.path, self.value), sort_keys=True, separators=(",", ":"))
        return "\n".join(lines)

    @staticmethod
    def draw(draw: Draw, text: str) -> Retype | None:
        lines = text.split("\n")
        readable = []
        for index, line in enumerate(lines):
            try:
                readable.append((index, json.loads(line)))
            except ValueError:
                continue
        if not readable:
            return None
        index, record = pick(draw, readable)
        return Retype(index, pick(draw, list(json_paths(record))), pick(draw, JSON_VALUES))


@st.composite
def retyped_logs(draw: Draw) -> DamagedLog:
    case = pick(draw, CASE_IDS)
    text = undamaged_log(case)[0]
    damages = []
    for _ in range(draw(st.integers(1, 2))):
        damage = Retype.draw(draw, text)
        if damage is None:
            break
        text = damage.apply(text)
        damages.append(damage)
    return DamagedLog(case, tuple(damages), text)


def check_replay(damaged: DamagedLog) -> None:
    """The replay law: refused precisely (unreadable: ChangeLogError; readable but not
    fitting: ReplayMismatch) or replayed to the undamaged output; the model unchanged."""
    ref = base(damaged.case)
    _, output, code = undamaged_log(damaged.case)
    model = copy.deepcopy(ref.module)
    qconfig_map, scope = dict(ref.qconfig_map), dict(ref.node_name_to_scope)
    snapshot = ModelSnapshot.of(model)
    maps = (_maps_record(qconfig_map), _maps_record(scope))

    try:
        ChangeLog.loads(damaged.text)
        readable: BaseException | None = None
    except ChangeLogError as error:
        readable = error
    except Exception as error:
        raise AssertionError(
            f"ChangeLog.loads raised {type(error).__name__} (not a ChangeLogError): {error}\non {damaged!r}"
        ) from error

    try:
        replayed = fqlower.replay(model, damaged.text, qconfig_map, scope)
    except ChangeLogError as error:
        event("ChangeLogError")
        assert readable is not None, f"ChangeLog.loads reads the log, replay calls it unreadable: {error}"
    except ReplayMismatch as error:
        event("ReplayMismatch")
        assert readable is None, f"replay reports a mismatch for a log ChangeLog.loads refuses ({readable}): {error}"
        assert not damaged.null, f"whitespace-only damage was refused: {error}"
    except Exception as error:
        raise AssertionError(
            f"replay raised {type(error).__name__} (not ChangeLogError or ReplayMismatch): {error}\non {damaged!r}"
        ) from error
    else:
        event("replayed" + (" (whitespace-only damage)" if damaged.null else ""))
        assert readable is None, f"replay accepted a log ChangeLog.loads refuses: {readable}"
        found = fqlower.fingerprint(replayed.program)
        assert found == output, f"a damaged log replayed to another program: {found[:12]} != {output[:12]}"
        assert replayed.module.code == code
    assert snapshot.differences(model) == [], "replay changed the model"
    assert (_maps_record(qconfig_map), _maps_record(scope)) == maps, "replay changed the maps"


@given(damaged_logs())
def test_replay_refuses_damaged_logs_precisely(damaged: DamagedLog) -> None:
    check_replay(damaged)


@given(retyped_logs())
def test_replay_refuses_logs_with_retyped_values_precisely(damaged: DamagedLog) -> None:
    """As above, for logs that stay valid JSON but hold a value of another type or form
    somewhere (a list where a node name belongs, an unknown device, a broken tensor)."""
    check_replay(damaged)
