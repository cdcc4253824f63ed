"""Hypothesis strategies for property tests: random FX GraphModules that run.

`fx_graph_modules()` draws an `Example(module, inputs)`: a GraphModule built by
writing a `torch.fx.Graph` node by node (no tracing) over a root module with
nested submodules, a shared module, parameters and buffers, plus inputs it runs
on. Every node is evaluated eagerly while the graph is built, so each drawn op
is checked against the real value of its inputs (shape, contiguity, type) and
the finished module runs by construction.

Covered: placeholders (with and without type annotations and drawn names),
call_function (operator.add/mul/sub with tensors or scalars, torch.add with
`alpha=`, torch.relu, torch.sigmoid, F.relu, torch.cat with a list and `dim=`,
torch.sum with `dim=`/`keepdim=`, F.softmax with `dim=`, getitem with slices and
on sizes), call_method (view/reshape with varargs, tuple, list, size-node or
int-node shapes, transpose with args or kwargs, size, relu, float, contiguous),
call_module (nested `blocks.<i>.lin`, whole `blocks.<i>` blocks, nn.ReLU, and a
`shared` Linear that may be called many times), get_attr (root and nested
parameters, persistent buffers, a nested module's weight), and an output that is
one value, a tuple, a list or a dict. Node names are left to FX or drawn from
a list of awkward ones (`add_1`, `input`, `torch`, `output`, ...).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

__all__ = ["Block", "Example", "fx_graph_modules", "run"]


class Block(nn.Module):
    """lin(x) * scale + shift: a nested module with a parameter and a buffer of its own."""

    def __init__(self, channels: int, generator: torch.Generator):
        super().__init__()
        self.lin = _linear(channels, generator)
        self.scale = nn.Parameter(torch.randn(channels, generator=generator))
        self.register_buffer("shift", torch.randn(channels, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale + self.shift


def _linear(channels: int, generator: torch.Generator) -> nn.Linear:
    lin = nn.Linear(channels, channels)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(channels, channels, generator=generator))
        lin.bias.copy_(torch.randn(channels, generator=generator))
    return lin


def _make_root(channels: int, blocks: int, container: str, generator: torch.Generator) -> nn.Module:
    root = nn.Module()
    made = [Block(channels, generator) for _ in range(blocks)]
    root.blocks = nn.Sequential(*made) if container == "sequential" else nn.ModuleList(made)
    root.shared = _linear(channels, generator)
    root.act = nn.ReLU()
    root.bias = nn.Parameter(torch.randn(channels, generator=generator))
    root.register_buffer("running", torch.randn(channels, generator=generator))
    return root


def _lookup(root: nn.Module, path: str) -> Any:
    value: Any = root
    for part in path.split("."):
        value = getattr(value, part)
    return value


@attrs.frozen(repr=False, eq=False)
class Example:
    """A generated GraphModule and inputs it runs on.

    `tensors` maps the name of every tensor-valued node (except the output) to
    (shape, dtype), in graph order, for tests that rewire edges.
    """

    module: torch.fx.GraphModule
    inputs: tuple[torch.Tensor, ...]
    tensors: Mapping[str, tuple[tuple[int, ...], torch.dtype]]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{list(value.shape)}" for value in self.inputs)
        modules = ", ".join(
            f"{path}: {type(module).__name__}" for path, module in self.module.named_modules() if path
        )
        code = self.module.code.strip("\n")
        return (
            f"Example(class_name={type(self.module).__name__!r}, training={self.module.training}, "
            f"inputs=[{shapes}], modules={{{modules}}})\n{code}\n"
        )


def run(example: Example) -> Any:
    """The module's output on the example's inputs."""
    return example.module(*example.inputs)


# --- drawing -------------------------------------------------------------------------------

# Names FX must accept or fix up: numeric suffixes, builtins, names FX reserves
# (`torch`, `inf`), and names of ops or modules it would generate itself.
NODE_NAMES = (
    "x",
    "y",
    "h",
    "add",
    "add_1",
    "add_01",
    "mul_2",
    "relu",
    "out",
    "output",
    "input",
    "sum",
    "float",
    "torch",
    "inf",
    "getitem",
    "size",
    "view",
    "blocks_0_lin",
    "shared",
    "bias",
    "_",
    "_tmp",
    "X1",
    "v_0",
)
PLACEHOLDER_TARGETS = ("x", "y", "z", "inp", "input", "x_1", "a_0")
SCALARS = (0.5, 2.0, -1.0, -0.0, 1e-3, 3, 0, -2, float("inf"), float("nan"))
OUTPUT_KEYS = ("out", "a", "b", "logits", "x_1")


class _Builder:
    """Graph, root module and the eager value of every node built so far."""

    def __init__(self, draw: Callable[[st.SearchStrategy], Any], root: nn.Module, channels: int):
        self.draw = draw
        self.root = root
        self.channels = channels
        self.graph = torch.fx.Graph()
        self.values: dict[torch.fx.Node, Any] = {}

    # values ------------------------------------------------------------------------------
    def tensors(self, where: Callable[[torch.Tensor], bool] = lambda value: True) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if isinstance(value, torch.Tensor) and where(value)]

    def sizes(self) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if isinstance(value, torch.Size)]

    def ints(self) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if type(value) is int]

    def pick(self, nodes: list[torch.fx.Node]) -> torch.fx.Node:
        return self.draw(st.sampled_from(nodes))

    def name(self) -> str | None:
        """A drawn node name, or None to let FX name the node after its target."""
        return self.draw(st.none() | st.sampled_from(NODE_NAMES))

    # nodes -------------------------------------------------------------------------------
    def add(self, op: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> torch.fx.Node:
        kwargs = kwargs or {}
        value = self.evaluate(op, target, args, kwargs)
        node = self.graph.create_node(op, target, args, kwargs, name=self.name())
        self.values[node] = value
        return node

    def evaluate(self, op: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        real_args = torch.fx.node.map_arg(args, self.values.__getitem__)
        real_kwargs = torch.fx.node.map_arg(kwargs, self.values.__getitem__)
        with torch.no_grad():
            if op == "call_function":
                return target(*real_args, **real_kwargs)
            if op == "call_method":
                receiver, *rest = real_args
                return getattr(receiver, target)(*rest, **real_kwargs)
            if op == "call_module":
                return self.root.get_submodule(target)(*real_args, **real_kwargs)
            if op == "get_attr":
                return _lookup(self.root, target)
        raise AssertionError(op)


def _shape_args(b: _Builder, value: torch.Tensor) -> tuple[Any, ...] | None:
    """Arguments of view/reshape to a drawn shape of the same size."""
    numel = value.numel()
    forms: list[tuple[Any, ...]] = []
    divisors = [d for d in range(1, numel + 1) if numel % d == 0]
    first = b.draw(st.sampled_from(divisors))
    forms += [(-1,), (first, -1), (first, numel // first), ((first, -1),), ([numel // first, first],)]
    forms += [(size,) for size in b.sizes() if b.values[size].numel() == numel]
    forms += [(n, -1) for n in b.ints() if b.values[n] > 0 and numel % b.values[n] == 0]
    return b.draw(st.sampled_from(forms))


def _binary(b: _Builder) -> torch.fx.Node | None:
    a = b.pick(b.tensors())
    shape = b.values[a].shape
    partners = b.tensors(lambda v: v.shape == shape or (v.dim() == 1 and shape and v.shape == shape[-1:]))
    other = b.draw(st.sampled_from(partners) | st.sampled_from(SCALARS)) if partners else b.draw(st.sampled_from(SCALARS))
    target = b.draw(st.sampled_from([operator.add, operator.mul, operator.sub, torch.add, torch.mul]))
    if target is torch.add and b.draw(st.booleans()):
        return b.add("call_function", torch.add, (a, other), {"alpha": b.draw(st.sampled_from([2, -1, 0.5]))})
    if target in (operator.add, operator.mul, operator.sub) and not isinstance(other, torch.fx.Node) and b.draw(st.booleans()):
        return b.add("call_function", target, (other, a))
    return b.add("call_function", target, (a, other))


def _unary(b: _Builder) -> torch.fx.Node | None:
    target = b.draw(st.sampled_from([torch.relu, torch.sigmoid, F.relu]))
    return b.add("call_function", target, (b.pick(b.tensors()),))


def _cat(b: _Builder) -> torch.fx.Node | None:
    first = b.pick(b.tensors(lambda v: v.dim() >= 1))
    shape = b.values[first].shape
    same = b.tensors(lambda v: v.shape == shape)
    rest = b.draw(st.lists(st.sampled_from(same), min_size=1, max_size=2))
    dim = b.draw(st.integers(-len(shape), len(shape) - 1))
    if b.draw(st.booleans()):
        return b.add("call_function", torch.cat, ([first, *rest],), {"dim": dim})
    return b.add("call_function", torch.cat, ([first, *rest], dim))


def _sum(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() >= 1))
    dim = b.draw(st.integers(-b.values[x].dim(), b.values[x].dim() - 1))
    return b.add("call_function", torch.sum, (x,), {"dim": dim, "keepdim": b.draw(st.booleans())})


def _softmax(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() >= 1))
    return b.add("call_function", F.softmax, (x,), {"dim": -1})


def _slice(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() in (1, 2)))
    last = b.values[x].shape[-1]
    start = b.draw(st.integers(0, last - 1))
    stop = b.draw(st.integers(start + 1, last))
    index = slice(start, stop) if b.values[x].dim() == 1 else (slice(None), slice(start, stop))
    return b.add("call_function", operator.getitem, (x, index))


def _size_item(b: _Builder) -> torch.fx.Node | None:
    size = b.pick(b.sizes())
    return b.add("call_function", operator.getitem, (size, b.draw(st.integers(0, len(b.values[size]) - 1))))


def _view(b: _Builder) -> torch.fx.Node | None:
    method = b.draw(st.sampled_from(["view", "reshape"]))
    candidates = b.tensors(lambda v: v.is_contiguous()) if method == "view" else b.tensors()
    if not candidates:
        return None
    x = b.pick(candidates)
    return b.add("call_method", method, (x, *_shape_args(b, b.values[x])))


def _transpose(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() == 2))
    if b.draw(st.booleans()):
        return b.add("call_method", "transpose", (x,), {"dim0": 0, "dim1": 1})
    return b.add("call_method", "transpose", (x, b.draw(st.sampled_from([0, -2])), b.draw(st.sampled_from([1, -1]))))


def _size(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() >= 1))
    if b.draw(st.booleans()):
        return b.add("call_method", "size", (x,))
    return b.add("call_method", "size", (x, b.draw(st.integers(0, b.values[x].dim() - 1))))


def _method(b: _Builder) -> torch.fx.Node | None:
    return b.add("call_method", b.draw(st.sampled_from(["relu", "float", "contiguous"])), (b.pick(b.tensors()),))


def _call_module(b: _Builder) -> torch.fx.Node | None:
    channels = b.channels
    blocks = range(len(b.root.blocks))
    paths = ["act", "shared", "shared"] + [f"blocks.{i}.lin" for i in blocks] + [f"blocks.{i}" for i in blocks]
    path = b.draw(st.sampled_from(paths))
    if path == "act":
        return b.add("call_module", path, (b.pick(b.tensors()),))
    candidates = b.tensors(lambda v: v.dim() >= 1 and v.shape[-1] == channels)
    if not candidates:
        return None
    return b.add("call_module", path, (b.pick(candidates),))


def _get_attr(b: _Builder) -> torch.fx.Node | None:
    blocks = range(len(b.root.blocks))
    paths = ["bias", "running"]
    for i in blocks:
        paths += [f"blocks.{i}.scale", f"blocks.{i}.shift", f"blocks.{i}.lin.weight"]
    return b.add("get_attr", b.draw(st.sampled_from(paths)), ())


OPS: dict[str, Callable[[_Builder], torch.fx.Node | None]] = {
    "binary": _binary,
    "unary": _unary,
    "cat": _cat,
    "sum": _sum,
    "softmax": _softmax,
    "slice": _slice,
    "size_item": _size_item,
    "view": _view,
    "transpose": _transpose,
    "size": _size,
    "method": _method,
    "call_module": _call_module,
    "get_attr": _get_attr,
}


def _applicable(b: _Builder) -> list[str]:
    tensors = [b.values[node] for node in b.tensors()]
    ok = ["binary", "unary", "view", "method", "call_module", "get_attr"]
    if any(t.dim() >= 1 for t in tensors):
        ok += ["cat", "sum", "softmax", "size"]
    if any(t.dim() in (1, 2) for t in tensors):
        ok.append("slice")
    if any(t.dim() == 2 for t in tensors):
        ok.append("transpose")
    if b.sizes():
        ok.append("size_item")
    return ok


def _output(b: _Builder) -> Any:
    nodes = list(b.values)
    form = b.draw(st.sampled_from(["single", "tuple", "list", "dict"]))
    if form == "single":
        return nodes[-1] if b.draw(st.booleans()) else b.pick(nodes)
    picked = b.draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=3))
    if form == "tuple":
        return tuple(picked)
    if form == "list":
        return list(picked)
    keys = b.draw(st.lists(st.sampled_from(OUTPUT_KEYS), min_size=len(picked), max_size=len(picked), unique=True))
    return dict(zip(keys, picked))


@st.composite
def fx_graph_modules(draw: Callable[[st.SearchStrategy], Any], max_nodes: int = 12) -> Example:
    """Random runnable GraphModules with example inputs (see the module docstring)."""
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    channels = draw(st.sampled_from([4, 2, 3, 6]))
    batch = draw(st.sampled_from([2, 1, 3]))
    root = _make_root(
        channels,
        blocks=draw(st.integers(1, 2)),
        container=draw(st.sampled_from(["sequential", "modulelist"])),
        generator=generator,
    )
    b = _Builder(draw, root, channels)

    inputs = []
    targets = draw(st.lists(st.sampled_from(PLACEHOLDER_TARGETS), min_size=1, max_size=3, unique=True))
    for target in targets:
        annotation = draw(st.sampled_from([None, torch.Tensor]))
        node = b.graph.create_node("placeholder", target, name=b.name(), type_expr=annotation)
        value = torch.randn(batch, channels, generator=generator)
        b.values[node] = value
        inputs.append(value)

    for _ in range(draw(st.integers(1, max_nodes))):
        OPS[draw(st.sampled_from(_applicable(b)))](b)

    b.graph.output(_output(b))
    b.graph.lint()
    module = torch.fx.GraphModule(root, b.graph, class_name=draw(st.sampled_from(["GraphModule", "Generated"])))
    module.train(draw(st.booleans()))
    tensors = {
        node.name: (tuple(value.shape), value.dtype)
        for node, value in b.values.items()
        if isinstance(value, torch.Tensor)
    }
    return Example(module=module, inputs=tuple(inputs), tensors=tensors)
