"""Mutations of a model's graph: rewire, drop, dangle, reorder, swap a target.
Each is a record that prints as one line. See test_fuzz.py."""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn.functional as F
from hypothesis import strategies as st
from fuzz_subject import Slot, Subject, _LOCAL_FUNCTION, callable_name, format_slot, pick, set_slot, slots


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
