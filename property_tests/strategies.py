"""Hypothesis strategies for property tests: random FX GraphModules that run.

`fx_graph_modules()` draws an `Example(module, inputs)`: a GraphModule built by
writing a `torch.fx.Graph` node by node (no tracing) over a root module with
nested submodules, a shared module, parameters and buffers, plus inputs it runs
on. Every node is evaluated eagerly while the graph is built, so each drawn op
is checked against the real value of its inputs (shape, contiguity, type) and
the finished module runs by construction.

Covered: placeholders (with and without annotations, drawn names, and a
trailing one with a default value); call_function (operator.add/mul/sub and
torch.add/mul with tensors, broadcast 1-d tensors, scalar constants including
-0.0, inf and nan, or scalar nodes; torch.add with `alpha=`; torch.relu,
torch.sigmoid, F.relu; torch.cat with a list and `dim=`; torch.sum with
`dim=`/`keepdim=` in either order; F.softmax with `dim=`; getitem with slices,
Ellipsis and None, and on sizes); call_method (view/reshape with varargs, a
tuple, a list, a size node or an int node; transpose with args or kwargs; size;
relu, float, contiguous; `to` with dtype/device kwargs); call_module (nested
`blocks.<i>.lin`, whole `blocks.<i>` Blocks, nn.ReLU, a `shared` Linear that may
be called many times and is also reachable as `alias`); get_attr (root and
nested parameters, buffers and non-persistent buffers, a nested module's weight);
type annotations on some nodes; and an output that is one value, a tuple, a list or a dict, possibly
nested. Node names are left to FX or drawn from awkward ones (`add_1`, `input`,
`torch`, `output`, ...); the output node is always named by FX, since
`copy.deepcopy` of a GraphModule renames it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

__all__ = ["Block", "Example", "fx_graph_modules", "run"]


class Block(nn.Module):
    """lin(x) * scale * gain + shift: a nested module with a parameter, a buffer and a
    non-persistent buffer (state that is not in state_dict) of its own."""

    def __init__(self, channels: int, generator: torch.Generator):
        super().__init__()
        self.lin = _linear(channels, generator)
        self.scale = nn.Parameter(torch.randn(channels, generator=generator))
        self.register_buffer("shift", torch.randn(channels, generator=generator))
        self.register_buffer("gain", torch.rand(channels, generator=generator) + 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale * self.gain + self.shift


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
    root.alias = root.shared  # one module at two paths
    root.act = nn.ReLU()
    root.bias = nn.Parameter(torch.randn(channels, generator=generator))
    root.register_buffer("running", torch.randn(channels, generator=generator))
    root.register_buffer("offset", torch.randn(channels, generator=generator), persistent=False)
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
        module = self.module
        shapes = ", ".join(str(list(value.shape)) for value in self.inputs)
        modules = ", ".join(f"{path}: {type(sub).__name__}" for path, sub in module.named_modules() if path)
        mode = "training" if module.training else "eval"
        code = module.code.strip("\n").rstrip()
        return f"Example: {type(module).__name__} ({mode}) on inputs [{shapes}]; modules {{{modules}}}\n{code}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints falsifying examples with this (not the attrs fields)."""
        for index, line in enumerate(repr(self).splitlines()):
            if index:
                printer.break_()
            printer.text(line)


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
NAMES = st.none() | st.sampled_from(NODE_NAMES)
BOOLEANS = st.booleans()


class _Builder:
    """Graph, root module and the eager value of every node built so far."""

    root: nn.Module
    channels: int

    def __init__(self, draw: Callable[[st.SearchStrategy], Any]):
        self.draw = draw
        self.graph = torch.fx.Graph()
        self.values: dict[torch.fx.Node, Any] = {}

    # values ------------------------------------------------------------------------------
    def tensors(self, where: Callable[[torch.Tensor], bool] = lambda value: True) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if isinstance(value, torch.Tensor) and where(value)]

    def scalars(self) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if type(value) in (int, float)]

    def sizes(self) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if isinstance(value, torch.Size)]

    def ints(self) -> list[torch.fx.Node]:
        return [node for node, value in self.values.items() if type(value) is int]

    def pick(self, items: Sequence[Any]) -> Any:
        """One of `items`. Drawn as an index: a strategy built per call is slow."""
        return items[self.integer(0, len(items) - 1)]

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))  # st.integers is cached by its bounds

    def flag(self) -> bool:
        return self.draw(BOOLEANS)

    def name(self) -> str | None:
        """A drawn node name, or None to let FX name the node after its target."""
        return self.draw(NAMES)

    # nodes -------------------------------------------------------------------------------
    def add(self, op: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> torch.fx.Node:
        kwargs = kwargs or {}
        value = self.evaluate(op, target, args, kwargs)
        annotation = torch.Tensor if isinstance(value, torch.Tensor) and self.integer(0, 3) == 0 else None
        node = self.graph.create_node(op, target, args, kwargs, name=self.name(), type_expr=annotation)
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


def _shape_args(b: _Builder, value: torch.Tensor) -> tuple[Any, ...]:
    """Arguments of view/reshape to a drawn shape of the same size."""
    numel = value.numel()
    forms: list[tuple[Any, ...]] = []
    divisors = [d for d in range(1, numel + 1) if numel % d == 0]
    first = b.pick(divisors)
    forms += [(-1,), (first, -1), (first, numel // first), ((first, -1),), ([numel // first, first],)]
    forms += [(size,) for size in b.sizes() if b.values[size].numel() == numel]
    forms += [(n, -1) for n in b.ints() if b.values[n] > 0 and numel % b.values[n] == 0]
    return b.pick(forms)


def _binary(b: _Builder) -> torch.fx.Node | None:
    a = b.pick(b.tensors())
    shape = b.values[a].shape
    partners = b.tensors(lambda v: v.shape == shape or (v.dim() == 1 and shape and v.shape == shape[-1:]))
    kind = b.pick(("constant", "tensor", "scalar node"))
    if kind == "tensor" and partners:
        other = b.pick(partners)
    elif kind == "scalar node" and b.scalars():
        other = b.pick(b.scalars())
    else:
        other = b.pick(SCALARS)
    target = b.pick([operator.add, operator.mul, operator.sub, torch.add, torch.mul])
    if target is torch.add and b.flag():
        return b.add("call_function", torch.add, (a, other), {"alpha": b.pick([2, -1, 0.5])})
    if target in (operator.add, operator.mul, operator.sub) and kind != "tensor" and b.flag():
        return b.add("call_function", target, (other, a))
    return b.add("call_function", target, (a, other))


def _unary(b: _Builder) -> torch.fx.Node | None:
    target = b.pick([torch.relu, torch.sigmoid, F.relu])
    return b.add("call_function", target, (b.pick(b.tensors()),))


def _cat(b: _Builder) -> torch.fx.Node | None:
    first = b.pick(b.tensors(lambda v: v.dim() >= 1))
    shape = b.values[first].shape
    same = b.tensors(lambda v: v.shape == shape)
    rest = [b.pick(same) for _ in range(b.integer(1, 2))]
    dim = b.integer(-len(shape), len(shape) - 1)
    if b.flag():
        return b.add("call_function", torch.cat, ([first, *rest],), {"dim": dim})
    return b.add("call_function", torch.cat, ([first, *rest], dim))


def _sum(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() >= 1))
    dim = b.integer(-b.values[x].dim(), b.values[x].dim() - 1)
    kwargs = {"dim": dim, "keepdim": b.flag()}
    if b.flag():
        kwargs = dict(reversed(kwargs.items()))  # kwargs order shows in the code
    return b.add("call_function", torch.sum, (x,), kwargs)


def _softmax(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() >= 1))
    return b.add("call_function", F.softmax, (x,), {"dim": -1})


def _slice(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() in (1, 2)))
    last = b.values[x].shape[-1]
    start = b.integer(0, last - 1)
    stop = b.integer(start + 1, last)
    if b.values[x].dim() == 1:
        index: Any = slice(start, stop)
    else:
        columns = slice(start, stop)
        index = b.pick(((slice(None), columns), (Ellipsis, columns), (slice(None), None, columns)))
    return b.add("call_function", operator.getitem, (x, index))


def _size_item(b: _Builder) -> torch.fx.Node | None:
    size = b.pick(b.sizes())
    return b.add("call_function", operator.getitem, (size, b.integer(0, len(b.values[size]) - 1)))


def _view(b: _Builder) -> torch.fx.Node | None:
    method = b.pick(["view", "reshape"])
    candidates = b.tensors(lambda v: v.is_contiguous()) if method == "view" else b.tensors()
    if not candidates:
        return None
    x = b.pick(candidates)
    return b.add("call_method", method, (x, *_shape_args(b, b.values[x])))


def _transpose(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() == 2))
    if b.flag():
        return b.add("call_method", "transpose", (x,), {"dim0": 0, "dim1": 1})
    return b.add("call_method", "transpose", (x, b.pick([0, -2]), b.pick([1, -1])))


def _size(b: _Builder) -> torch.fx.Node | None:
    x = b.pick(b.tensors(lambda v: v.dim() >= 1))
    if b.flag():
        return b.add("call_method", "size", (x,))
    return b.add("call_method", "size", (x, b.integer(0, b.values[x].dim() - 1)))


def _method(b: _Builder) -> torch.fx.Node | None:
    method = b.pick(("relu", "float", "contiguous", "to"))
    x = b.pick(b.tensors())
    if method == "to":
        kwargs = ({"dtype": torch.float32}, {"device": torch.device("cpu")}, {"dtype": torch.float32, "copy": True})
        return b.add("call_method", "to", (x,), b.pick(kwargs))
    return b.add("call_method", method, (x,))


def _call_module(b: _Builder) -> torch.fx.Node | None:
    channels = b.channels
    blocks = range(len(b.root.blocks))
    paths = ["act", "shared", "shared", "alias", *(f"blocks.{i}.lin" for i in blocks), *(f"blocks.{i}" for i in blocks)]
    path = b.pick(paths)
    if path == "act":
        return b.add("call_module", path, (b.pick(b.tensors()),))
    candidates = b.tensors(lambda v: v.dim() >= 1 and v.shape[-1] == channels)
    if not candidates:
        return None
    return b.add("call_module", path, (b.pick(candidates),))


def _get_attr(b: _Builder) -> torch.fx.Node | None:
    blocks = range(len(b.root.blocks))
    paths = ["bias", "running", "offset"]
    for i in blocks:
        paths += [f"blocks.{i}.scale", f"blocks.{i}.shift", f"blocks.{i}.gain", f"blocks.{i}.lin.weight"]
    return b.add("get_attr", b.pick(paths), ())


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
    ok = ["binary", "unary", "view", "method", "call_module", "call_module", "get_attr", "get_attr"]
    if any(t.dim() >= 1 for t in tensors):
        ok += ["cat", "sum", "softmax", "size"]
    if any(t.dim() in (1, 2) for t in tensors):
        ok.append("slice")
    if any(t.dim() == 2 for t in tensors):
        ok.append("transpose")
    if b.sizes():
        ok.append("size_item")
    return ok


def _distinct(b: _Builder, items: Sequence[Any], count: int) -> list[Any]:
    left = list(items)
    return [left.pop(b.integer(0, len(left) - 1)) for _ in range(count)]


def _output(b: _Builder) -> Any:
    nodes = list(b.values)
    form = b.pick(("single", "tuple", "list", "dict"))
    if form == "single":
        return nodes[-1] if b.flag() else b.pick(nodes)
    picked: list[Any] = [b.pick(nodes) for _ in range(b.integer(1, 3))]
    if b.integer(0, 3) == 0:  # a nested container
        picked.append(b.pick(((picked[0],), [picked[-1]], {"inner": picked[0]})))
    if form == "tuple":
        return tuple(picked)
    if form == "list":
        return list(picked)
    return dict(zip(_distinct(b, OUTPUT_KEYS, len(picked)), picked))


@st.composite
def fx_graph_modules(draw: Callable[[st.SearchStrategy], Any], max_nodes: int = 12) -> Example:
    """Random runnable GraphModules with example inputs (see the module docstring)."""
    b = _Builder(draw)
    generator = torch.Generator().manual_seed(b.integer(0, 2**32 - 1))
    b.channels = b.pick((4, 2, 3, 6))
    batch = b.pick((2, 1, 3))
    b.root = _make_root(
        b.channels, blocks=b.integer(1, 2), container=b.pick(("sequential", "modulelist")), generator=generator
    )

    inputs = []
    for target in _distinct(b, PLACEHOLDER_TARGETS, b.integer(1, 3)):
        annotation = b.pick((None, torch.Tensor))
        node = b.graph.create_node("placeholder", target, name=b.name(), type_expr=annotation)
        value = torch.randn(batch, b.channels, generator=generator)
        b.values[node] = value
        inputs.append(value)
    if b.integer(0, 3) == 0:  # a trailing input with a default value, used as a scalar
        default = b.pick((2.0, -0.5, 3))
        node = b.graph.create_node("placeholder", "alpha", (default,), name=b.name())
        b.values[node] = default

    for _ in range(b.integer(1, max_nodes)):
        OPS[b.pick(_applicable(b))](b)

    b.graph.output(_output(b))
    b.graph.lint()
    module = torch.fx.GraphModule(b.root, b.graph, class_name=b.pick(("GraphModule", "Generated")))
    module.train(b.flag())
    tensors = {
        node.name: (tuple(value.shape), value.dtype)
        for node, value in b.values.items()
        if isinstance(value, torch.Tensor)
    }
    return Example(module=module, inputs=tuple(inputs), tensors=tensors)
