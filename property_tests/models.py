"""Hypothesis strategies for random float models, quantization recipes and reference models.

* :func:`float_models` draws a :class:`GeneratedModel`: a real ``nn.Module`` whose
  forward interprets a fixed list of *blocks* (a random DAG of 1-6 of them), each an
  instance of a pattern family fqlower lowers (see :data:`BLOCK_KINDS`).
* :func:`recipes` draws a :class:`Recipe`: static int8 (fbgemm/x86/qnnpack/onednn,
  per-channel or per-tensor weights), dynamic int8, dynamic fp16, static fp16, or
  weight-only embeddings alone; optionally weight-only embeddings on top, and ``None``
  qconfigs for some of the model's submodules.
* :func:`examples` composes both, calibrates and captures the reference model with
  :func:`fqlower.reference.reference_model` and returns an :class:`Example`.

Readable failures: ``GeneratedModel.source()`` is a self-contained Python program that
rebuilds the model (class definitions with ``__init__`` and ``forward`` written out, the
seed, and ``make_inputs``); it is the model's repr. An :class:`Example` prints as that
program followed by the recipe and the ``reference_model`` call, so a shrunk failure
is a reproducer you can paste.

Streams. Every value a block reads or writes is a float tensor ``[batch, *shape]``
whose per-sample ``shape`` is known while drawing: rank 1 ``(features,)``, rank 2
``(channels, length)`` (conv1d/LSTM layout), rank 3 ``(channels, h, w)`` and rank 4
``(channels, d, h, w)``; or an int64 index tensor ``[batch, length]`` for embeddings.
A block picks its input among the earlier values it accepts (the most recent first,
so shrinking makes chains), or asks for a fresh model input of a shape it accepts;
flatten/unflatten/squeeze/unsqueeze blocks convert between ranks. Models never
depend on the batch size (reshapes use ``-1`` or ``size(0)``/``shape[0]``), so they
are calibrated on a large batch (:data:`CALIBRATION_BATCH`: torch's HistogramObserver
takes ~0.3 s per observer on an 8-element tensor and ~3 ms on 8 k) and checked on a
small one (:data:`CHECK_BATCH`). The model returns every value no block consumed.

Blocks. A block's ``body`` is Python statements (``v3 = self.b3_conv(v1)``), its
``init`` the constructor expressions of its modules/parameters. Unscoped blocks put
them on the model (``b3_conv``); scoped ones in their own submodule (class ``Block3``)
one to three levels deep, in containers named as real models name them (``b3``,
``layer2.0``, ``encoder.layers.1``; see scopes.py), so functional ops get a module
scope and ``set_module_name`` with its full path (or a container's) switches a whole
block off. ``GeneratedModel.forward`` interprets the blocks in order
(exec of the compiled statements; no data-dependent control flow), so
``torch.fx.symbolic_trace`` and ``prepare_fx`` trace it like hand-written code, and
``source()`` prints the very same statements.

Shrinking: the block count is drawn first and each block is one hypothesis span
(hypothesis lowers the count and deletes a span together, so any block can go); every
choice is an integer index into a list ordered simple -> complex (kinds, variants,
inputs: the most recent value first; placements: flat first), flags shrink to False
(bias on), and an input choice always makes the same draws, so deleting the block
that created an input does not shift the choices after it. Failures shrink to one or two simple blocks.

Recipes are half static int8 (the recipe most lowering passes need), shrinking to it.

torch 2.13 combinations that always fail in ``prepare_fx`` are unreachable:

* a grouped ``nn.ConvTranspose`` followed by BatchNorm (``fuse_conv_bn_weights`` with
  ``transpose=True`` mis-shapes grouped weights): never drawn;
* ``get_default_qconfig_mapping('onednn')`` with transposed convs (per-channel
  weights: prepare_fx rejects them for modules; no prepack for functionals): onednn
  recipes give transposed convs per-tensor weights, as fbgemm/x86 mappings do;
* onednn's backend config (opt-in, see :func:`recipes`) with ``nn.Tanh`` (LinearTanh
  fusion raises LookupError: Tanh's fixed-qparams qconfig differs from Linear's) or
  with ``m(x) + m(x)`` (its conv-add root-node getter fails to unpack): not offered
  for such models.

The same drawing code runs on a ``random.Random`` (:func:`random_model_spec`,
:func:`random_recipe`) for tests that need many cheap draws without hypothesis.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import random
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
import torch.ao.nn.intrinsic as nni
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

from scopes import PLACEMENTS, Tree, access, attach, attach_source

from fqlower.reference import ReferenceModel, quiet_torch_quantization, reference_model

__all__ = [
    "BLOCK_KINDS",
    "CALIBRATION_BATCH",
    "CHECK_BATCH",
    "RECIPE_KINDS",
    "Block",
    "Draw",
    "Example",
    "GeneratedModel",
    "ModelSpec",
    "Recipe",
    "Value",
    "block_tags",
    "build_example",
    "draw_model_spec",
    "draw_recipe",
    "examples",
    "float_models",
    "model_specs",
    "random_model_spec",
    "random_recipe",
    "recipes",
    "runnable",
    "single_threaded",
]

CALIBRATION_BATCH = 256
CHECK_BATCH = 2
NUM_EMBEDDINGS = 10
MAX_NUMEL = 288  # per-sample size above which blocks that grow a value are not offered

# Per-sample shapes of fresh model inputs by rank, simplest first; all rows equally long.
FRESH_SHAPES: dict[int, tuple[tuple[int, ...], ...]] = {
    1: ((4,), (3,), (6,), (8,), (5,), (2,)),
    2: ((3, 5), (2, 4), (4, 6), (3, 4), (2, 6), (4, 5)),
    3: ((3, 5, 5), (2, 4, 4), (4, 6, 6), (3, 4, 6), (2, 5, 4), (4, 5, 6)),
    4: ((2, 4, 4, 4), (3, 3, 3, 3), (2, 3, 4, 3), (3, 4, 3, 4), (2, 4, 3, 3), (3, 3, 4, 4)),
}

# Names the block statements and constructor expressions are evaluated with; the
# rendered source imports exactly these.
NAMESPACE: dict[str, Any] = {"torch": torch, "nn": nn, "F": F}


# --------------------------------------------------------------------------- specs


@attrs.frozen
class Value:
    """A value of the model: a model input or a block's output.

    ``shape`` is per sample (the batch dimension is left out); ``index`` marks int64
    embedding indices; ``contiguous`` is a conservative guess (False means "maybe
    not"), used only to keep ``view`` away from possibly non-contiguous tensors.
    """

    name: str
    shape: tuple[int, ...]
    index: bool = False
    contiguous: bool = True

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@attrs.frozen
class Block:
    """One drawn block: Python statements plus the modules/parameters they use.

    ``body`` assigns ``output`` from ``inputs``; ``$role`` in a statement stands for
    the block's attribute ``role``: ``self.b<i>_<role>`` on the model, or
    ``self.<role>`` inside the block's own submodule at ``path`` when ``scoped``
    (``containers``: constructors of the containers above it, see scopes.py).
    ``init`` lists ``(role, constructor expression)`` in creation order.
    """

    index: int
    kind: str
    variant: str
    inputs: tuple[str, ...]
    output: str
    shape: tuple[int, ...]
    init: tuple[tuple[str, str], ...]
    body: tuple[str, ...]
    path: tuple[str, ...] = ()  # () when flat
    containers: tuple[str, ...] = ()
    contiguous: bool = True  # see Value.contiguous

    @property
    def scoped(self) -> bool:
        return bool(self.path)

    @property
    def scope(self) -> str:
        """The scope module's dotted path (``set_module_name`` takes it); ``b<i>`` when flat."""
        return ".".join(self.path) if self.path else f"b{self.index}"

    def statements(self, *, inside_scope: bool) -> list[str]:
        prefix = "self." if inside_scope else f"self.b{self.index}_"
        return [re.sub(r"\$(\w+)", lambda m: prefix + m.group(1), line) for line in self.body]


@attrs.frozen
class ModelSpec:
    inputs: tuple[Value, ...]
    blocks: tuple[Block, ...]
    outputs: tuple[str, ...]
    seed: int


# --------------------------------------------------------------------------- the model


@functools.cache
def _compiled(block: Block, inside_scope: bool) -> Any:
    return compile("\n".join(block.statements(inside_scope=inside_scope)), f"<block {block.index}>", "exec")


def _execute(block: Block, owner: nn.Module, env: dict[str, Any], inside_scope: bool) -> None:
    """Run the block's statements with ``self`` = ``owner``; they assign ``env[block.output]``."""
    env["self"] = owner
    exec(_compiled(block, inside_scope), env)


class BlockScope(nn.Module):
    """Base of the submodule of a scoped block: its forward runs the block."""

    block: Block

    def forward(self, *args: Any) -> Any:
        env = dict(NAMESPACE)
        env.update(zip(self.block.inputs, args))
        _execute(self.block, self, env, inside_scope=True)
        return env[self.block.output]


@functools.cache
def _scope_class(index: int) -> type[BlockScope]:
    """``Block<i>``, as named in the rendered source (module types then match)."""
    return type(f"Block{index}", (BlockScope,), {"__module__": __name__})


class GeneratedModel(nn.Module):
    """A float model that interprets a :class:`ModelSpec` block by block.

    Built with a forked RNG seeded with ``spec.seed`` (the global RNG is untouched),
    in eval mode. Construct with :func:`GeneratedModel.build` to get a subclass whose
    ``forward`` names its inputs (``forward(self, x, x1, idx)``), as tracing needs.
    """

    spec: ModelSpec

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            for block in spec.blocks:
                if block.scoped:
                    scope = _scope_class(block.index)()
                    scope.block = block
                    for role, constructor in block.init:
                        setattr(scope, role, eval(constructor, dict(NAMESPACE)))
                    attach(self, block.path, block.containers, scope, NAMESPACE)
                else:
                    for role, constructor in block.init:
                        setattr(self, f"b{block.index}_{role}", eval(constructor, dict(NAMESPACE)))
        self.eval()

    @staticmethod
    def build(spec: ModelSpec) -> GeneratedModel:
        return _model_class(tuple(value.name for value in spec.inputs))(spec)

    def run_blocks(self, *inputs: Any) -> Any:
        """What ``forward`` returns: the unconsumed values, one or a tuple."""
        env = self.run_values(*inputs)
        outputs = tuple(env[name] for name in self.spec.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def run_values(self, *inputs: Any) -> dict[str, Any]:
        """Every value by name (inputs and block outputs), plus scratch names."""
        env = dict(NAMESPACE)
        env.update(zip((value.name for value in self.spec.inputs), inputs))
        for block in self.spec.blocks:
            if block.scoped:
                env[block.output] = self.get_submodule(block.scope)(*(env[name] for name in block.inputs))
            else:
                _execute(block, self, env, inside_scope=False)
        return env

    def make_inputs(self, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        """Inputs for ``batch`` samples: ``randn`` floats and ``randint`` indices."""
        return _make_inputs(self.spec.inputs, batch, seed)

    def module_names(self) -> list[str]:
        """Names of all submodules (what ``set_module_name`` can refer to)."""
        return [name for name, _ in self.named_modules() if name]

    def source(self) -> str:
        return render_source(self.spec)

    def __repr__(self) -> str:
        return self.source()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        _pretty_lines(printer, repr(self))


@functools.cache
def _model_class(names: tuple[str, ...]) -> type[GeneratedModel]:
    """A GeneratedModel subclass whose forward takes exactly ``names`` (FX reads the code object)."""
    arguments = ", ".join(names)
    code = f"def forward(self, {arguments}):\n    return self.run_blocks({arguments})\n"
    namespace: dict[str, Any] = {}
    exec(compile(code, "<generated forward>", "exec"), namespace)
    return type("GeneratedModel", (GeneratedModel,), {"forward": namespace["forward"], "__module__": __name__})


def _make_inputs(inputs: Sequence[Value], batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    made = []
    for value in inputs:
        if value.index:
            made.append(torch.randint(0, NUM_EMBEDDINGS, (batch, *value.shape), generator=generator))
        else:
            made.append(torch.randn(batch, *value.shape, generator=generator))
    return tuple(made)


def render_source(spec: ModelSpec) -> str:
    """A self-contained program that rebuilds the model as ``model`` and defines ``make_inputs``."""
    out = ["import torch", "import torch.nn as nn", "import torch.nn.functional as F", ""]
    for block in spec.blocks:
        if not block.scoped:
            continue
        out += ["", f"class Block{block.index}(nn.Module):"]
        out += ["    def __init__(self):", "        super().__init__()"]
        out += [f"        self.{role} = {constructor}" for role, constructor in block.init]
        out += ["", f"    def forward(self, {', '.join(block.inputs)}):"]
        out += [f"        {line}" for line in block.statements(inside_scope=True)]
        out += [f"        return {block.output}", ""]
    out += ["", "class Model(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    created: set[tuple[str, ...]] = set()
    for block in spec.blocks:
        if block.scoped:
            out += [f"        {line}" for line in attach_source(block.path, block.containers, f"Block{block.index}()", created)]
        else:
            out += [f"        self.b{block.index}_{role} = {constructor}" for role, constructor in block.init]
    out += ["", f"    def forward(self, {', '.join(value.name for value in spec.inputs)}):"]
    for block in spec.blocks:
        if block.scoped:
            out.append(f"        {block.output} = self{access(block.path)}({', '.join(block.inputs)})")
        else:
            out += [f"        {line}" for line in block.statements(inside_scope=False)]
    out.append(f"        return {', '.join(spec.outputs)}")
    out += ["", "", "def make_inputs(batch, seed):", "    generator = torch.Generator().manual_seed(seed)"]
    out.append("    return (")
    for value in spec.inputs:
        dims = ", ".join(str(d) for d in value.shape)
        if value.index:
            out.append(f"        torch.randint(0, {NUM_EMBEDDINGS}, (batch, {dims}), generator=generator),")
        else:
            out.append(f"        torch.randn(batch, {dims}, generator=generator),")
    out += ["    )", "", "", f"torch.manual_seed({spec.seed})", "model = Model().eval()"]
    return "\n".join(out) + "\n"


def _pretty_lines(printer: Any, text: str) -> None:
    """Hypothesis prints drawn values with this: keep the source's lines."""
    for number, line in enumerate(text.rstrip("\n").splitlines()):
        if number:
            printer.break_()
        printer.text(line)


# --------------------------------------------------------------------------- drawing


class Draw:
    """The one source of choices: ``integer(low, high)``, from hypothesis or a Random.

    ``group(fn)`` runs ``fn(draw)`` as one unit; under hypothesis that is one span of
    the choice sequence, which the shrinker can delete as a whole.
    """

    def __init__(
        self, integer: Callable[[int, int], int], group: Callable[[Callable[[Draw], Any]], Any] | None = None
    ) -> None:
        self.integer = integer
        self._group = group

    @classmethod
    def from_hypothesis(cls, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Draw:
        return cls(lambda low, high: draw(st.integers(low, high)), lambda fn: draw(_grouped(fn)))

    @classmethod
    def from_random(cls, rng: random.Random) -> Draw:
        return cls(rng.randint)

    def group(self, fn: Callable[[Draw], Any]) -> Any:
        return fn(self) if self._group is None else self._group(fn)

    def pick(self, items: Sequence[Any]) -> Any:
        """One of ``items``; shrinks towards the first."""
        return items[self.integer(0, len(items) - 1)] if len(items) > 1 else items[0]

    def flag(self) -> bool:
        return self.integer(0, 1) == 1


@st.composite
def _grouped(draw: Any, fn: Callable[[Draw], Any]) -> Any:
    return fn(Draw.from_hypothesis(draw))


def _dims(shape: Sequence[int]) -> str:
    return ", ".join(str(d) for d in shape)


def _tuple(items: Sequence[Any]) -> str:
    items = list(items)
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(str(i) for i in items)})"


class _Builder:
    """Values drawn so far, the inputs, and block emission."""

    def __init__(self, d: Draw) -> None:
        self.d = d
        self.values: list[Value] = []
        self.inputs: list[Value] = []
        self.blocks: list[Block] = []
        self.consumed: set[str] = set()
        self.tree = Tree()
        self.index = 0
        # per block
        self.init: list[tuple[str, str]] = []
        self.used: list[str] = []

    # inputs ------------------------------------------------------------------------------
    def fresh_shape(self, ranks: Sequence[int]) -> tuple[int, ...]:
        """A shape of one of ``ranks`` for a fresh input.

        Always two draws with the same bounds whatever the rank, so that the choices
        after it stay aligned when the shrinker deletes the block that created an input.
        """
        rank = self.d.pick(ranks)
        return FRESH_SHAPES[rank][self.d.integer(0, len(FRESH_SHAPES[1]) - 1)]

    def new_input(self, shape: tuple[int, ...], index: bool = False) -> Value:
        stem = "idx" if index else "x"
        count = sum(1 for value in self.inputs if value.index == index)
        value = Value(stem if count == 0 else f"{stem}{count}", shape, index=index)
        self.inputs.append(value)
        self.values.append(value)
        return value

    def take(self, value: Value) -> Value:
        if value.name not in self.used:
            self.used.append(value.name)
        self.consumed.add(value.name)
        return value

    def choose(self, accepts: Callable[[Value], bool], ranks: Sequence[int]) -> Value:
        """An earlier float value ``accepts`` (most recent first) or a fresh input of one of ``ranks``."""
        fresh = self.fresh_shape(ranks)  # drawn either way: see fresh_shape
        candidates = [v for v in reversed(self.values) if not v.index and accepts(v)]
        k = self.d.integer(0, len(candidates))
        return self.take(candidates[k] if k < len(candidates) else self.new_input(fresh))

    def choose_rank(self, ranks: Sequence[int], extra: Callable[[Value], bool] = lambda v: True) -> Value:
        return self.choose(lambda v: v.rank in ranks and extra(v), ranks)

    def partner(self, first: Value) -> Value:
        """A value shaped like ``first``: itself, another earlier one, or a fresh input."""
        others = [v for v in reversed(self.values) if not v.index and v.shape == first.shape and v is not first]
        candidates = [first, *others]
        k = self.d.integer(0, len(candidates))
        return self.take(candidates[k] if k < len(candidates) else self.new_input(first.shape))

    def indices(self) -> Value:
        length = self.d.pick((4, 3))
        candidates = [v for v in reversed(self.values) if v.index]
        k = self.d.integer(0, len(candidates))
        return self.take(candidates[k] if k < len(candidates) else self.new_input((length,), index=True))

    # block parts -------------------------------------------------------------------------
    def module(self, role: str, constructor: str) -> str:
        self.init.append((role, constructor))
        return f"${role}"

    def parameter(self, role: str, shape: Sequence[int], scale: float) -> str:
        return self.module(role, f"nn.Parameter(torch.randn({_dims(shape)}) * {scale})")

    def emit(
        self, kind: str, variant: str, body: Sequence[str], shape: Sequence[int], contiguous: bool | None = None
    ) -> None:
        """Record the block. ``contiguous``: None inherits "all inputs contiguous" (most
        ops keep a channels-last-like or transposed layout); True/False force it."""
        if contiguous is None:
            contiguous = all(value.contiguous for value in self.values if value.name in self.used)
        output = f"v{self.index}"
        body = [line.replace("{o}", output) for line in body]
        path, containers = self.tree.place(self.d.pick(PLACEMENTS), self.index)
        self.blocks.append(
            Block(
                index=self.index,
                kind=kind,
                variant=variant,
                inputs=tuple(self.used),
                output=output,
                shape=tuple(shape),
                init=tuple(self.init),
                body=tuple(body),
                path=path,
                containers=containers,
                contiguous=contiguous,
            )
        )
        self.values.append(Value(output, tuple(shape), contiguous=contiguous))
        self.init, self.used = [], []
        self.index += 1


def _relu_tail(b: _Builder, allow_method: bool = True) -> tuple[str, list[str]]:
    """An optional relu after a block's main op: (variant suffix, statements)."""
    forms = ["", "+nn.ReLU", "+F.relu", "+torch.relu"] + (["+.relu()"] if allow_method else [])
    form = b.d.pick(forms)
    if form == "+nn.ReLU":
        return form, ["{o} = " + b.module("relu", "nn.ReLU()") + "({o})"]
    if form == "+F.relu":
        return form, ["{o} = F.relu({o})"]
    if form == "+torch.relu":
        return form, ["{o} = torch.relu({o})"]
    if form == "+.relu()":
        return form, ["{o} = {o}.relu()"]
    return "", []


def _any(b: _Builder) -> Value:
    return b.choose(lambda v: True, (1, 3, 2, 4))


# --------------------------------------------------------------------------- block kinds
# Each draws its inputs and parameters and emits one block. Variants are listed
# simple -> complex; `{a}`/`{b}`/`{c}` are inputs, `{o}` the output.


def _k_relu(b: _Builder) -> None:
    a = _any(b)
    form = b.d.pick(("torch.relu", "F.relu", ".relu()", "nn.ReLU"))
    expr = {
        "torch.relu": f"torch.relu({a.name})",
        "F.relu": f"F.relu({a.name})",
        ".relu()": f"{a.name}.relu()",
        "nn.ReLU": "",
    }[form]
    if form == "nn.ReLU":
        expr = b.module("relu", "nn.ReLU()") + f"({a.name})"
    b.emit("relu", form, [f"{{o}} = {expr}"], a.shape)


def _k_contiguous(b: _Builder) -> None:
    a = _any(b)
    b.emit("contiguous", ".contiguous()", [f"{{o}} = {a.name}.contiguous()"], a.shape, True)


def _k_dropout(b: _Builder) -> None:
    a = _any(b)
    form = b.d.pick(("nn.Dropout", "F.dropout", "F.dropout(training=self.training)"))
    if form == "nn.Dropout":
        expr = b.module("dropout", "nn.Dropout(0.5)") + f"({a.name})"
    elif form == "F.dropout":
        expr = f"F.dropout({a.name}, 0.5, False)"
    else:
        expr = f"F.dropout({a.name}, p=0.25, training=self.training)"
    b.emit("dropout", form, [f"{{o}} = {expr}"], a.shape)


def _k_hardtanh(b: _Builder) -> None:
    a = _any(b)
    form = b.d.pick(("F.hardtanh", "F.hardtanh(-0.5, 0.5)", "F.relu6", "nn.Hardtanh", "nn.ReLU6"))
    expr = {
        "F.hardtanh": f"F.hardtanh({a.name})",
        "F.hardtanh(-0.5, 0.5)": f"F.hardtanh({a.name}, -0.5, 0.5)",
        "F.relu6": f"F.relu6({a.name})",
    }.get(form)
    if form == "nn.Hardtanh":
        expr = b.module("hardtanh", "nn.Hardtanh(-1.0, 1.0)") + f"({a.name})"
    elif form == "nn.ReLU6":
        expr = b.module("relu6", "nn.ReLU6()") + f"({a.name})"
    b.emit("hardtanh", form, [f"{{o}} = {expr}"], a.shape)


def _unary(b: _Builder, kind: str, forms: tuple[str, ...], functions: dict[str, str], modules: dict[str, tuple[str, str]]) -> None:
    """A block applying one of `forms` to an earlier value: a call from `functions`
    (a template of `{a}`) or a new module from `modules` (attribute name, constructor)."""
    a = _any(b)
    form = b.d.pick(forms)
    expr = b.module(*modules[form]) + f"({a.name})" if form in modules else functions[form].format(a=a.name)
    b.emit(kind, form, [f"{{o}} = {expr}"], a.shape)


def _k_clamp(b: _Builder) -> None:
    _unary(
        b,
        "clamp",
        ("torch.clamp", ".clamp(min=)", "torch.clamp(min=, max=)", ".clamp(lo, hi)"),
        {
            "torch.clamp": "torch.clamp({a}, -1.0, 1.0)",
            ".clamp(min=)": "{a}.clamp(min=0.0)",
            "torch.clamp(min=, max=)": "torch.clamp({a}, min=-0.5, max=0.5)",
            ".clamp(lo, hi)": "{a}.clamp(-2.0, 2.0)",
        },
        {},
    )


def _k_fixed_qparams(b: _Builder) -> None:
    _unary(
        b,
        "fixed_qparams",
        ("torch.sigmoid", ".sigmoid()", "nn.Sigmoid", "torch.tanh", ".tanh()", "nn.Tanh",
         "F.hardsigmoid", "nn.Hardsigmoid", "nn.Softmax"),
        {
            "torch.sigmoid": "torch.sigmoid({a})",
            ".sigmoid()": "{a}.sigmoid()",
            "torch.tanh": "torch.tanh({a})",
            ".tanh()": "{a}.tanh()",
            "F.hardsigmoid": "F.hardsigmoid({a})",
        },
        {
            "nn.Sigmoid": ("sigmoid", "nn.Sigmoid()"),
            "nn.Tanh": ("tanh", "nn.Tanh()"),
            "nn.Hardsigmoid": ("hardsigmoid", "nn.Hardsigmoid()"),
            "nn.Softmax": ("softmax", "nn.Softmax(dim=-1)"),
        },
    )


def _k_default_op(b: _Builder) -> None:
    _unary(
        b,
        "default_op",
        ("F.hardswish", "nn.Hardswish", "F.elu", "F.elu(alpha=)", "nn.ELU", "F.leaky_relu",
         "F.leaky_relu(negative_slope=)", "nn.LeakyReLU", "nn.PReLU"),
        {
            "F.hardswish": "F.hardswish({a})",
            "F.elu": "F.elu({a})",
            "F.elu(alpha=)": "F.elu({a}, alpha=0.5)",
            "F.leaky_relu": "F.leaky_relu({a}, 0.1)",
            "F.leaky_relu(negative_slope=)": "F.leaky_relu({a}, negative_slope=0.2)",
        },
        {
            "nn.Hardswish": ("hardswish", "nn.Hardswish()"),
            "nn.ELU": ("elu", "nn.ELU()"),
            "nn.LeakyReLU": ("leaky_relu", "nn.LeakyReLU(0.05)"),
            "nn.PReLU": ("prelu", "nn.PReLU()"),
        },
    )


def _k_shape(b: _Builder) -> None:
    """Rank-preserving shape ops: transpose, permute, reshape/view, squeeze(unsqueeze())."""
    a = _any(b)
    n, shape = a.name, a.shape
    forms = ["squeeze(unsqueeze)", "reshape(-1, ...)"]
    if a.contiguous:
        forms.append("view(size(0), ...)")
    if a.rank >= 2:
        forms += [".transpose", "torch.transpose", ".permute", ".transpose().contiguous()"]
    form = b.d.pick(forms)
    last = a.rank  # dims of the batched tensor: 0 .. a.rank
    contiguous = a.contiguous
    if form == "squeeze(unsqueeze)":
        body, out = [f"{{o}} = torch.squeeze(torch.unsqueeze({n}, 1), 1)"], shape
    elif form == "reshape(-1, ...)":  # same shape: reshape returns a view, layout kept
        body, out = [f"{{o}} = {n}.reshape(-1, {_dims(shape)})"], shape
    elif form == "view(size(0), ...)":
        body, out = [f"{{o}} = {n}.view({n}.size(0), {_dims(shape)})"], shape
    elif form == ".permute":
        order = list(range(1, a.rank + 1))
        order = [order[0], *reversed(order[1:])] if a.rank >= 3 and b.d.flag() else [*order[1:], order[0]]
        body = [f"{{o}} = {n}.permute(0, {_dims(order)})"]
        out, contiguous = tuple(shape[i - 1] for i in order), False
    else:
        out = (*shape[:-2], shape[-1], shape[-2])
        if form == ".transpose":
            body, contiguous = [f"{{o}} = {n}.transpose({last - 1}, {last})"], False
        elif form == "torch.transpose":
            body, contiguous = [f"{{o}} = torch.transpose({n}, {last}, {last - 1})"], False
        else:
            body, contiguous = [f"{{o}} = {n}.transpose({last - 1}, {last}).contiguous()"], True
    b.emit("shape", form, body, out, contiguous)


def _k_unsqueeze(b: _Builder) -> None:
    a = b.choose_rank((1, 2, 3))
    form = b.d.pick((".unsqueeze(1)", "torch.unsqueeze(-1)"))
    if form == ".unsqueeze(1)":
        body, out = [f"{{o}} = {a.name}.unsqueeze(1)"], (1, *a.shape)
    else:
        body, out = [f"{{o}} = torch.unsqueeze({a.name}, -1)"], (*a.shape, 1)
    b.emit("unsqueeze", form, body, out)


def _k_squeeze(b: _Builder) -> None:
    a = b.choose(lambda v: v.rank >= 2 and 1 in v.shape, (2,))
    if 1 not in a.shape:  # a fresh input: make its channel dim 1
        a = b.inputs[-1] = b.values[-1] = attrs.evolve(a, shape=(1, a.shape[1]))
    dim = a.shape.index(1) + 1
    form = b.d.pick((".squeeze(dim)", "torch.squeeze(dim)"))
    expr = f"{a.name}.squeeze({dim})" if form == ".squeeze(dim)" else f"torch.squeeze({a.name}, {dim})"
    out = a.shape[: dim - 1] + a.shape[dim:]
    b.emit("squeeze", form, [f"{{o}} = {expr}"], out)


def _k_flatten(b: _Builder) -> None:
    """To a lower rank: everything to features, or the trailing dims together."""
    a = b.choose_rank((2, 3, 4))
    n = a.name
    forms = ["torch.flatten(1)", ".flatten(1)", "reshape(size(0), -1)", "reshape(-1, n)", "flatten(2)",
             "reshape(shape[0], shape[1], -1)"]
    if a.contiguous:
        forms += ["view(shape[0], -1)", "view(-1, n)"]
    form = b.d.pick(forms)
    flat = (a.numel,)
    body, out = {
        "torch.flatten(1)": (f"torch.flatten({n}, 1)", flat),
        ".flatten(1)": (f"{n}.flatten(1)", flat),
        "reshape(size(0), -1)": (f"{n}.reshape({n}.size(0), -1)", flat),
        "reshape(-1, n)": (f"{n}.reshape(-1, {a.numel})", flat),
        "view(shape[0], -1)": (f"{n}.view({n}.shape[0], -1)", flat),
        "view(-1, n)": (f"{n}.view(-1, {a.numel})", flat),
        "flatten(2)": (f"torch.flatten({n}, 2)", (a.shape[0], a.numel // a.shape[0])),
        "reshape(shape[0], shape[1], -1)": (
            f"{n}.reshape({n}.shape[0], {n}.shape[1], -1)",
            (a.shape[0], a.numel // a.shape[0]),
        ),
    }[form]
    b.emit("flatten", form, [f"{{o}} = {body}"], out)


def _factor(n: int, d: Draw) -> tuple[int, int]:
    divisors = [k for k in range(1, n + 1) if n % k == 0]
    nontrivial = [k for k in divisors if 1 < k < n]
    k = d.pick(nontrivial + [1, n])
    return k, n // k


def _k_unflatten(b: _Builder) -> None:
    """To a higher rank: split the last dim in two."""
    a = b.choose_rank((1, 2, 3))
    n = a.name
    first, second = _factor(a.shape[-1], b.d)
    out = (*a.shape[:-1], first, second)
    forms = ["reshape(-1, ...)", "reshape(size(0), ...)"] + (["view(size(0), ...)"] if a.contiguous else [])
    form = b.d.pick(forms)
    if form == "reshape(-1, ...)":
        expr = f"{n}.reshape(-1, {_dims(out)})"
    elif form == "reshape(size(0), ...)":
        expr = f"{n}.reshape({n}.size(0), {_dims(out)})"
    else:
        expr = f"{n}.view({n}.size(0), {_dims(out)})"
    b.emit("unflatten", form, [f"{{o}} = {expr}"], out)


def _k_mean(b: _Builder) -> None:
    a = _any(b)
    n = a.name
    forms = [".mean(-1, keepdim=True)"]
    if a.rank >= 2:
        forms += [".mean(-1)", "torch.mean(1)"]
    if a.rank >= 3:
        forms += [".mean((2, 3))", "torch.mean(dim=[2, 3], keepdim=True)"]
    form = b.d.pick(forms)
    s = a.shape
    body, out = {
        ".mean(-1, keepdim=True)": (f"{n}.mean(-1, keepdim=True)", (*s[:-1], 1)),
        ".mean(-1)": (f"{n}.mean(-1)", s[:-1]),
        "torch.mean(1)": (f"torch.mean({n}, 1)", s[1:]),
        ".mean((2, 3))": (f"{n}.mean((2, 3))", (s[0], *s[3:])),
        "torch.mean(dim=[2, 3], keepdim=True)": (f"torch.mean({n}, dim=[2, 3], keepdim=True)", (s[0], 1, 1, *s[3:])),
    }[form]
    b.emit("mean", form, [f"{{o}} = {body}"], out, True)


def _k_pool(b: _Builder) -> None:
    a = b.choose_rank((2, 3, 4), lambda v: min(v.shape[1:]) >= 2)
    nd = a.rank - 1
    n = a.name
    half = (a.shape[0], *(s // 2 for s in a.shape[1:]))
    form = b.d.pick(("MaxPool", "F.max_pool", "AvgPool", "F.avg_pool", "AdaptiveAvgPool(1)", "F.adaptive_avg_pool(2)"))
    if form == "MaxPool":
        expr, out = b.module("pool", f"nn.MaxPool{nd}d(2)") + f"({n})", half
    elif form == "F.max_pool":
        expr, out = f"F.max_pool{nd}d({n}, 2)", half
    elif form == "AvgPool":
        expr, out = b.module("pool", f"nn.AvgPool{nd}d(2)") + f"({n})", half
    elif form == "F.avg_pool":
        expr, out = f"F.avg_pool{nd}d({n}, 2)", half
    elif form == "AdaptiveAvgPool(1)":
        expr, out = b.module("pool", f"nn.AdaptiveAvgPool{nd}d(1)") + f"({n})", (a.shape[0], *([1] * nd))
    else:
        expr, out = f"F.adaptive_avg_pool{nd}d({n}, 2)", (a.shape[0], *([2] * nd))
    b.emit("pool", f"{form}{nd}d", [f"{{o}} = {expr}"], out)


def _grouped_transpose(b: _Builder, value: Value) -> bool:
    """Whether ``value`` comes from a grouped nn.ConvTranspose (see _k_conv_transpose)."""
    return any(
        block.output == value.name and block.kind == "conv_transpose" and "groups=" in block.init[0][1]
        for block in b.blocks
    )


def _k_norm(b: _Builder) -> None:
    a = _any(b)
    n, s = a.name, a.shape
    spatial = math.prod(s[1:]) if a.rank >= 2 else 0
    forms = ["nn.LayerNorm(last)", "F.layer_norm(last)", "nn.LayerNorm(all)", "F.layer_norm(weight, bias)"]
    if a.rank >= 2 and spatial > 1:
        forms += ["nn.InstanceNorm", "F.instance_norm"]
    if a.rank in (3, 4) and not _grouped_transpose(b, a):
        forms += ["nn.BatchNorm", "nn.BatchNorm+nn.ReLU", "nn.BatchNorm+F.relu"]
    form = b.d.pick(forms)
    body: list[str]
    if form == "nn.LayerNorm(last)":
        body = ["{o} = " + b.module("norm", f"nn.LayerNorm({s[-1]})") + f"({n})"]
    elif form == "F.layer_norm(last)":
        body = [f"{{o}} = F.layer_norm({n}, ({s[-1]},))"]
    elif form == "nn.LayerNorm(all)":
        body = ["{o} = " + b.module("norm", f"nn.LayerNorm({list(s)}, elementwise_affine={b.d.flag()})") + f"({n})"]
    elif form == "F.layer_norm(weight, bias)":
        weight = b.parameter("weight", (s[-1],), 0.5)
        bias = b.parameter("bias", (s[-1],), 0.1)
        body = [f"{{o}} = F.layer_norm({n}, [{s[-1]}], {weight}, {bias}, 1e-5)"]
    elif form == "nn.InstanceNorm":
        body = ["{o} = " + b.module("norm", f"nn.InstanceNorm{a.rank - 1}d({s[0]})") + f"({n})"]
    elif form == "F.instance_norm":
        body = [f"{{o}} = F.instance_norm({n})"]
    else:
        body = ["{o} = " + b.module("bn", f"nn.BatchNorm{a.rank - 1}d({s[0]})") + f"({n})"]
        if form == "nn.BatchNorm+nn.ReLU":
            body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
        elif form == "nn.BatchNorm+F.relu":
            body.append("{o} = F.relu({o})")
    b.emit("norm", form, body, s)


def _k_binary(b: _Builder) -> None:
    a = _any(b)
    n = a.name
    form = b.d.pick(("a + b", "torch.add(a, b)", "a * b", "torch.mul(a, b)", "a + 1.0", "torch.add(a, 0.5)",
                     "a * 2.0", "torch.mul(a, -0.5)", "1.0 + a", "a * a.shape[-1]"))
    if form in ("a + b", "torch.add(a, b)", "a * b", "torch.mul(a, b)"):
        other = b.partner(a).name
        expr = {
            "a + b": f"{n} + {other}",
            "torch.add(a, b)": f"torch.add({n}, {other})",
            "a * b": f"{n} * {other}",
            "torch.mul(a, b)": f"torch.mul({n}, {other})",
        }[form]
    else:
        expr = {
            "a + 1.0": f"{n} + 1.0",
            "torch.add(a, 0.5)": f"torch.add({n}, 0.5)",
            "a * 2.0": f"{n} * 2.0",
            "torch.mul(a, -0.5)": f"torch.mul({n}, -0.5)",
            "1.0 + a": f"1.0 + {n}",
            "a * a.shape[-1]": f"{n} * {n}.shape[-1]",
        }[form]
    relu, tail = _relu_tail(b)
    b.emit("binary", form + relu, [f"{{o}} = {expr}", *tail], a.shape)


def _k_matmul(b: _Builder) -> None:
    a = b.choose_rank((2, 3), lambda v: v.numel * v.shape[-2] <= MAX_NUMEL * 2)
    other = b.partner(a).name
    last = a.rank
    form = b.d.pick(("torch.matmul", "@"))
    rhs = f"{other}.transpose({last - 1}, {last})"
    expr = f"torch.matmul({a.name}, {rhs})" if form == "torch.matmul" else f"{a.name} @ {rhs}"
    relu, tail = _relu_tail(b)
    out = (*a.shape[:-1], a.shape[-2])
    b.emit("matmul", form + relu, [f"{{o}} = {expr}", *tail], out, True)


def _k_cat(b: _Builder) -> None:
    a = b.choose(lambda v: v.numel * 3 <= MAX_NUMEL * 2, (1, 3, 2))
    parts = [a.name, b.partner(a).name]
    if b.d.flag():
        parts.append(b.partner(a).name)
    form = b.d.pick(("torch.cat([...], dim=1)", "torch.cat((...), 1)", "torch.cat([...], -1)"))
    listed = ", ".join(parts)
    if form == "torch.cat([...], dim=1)":
        expr, axis = f"torch.cat([{listed}], dim=1)", 0
    elif form == "torch.cat((...), 1)":
        expr, axis = f"torch.cat(({listed}), 1)", 0
    else:
        expr, axis = f"torch.cat([{listed}], -1)", a.rank - 1
    out = list(a.shape)
    out[axis] *= len(parts)
    b.emit("cat", form, [f"{{o}} = {expr}"], out)


def _conv_geometry(spatial: Sequence[int], d: Draw) -> tuple[int, int, int, tuple[int, ...]]:
    """(kernel, stride, padding, output spatial) with every output dim >= 1."""
    smallest = min(spatial)
    options = [(1, 1, 0), (3, 1, 1), (3, 2, 1), (1, 2, 0)]
    if smallest >= 3:
        options.append((3, 1, 0))
    if smallest >= 2:
        options.append((2, 2, 0))
    k, s, p = d.pick(options)
    return k, s, p, tuple((n + 2 * p - k) // s + 1 for n in spatial)


def _conv_call_args(k: int, s: int, p: int, groups: int, bias: bool) -> str:
    args = [str(k)]
    if s != 1:
        args.append(f"stride={s}")
    if p:
        args.append(f"padding={p}")
    if groups != 1:
        args.append(f"groups={groups}")
    if not bias:
        args.append("bias=False")
    return ", ".join(args)


def _channels(b: _Builder, c_in: int) -> tuple[int, int]:
    """(out channels, groups)."""
    c_out = b.d.pick((c_in, 2, 3, 4))
    groups = b.d.pick((1, c_in)) if c_in > 1 and c_out % c_in == 0 else 1
    return c_out, groups


def _k_linear(b: _Builder) -> None:
    a = _any(b)
    features = a.shape[-1]
    out_features = b.d.pick((features, 2, 3, 4))
    bias = not b.d.flag()
    tails = ["", "+nn.ReLU", "+F.relu", "+torch.relu", "+nn.LeakyReLU", "+nn.Tanh"]
    if a.rank == 1:
        tails += ["+nn.BatchNorm1d", "+nn.BatchNorm1d+nn.ReLU"]
    tail = b.d.pick(tails)
    args = f"{features}, {out_features}" + ("" if bias else ", bias=False")
    body = ["{o} = " + b.module("linear", f"nn.Linear({args})") + f"({a.name})"]
    if "BatchNorm1d" in tail:
        body.append("{o} = " + b.module("bn", f"nn.BatchNorm1d({out_features})") + "({o})")
    if tail.endswith("nn.ReLU"):
        body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
    elif tail == "+F.relu":
        body.append("{o} = F.relu({o})")
    elif tail == "+torch.relu":
        body.append("{o} = torch.relu({o})")
    elif tail == "+nn.LeakyReLU":
        body.append("{o} = " + b.module("leaky_relu", "nn.LeakyReLU(0.1)") + "({o})")
    elif tail == "+nn.Tanh":
        body.append("{o} = " + b.module("tanh", "nn.Tanh()") + "({o})")
    b.emit("linear", "nn.Linear" + tail, body, (*a.shape[:-1], out_features))


def _k_conv(b: _Builder) -> None:
    a = b.choose_rank((3, 2, 4))
    nd = a.rank - 1
    c_out, groups = _channels(b, a.shape[0])
    k, s, p, spatial = _conv_geometry(a.shape[1:], b.d)
    bias = not b.d.flag()
    tail = b.d.pick(("", "+BatchNorm", "+nn.ReLU", "+BatchNorm+nn.ReLU", "+F.relu", "+BatchNorm+torch.relu"))
    body = ["{o} = " + b.module("conv", f"nn.Conv{nd}d({a.shape[0]}, {c_out}, {_conv_call_args(k, s, p, groups, bias)})") + f"({a.name})"]
    if "BatchNorm" in tail:
        body.append("{o} = " + b.module("bn", f"nn.BatchNorm{nd}d({c_out})") + "({o})")
    if tail.endswith("nn.ReLU"):
        body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
    elif tail.endswith("F.relu"):
        body.append("{o} = F.relu({o})")
    elif tail.endswith("torch.relu"):
        body.append("{o} = torch.relu({o})")
    b.emit("conv", f"nn.Conv{nd}d" + tail, body, (c_out, *spatial))


MAX_TRANSPOSE_INPUT = 12  # spatial size above which no transposed conv is offered


def _transpose_geometry(spatial: Sequence[int], d: Draw) -> tuple[int, int, int, int, tuple[int, ...]]:
    """(kernel, stride, padding, output_padding, output spatial); outputs at most 12
    unless the input is larger (kernel 1, stride 1 keeps the size)."""
    options = [(1, 1, 0, 0), (3, 1, 1, 0), (2, 1, 0, 0), (2, 2, 0, 0), (3, 2, 1, 1)]
    options = [
        o for o in options if o[0] == 1 or max((n - 1) * o[1] - 2 * o[2] + o[0] + o[3] for n in spatial) <= 12
    ]
    k, s, p, op = d.pick(options)
    return k, s, p, op, tuple((n - 1) * s - 2 * p + k + op for n in spatial)


def _k_conv_transpose(b: _Builder) -> None:
    a = b.choose_rank((3, 2), lambda v: max(v.shape[1:]) <= MAX_TRANSPOSE_INPUT)
    nd = a.rank - 1
    tail = b.d.pick(("", "+BatchNorm", "+nn.ReLU"))
    c_out, groups = _channels(b, a.shape[0])
    if tail == "+BatchNorm":
        # torch's fuse_conv_bn_weights(transpose=True) mis-shapes grouped weights:
        # prepare_fx fails on every grouped ConvTranspose followed by BatchNorm.
        groups = 1
    k, s, p, op, spatial = _transpose_geometry(a.shape[1:], b.d)
    bias = not b.d.flag()
    args = _conv_call_args(k, s, p, groups, bias)
    if op:
        args += f", output_padding={op}"
    body = ["{o} = " + b.module("deconv", f"nn.ConvTranspose{nd}d({a.shape[0]}, {c_out}, {args})") + f"({a.name})"]
    if tail == "+BatchNorm":
        body.append("{o} = " + b.module("bn", f"nn.BatchNorm{nd}d({c_out})") + "({o})")
    elif tail == "+nn.ReLU":
        body.append("{o} = " + b.module("relu", "nn.ReLU()") + "({o})")
    b.emit("conv_transpose", f"nn.ConvTranspose{nd}d" + tail, body, (c_out, *spatial))


def _k_functional_linear(b: _Builder) -> None:
    a = _any(b)
    n = a.name
    features = a.shape[-1]
    out_features = b.d.pick((features, 2, 3, 4))
    form = b.d.pick(("F.linear(x, w)", "F.linear(x, w, b)", "F.linear(x, weight=w, bias=b)", "F.linear(input=x, weight=w)"))
    weight = b.parameter("weight", (out_features, features), 0.3)
    if form in ("F.linear(x, w, b)", "F.linear(x, weight=w, bias=b)"):
        bias = b.parameter("bias", (out_features,), 0.1)
    expr = {
        "F.linear(x, w)": lambda: f"F.linear({n}, {weight})",
        "F.linear(x, w, b)": lambda: f"F.linear({n}, {weight}, {bias})",
        "F.linear(x, weight=w, bias=b)": lambda: f"F.linear({n}, weight={weight}, bias={bias})",
        "F.linear(input=x, weight=w)": lambda: f"F.linear(input={n}, weight={weight})",
    }[form]()
    relu, tail = _relu_tail(b, allow_method=False)
    b.emit("functional_linear", form + relu, [f"{{o}} = {expr}", *tail], (*a.shape[:-1], out_features))


def _k_functional_conv(b: _Builder) -> None:
    a = b.choose_rank((3, 2))
    n = a.name
    nd = a.rank - 1
    c_in = a.shape[0]
    transpose = b.d.flag() and nd == 2 and max(a.shape[1:]) <= MAX_TRANSPOSE_INPUT
    c_out, groups = _channels(b, c_in)
    with_bias = not b.d.flag()
    if transpose:
        form = b.d.pick(("positional", "positional tuples", "defaults", "keywords"))
        if form == "defaults":  # stride 1, padding 0, groups 1
            k, s, p, op = b.d.pick((1, 2)), 1, 0, 0
            groups, spatial = 1, tuple(x + k - 1 for x in a.shape[1:])
        else:
            k, s, p, op, spatial = _transpose_geometry(a.shape[1:], b.d)
        weight = b.parameter("weight", (c_in, c_out // groups, k, k), 0.3)
        bias = b.parameter("bias", (c_out,), 0.1) if with_bias else "None"
        if form == "defaults":
            expr = f"F.conv_transpose2d({n}, {weight}" + (f", {bias})" if with_bias else ")")
        elif form == "positional":
            expr = f"F.conv_transpose2d({n}, {weight}, {bias}, {s}, {p}, {op}, {groups}, 1)"
        elif form == "positional tuples":
            expr = f"F.conv_transpose2d({n}, {weight}, {bias}, ({s}, {s}), ({p}, {p}), ({op}, {op}), {groups}, (1, 1))"
        else:
            expr = (
                f"F.conv_transpose2d({n}, {weight}, bias={bias}, stride={s}, padding={p}, "
                f"output_padding={op}, groups={groups})"
            )
        b.emit("functional_conv", f"F.conv_transpose2d {form}", [f"{{o}} = {expr}"], (c_out, *spatial))
        return
    form = b.d.pick(("positional", "positional tuples", "defaults", "keywords"))
    if form == "defaults":
        k, s, p, groups, spatial = 1, 1, 0, 1, tuple(a.shape[1:])
    else:
        k, s, p, spatial = _conv_geometry(a.shape[1:], b.d)
    weight = b.parameter("weight", (c_out, c_in // groups, *([k] * nd)), 0.3)
    bias = b.parameter("bias", (c_out,), 0.1) if with_bias else "None"
    op = f"F.conv{nd}d"
    if form == "defaults":
        expr = f"{op}({n}, {weight}" + (f", {bias})" if with_bias else ")")
    elif form == "positional":
        expr = f"{op}({n}, {weight}, {bias}, {s}, {p}, 1, {groups})"
    elif form == "positional tuples":
        expr = f"{op}({n}, {weight}, {bias}, {_tuple([s] * nd)}, {_tuple([p] * nd)}, {_tuple([1] * nd)}, {groups})"
    else:
        expr = f"{op}({n}, {weight}, bias={bias}, stride={s}, padding={p}, groups={groups})"
    relu, tail = _relu_tail(b, allow_method=False)
    b.emit("functional_conv", f"{op} {form}" + relu, [f"{{o}} = {expr}", *tail], (c_out, *spatial))


def _k_rnn(b: _Builder) -> None:
    a = b.choose_rank((2,))
    n = a.name
    channels = a.shape[0]
    cls = b.d.pick(("LSTM", "GRU"))
    hidden = b.d.pick((channels, 2, 3))
    layers = b.d.pick((1, 2))
    bidirectional = b.d.flag()
    batch_first = not b.d.flag()
    args = f"{channels}, {hidden}"
    if layers != 1:
        args += f", num_layers={layers}"
    if bidirectional:
        args += ", bidirectional=True"
    if batch_first:
        args += ", batch_first=True"
    module = b.module(cls.lower(), f"nn.{cls}({args})")
    if batch_first:
        body = [f"{{o}} = {module}({n}.transpose(1, 2))[0]", "{o} = {o}.transpose(1, 2)"]
    else:
        body = [f"{{o}} = {module}({n}.permute(2, 0, 1))[0]", "{o} = {o}.permute(1, 2, 0)"]
    variant = f"nn.{cls}" + (" batch_first" if batch_first else "") + (" bidirectional" if bidirectional else "")
    b.emit("rnn", variant, body, (hidden * (2 if bidirectional else 1), a.shape[1]), False)


def _k_rnn_cell(b: _Builder) -> None:
    a = b.choose_rank((1,))
    n = a.name
    features = a.shape[0]
    cls = b.d.pick(("RNNCell", "GRUCell", "LSTMCell"))
    with_state = b.d.flag()
    hidden = features if with_state else b.d.pick((features, 2, 3))
    args = f"{features}, {hidden}"
    if cls == "RNNCell" and b.d.flag():
        args += ", nonlinearity='relu'"
    module = b.module("cell", f"nn.{cls}({args})")
    if cls == "LSTMCell":
        if with_state:
            h, c = b.partner(a).name, b.partner(a).name
            expr = f"{module}({n}, ({h}, {c}))[0]"
        else:
            expr = f"{module}({n})[0]"
    else:
        expr = f"{module}({n}, {b.partner(a).name})" if with_state else f"{module}({n})"
    b.emit("rnn_cell", f"nn.{cls}" + (" with state" if with_state else ""), [f"{{o}} = {expr}"], (hidden,))


def _k_embedding(b: _Builder) -> None:
    idx = b.indices()
    dim = b.d.pick((3, 4, 2))
    form = b.d.pick(("nn.Embedding", "nn.EmbeddingBag(sum)", "nn.EmbeddingBag(mean)", "nn.EmbeddingBag(max)"))
    if form == "nn.Embedding":
        expr, out = b.module("emb", f"nn.Embedding({NUM_EMBEDDINGS}, {dim})") + f"({idx.name})", (idx.shape[0], dim)
    else:
        mode = form[len("nn.EmbeddingBag(") : -1]
        expr = b.module("bag", f"nn.EmbeddingBag({NUM_EMBEDDINGS}, {dim}, mode={mode!r})") + f"({idx.name})"
        out = (dim,)
    b.emit("embedding", form, [f"{{o}} = {expr}"], out, True)


# Ordered simple -> complex: hypothesis shrinks a block's kind towards the front.
BLOCK_KINDS: dict[str, Callable[[_Builder], None]] = {
    "relu": _k_relu,
    "contiguous": _k_contiguous,
    "dropout": _k_dropout,
    "hardtanh": _k_hardtanh,
    "clamp": _k_clamp,
    "fixed_qparams": _k_fixed_qparams,
    "default_op": _k_default_op,
    "shape": _k_shape,
    "unsqueeze": _k_unsqueeze,
    "squeeze": _k_squeeze,
    "flatten": _k_flatten,
    "unflatten": _k_unflatten,
    "mean": _k_mean,
    "pool": _k_pool,
    "norm": _k_norm,
    "binary": _k_binary,
    "matmul": _k_matmul,
    "cat": _k_cat,
    "linear": _k_linear,
    "conv": _k_conv,
    "conv_transpose": _k_conv_transpose,
    "functional_linear": _k_functional_linear,
    "functional_conv": _k_functional_conv,
    "rnn": _k_rnn,
    "rnn_cell": _k_rnn_cell,
    "embedding": _k_embedding,
}
_KIND_NAMES = tuple(BLOCK_KINDS)


def draw_model_spec(d: Draw, max_blocks: int = 6, kinds: Sequence[str] | None = None) -> ModelSpec:
    """Draw a :class:`ModelSpec` (no torch work); ``kinds`` restricts the block kinds.

    The block count comes first and each block is one group (a hypothesis span):
    the shrinker lowers the count and deletes a block's span together, so any block
    can go, not only the last ones (input choices keep later choices aligned, see
    :meth:`_Builder.fresh_shape`).
    """
    count = d.integer(1, max_blocks)
    seed = d.integer(0, 2**16 - 1)
    names = tuple(kinds) if kinds is not None else _KIND_NAMES
    b = _Builder(d)

    def block(g: Draw) -> None:
        b.d = g
        BLOCK_KINDS[g.pick(names)](b)

    for _ in range(count):
        d.group(block)
    b.d = d
    produced = [block.output for block in b.blocks]
    outputs = tuple(name for name in produced if name not in b.consumed)
    # Inputs in order of first use; that is the forward signature.
    return ModelSpec(inputs=tuple(b.inputs), blocks=tuple(b.blocks), outputs=outputs, seed=seed)


def random_model_spec(rng: random.Random, max_blocks: int = 6, kinds: Sequence[str] | None = None) -> ModelSpec:
    """:func:`draw_model_spec` driven by ``rng`` instead of hypothesis."""
    return draw_model_spec(Draw.from_random(rng), max_blocks, kinds)


@st.composite
def model_specs(draw: Any, max_blocks: int = 6, kinds: Sequence[str] | None = None) -> ModelSpec:
    return draw_model_spec(Draw.from_hypothesis(draw), max_blocks, kinds)


def float_models(max_blocks: int = 6, kinds: Sequence[str] | None = None) -> st.SearchStrategy[GeneratedModel]:
    """Random float models of 1..``max_blocks`` blocks (see the module docstring)."""
    return model_specs(max_blocks, kinds).map(GeneratedModel.build)


# --------------------------------------------------------------------------- recipes

# Ordered simple -> complex for shrinking.
RECIPE_KINDS = ("static_int8", "dynamic_int8", "dynamic_fp16", "static_fp16", "weight_only")
# What a recipe's kind is drawn from: static int8 (it exercises most lowering passes)
# half of the time, shrinking towards it.
_RECIPE_KIND_CHOICES = (
    "static_int8", "dynamic_int8", "static_int8", "dynamic_fp16", "static_int8", "static_fp16", "static_int8", "weight_only",
)
BACKENDS = ("fbgemm", "x86", "qnnpack", "onednn")

# Names a recipe's code may use; its source imports only those it does use.
_QUANTIZATION_NAMES = (
    "QConfig", "QConfigMapping", "default_dynamic_qconfig", "default_qconfig", "default_weight_observer",
    "float16_dynamic_qconfig", "float16_static_qconfig", "float_qparams_weight_only_qconfig",
    "get_default_qconfig", "get_default_qconfig_mapping",
)
_BACKEND_CONFIG_IMPORTS = {
    "get_onednn_backend_config": "from torch.ao.quantization.backend_config import get_onednn_backend_config",
    "get_test_only_legacy_native_backend_config": (
        "from torch.ao.quantization.backend_config.native import get_test_only_legacy_native_backend_config"
    ),
}
_ONEDNN_TRANSPOSE_QCONFIG = (
    "# get_default_qconfig_mapping('onednn') gives transposed convs onednn's per-channel weight\n"
    "# observer: prepare_fx rejects it for nn.ConvTranspose*, and no engine prepacks per-channel\n"
    "# transposed weights for F.conv_transpose*. fbgemm/x86 use per-tensor weights for them.\n"
    "onednn_transpose_qconfig = QConfig(get_default_qconfig('onednn').activation, default_weight_observer)\n"
)


def _imports(code: str) -> str:
    """The import lines (and helper definitions) ``code`` needs."""
    if "onednn_transpose_qconfig" in code:
        code += _ONEDNN_TRANSPOSE_QCONFIG

    def used(name: str) -> bool:
        return re.search(rf"\b{name}\b", code) is not None

    lines = ["import torch.nn as nn"] if used("nn") else []
    if used("F"):
        lines.append("import torch.nn.functional as F")
    names = [name for name in _QUANTIZATION_NAMES if used(name)]
    if names:
        lines.append(f"from torch.ao.quantization import {', '.join(names)}")
    lines += [line for name, line in _BACKEND_CONFIG_IMPORTS.items() if used(name)]
    helper = "\n" + _ONEDNN_TRANSPOSE_QCONFIG if "onednn_transpose_qconfig" in code else ""
    return "\n".join(lines) + "\n" + helper


@functools.cache
def _full_namespace_source() -> str:
    return _imports(" ".join(_QUANTIZATION_NAMES) + " nn F onednn_transpose_qconfig " + " ".join(_BACKEND_CONFIG_IMPORTS))


def _qconfig_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    with _quiet():
        exec(_full_namespace_source(), namespace)
    return namespace


@attrs.frozen
class Recipe:
    """How to quantize: a qconfig mapping and a backend config, as readable code.

    kind:
        ``static_int8``: ``get_default_qconfig_mapping(backend)`` (per-channel
        weights, except qnnpack's per-tensor ones); with ``per_channel=False`` its
        global qconfig is replaced by ``default_qconfig`` (per-tensor weights, MinMax
        activations; object-type entries such as the fixed-qparams ones stay). onednn
        mappings give transposed convs per-tensor weights (see the module docstring). ``dynamic_int8``/``dynamic_fp16``/``static_fp16``:
        an empty mapping with ``default_dynamic_qconfig``/``float16_dynamic_qconfig``/
        ``float16_static_qconfig`` global (static fp16 with torch's test-only legacy
        native backend config: the default one has no static fp16 patterns).
        ``weight_only``: an empty mapping (only embeddings are quantized).
    embeddings_weight_only: ``float_qparams_weight_only_qconfig`` for nn.Embedding
        and nn.EmbeddingBag (always on for ``weight_only``).
    none_modules: submodules given qconfig ``None``, by full dotted path (``layer1.0``).
    onednn_backend_config: use onednn's backend config (``backend="onednn"`` only):
        it fuses LinearLeakyReLU/LinearTanh/ConvAdd2d, whose lowered kernels only run
        on the onednn engine (see :func:`runnable`).
    """

    kind: str
    backend: str | None = None
    per_channel: bool = True
    embeddings_weight_only: bool = False
    none_modules: tuple[str, ...] = ()
    onednn_backend_config: bool = False

    def mapping_source(self) -> str:
        transposes: list[str] = []
        if self.kind == "static_int8":
            code = f"get_default_qconfig_mapping({self.backend!r})"
            if not self.per_channel:
                code += ".set_global(default_qconfig)"
            if self.backend == "onednn":
                transposes = [
                    f".set_object_type({op}, onednn_transpose_qconfig)"
                    for n in (1, 2, 3)
                    for op in (f"nn.ConvTranspose{n}d", f"F.conv_transpose{n}d")
                ]
        elif self.kind == "weight_only":
            code = "QConfigMapping()"
        else:
            code = f"QConfigMapping().set_global({_GLOBAL_QCONFIGS[self.kind]})"
        parts = [code, *transposes]
        if self.embeddings_weight_only or self.kind == "weight_only":
            parts += [
                ".set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)",
                ".set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)",
            ]
        parts += [f".set_module_name({name!r}, None)" for name in self.none_modules]
        return parts[0] if len(parts) == 1 else "(\n    " + "\n    ".join(parts) + "\n)"

    def backend_config_source(self) -> str:
        if self.kind == "static_fp16":
            return "get_test_only_legacy_native_backend_config()"
        if self.onednn_backend_config:
            return "get_onednn_backend_config()"
        return "None"

    def source(self) -> str:
        """Python that defines ``qconfig_mapping`` and ``backend_config``."""
        code = f"qconfig_mapping = {self.mapping_source()}\nbackend_config = {self.backend_config_source()}\n"
        return _imports(code) + "\n" + code

    def qconfig_mapping(self) -> Any:
        """A fresh ``QConfigMapping`` (evaluated from :meth:`mapping_source`)."""
        with _quiet():
            return eval(self.mapping_source(), _qconfig_namespace())

    def backend_config(self) -> Any:
        return eval(self.backend_config_source(), _qconfig_namespace())

    def tags(self) -> list[str]:
        """Recipe features, for coverage checks."""
        tags = [self.kind]
        if self.kind == "static_int8":
            tags += [f"backend={self.backend}", "per_channel" if self.per_channel else "per_tensor"]
        if self.embeddings_weight_only and self.kind != "weight_only":
            tags.append("embeddings_weight_only")
        if self.none_modules:
            tags.append("none_modules")
        if self.onednn_backend_config:
            tags.append("onednn_backend_config")
        return tags


_GLOBAL_QCONFIGS = {
    "dynamic_int8": "default_dynamic_qconfig",
    "dynamic_fp16": "float16_dynamic_qconfig",
    "static_fp16": "float16_static_qconfig",
}


def _onednn_config_ok(model: nn.Module | None) -> bool:
    """Whether prepare_fx can use onednn's backend config on ``model`` at all."""
    if model is None:
        return True
    # onednn's backend config fuses Linear + nn.Tanh into LinearTanh, and prepare_fx then
    # raises LookupError: get_default_qconfig_mapping gives nn.Tanh a fixed-qparams
    # qconfig, unlike nn.Linear's. Always, so not offered for models with an nn.Tanh.
    if any(isinstance(module, nn.Tanh) for module in model.modules()):
        return False
    return not _adds_module_output_to_itself(model)


def _adds_module_output_to_itself(model: nn.Module) -> bool:
    """Whether the model computes ``m(x) + m(x)`` (one node twice) for a module call.

    onednn's conv-add fusion matches ``add(conv, conv)`` with both operands the same
    node, and its root-node getter then fails to unpack the pattern (ValueError in
    prepare_fx) -- always, so such models get no onednn backend config.
    """
    graph = torch.fx.symbolic_trace(model).graph
    return any(
        node.op == "call_function"
        and node.target in (operator.add, torch.add)
        and len(node.args) >= 2
        and node.args[0] is node.args[1]
        and getattr(node.args[0], "op", None) == "call_module"
        for node in graph.nodes
    )


def draw_recipe(d: Draw, model: nn.Module | None = None, onednn_fusions: bool = False) -> Recipe:
    """Draw a :class:`Recipe` for ``model`` (its submodule names get ``None`` qconfigs)."""
    module_names = [name for name, _ in model.named_modules() if name] if model is not None else []
    kind = d.pick(_RECIPE_KIND_CHOICES)
    backend, per_channel, onednn = None, True, False
    if kind == "static_int8":
        backend = d.pick(BACKENDS)
        per_channel = not d.flag()
        if onednn_fusions and backend == "onednn" and _onednn_config_ok(model):
            onednn = d.flag()
    embeddings = kind != "weight_only" and d.flag()
    none_modules: list[str] = []
    if module_names and d.flag():
        for _ in range(d.integer(1, min(3, len(module_names)))):
            name = d.pick(module_names)
            if name not in none_modules:
                none_modules.append(name)
    return Recipe(kind, backend, per_channel, embeddings, tuple(none_modules), onednn)


def random_recipe(rng: random.Random, model: nn.Module | None = None, onednn_fusions: bool = False) -> Recipe:
    """:func:`draw_recipe` driven by ``rng`` instead of hypothesis."""
    return draw_recipe(Draw.from_random(rng), model, onednn_fusions)


@st.composite
def recipes(draw: Any, model: nn.Module | None = None, onednn_fusions: bool = False) -> Recipe:
    """Random recipes for ``model``: ``None`` qconfigs go to some of its submodules.

    ``onednn_fusions=True`` lets static onednn recipes use onednn's backend config
    (lowered models with its fused kernels are not :func:`runnable` here); without it
    onednn recipes use the native backend config, and every example is runnable.
    """
    return draw_recipe(Draw.from_hypothesis(draw), model, onednn_fusions)


# --------------------------------------------------------------------------- examples


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation notices (`quiet_torch_quantization`)
    and the advice it gives when preparing for onednn."""
    with quiet_torch_quantization(), warnings.catch_warnings():
        for message in (r"Default qconfig of oneDNN backend", r".*torch\.ao\.quantization.*"):
            warnings.filterwarnings("ignore", message=message)
        yield


@attrs.frozen(repr=False, eq=False)
class Example:
    """A float model, a recipe, the captured reference model and inputs to check on.

    ``reference.example_inputs`` are the calibration inputs
    (:data:`CALIBRATION_BATCH` samples); ``inputs_for_checking`` are fresh ones
    (:data:`CHECK_BATCH` samples) of the same per-sample shapes.
    """

    model_source: str
    recipe: Recipe
    float_model: GeneratedModel
    reference: ReferenceModel
    inputs_for_checking: tuple[torch.Tensor, ...]
    data_seed: int

    def __repr__(self) -> str:
        return (
            self.model_source
            + "\n"
            + self.recipe.source()
            + "\nfrom fqlower.reference import reference_model\n\n"
            + "torch.set_num_threads(1)\n"
            + f"reference = reference_model(\n    model, make_inputs({CALIBRATION_BATCH}, {self.data_seed}), "
            + "qconfig_mapping, backend_config=backend_config\n)\n"
            + f"inputs_for_checking = make_inputs({CHECK_BATCH}, {self.data_seed + 1})\n"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        _pretty_lines(printer, repr(self))


@functools.cache
def _shared_backend_config(source: str) -> Any:
    """One BackendConfig per recipe source, shared by all examples.

    torch builds the native config from scratch whenever it is given ``None`` (three
    times per example: fuse, prepare, convert; ~10 ms each); passing the same,
    equal object instead changes nothing else (prepare/convert/fuse substitute
    ``get_native_backend_config()`` for ``None`` and never mutate the config).
    """
    if source == "None":
        from torch.ao.quantization.backend_config import get_native_backend_config

        return get_native_backend_config()
    return eval(source, _qconfig_namespace())


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch single-threaded: on a busy machine every OpenMP region of a tiny op
    otherwise waits ~10 ms for a second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_example(model: GeneratedModel, recipe: Recipe, data_seed: int) -> Example:
    """Calibrate and capture ``model`` under ``recipe`` (what :func:`examples` draws).

    Runs single-threaded (the printed reproducer says so too: thread count can change
    float reductions, hence observed ranges, in the last bit).
    """
    calibration = model.make_inputs(CALIBRATION_BATCH, data_seed)
    with _quiet(), single_threaded():
        reference = reference_model(
            model,
            calibration,
            recipe.qconfig_mapping(),
            backend_config=_shared_backend_config(recipe.backend_config_source()),
        )
    return Example(
        model_source=model.source(),
        recipe=recipe,
        float_model=model,
        reference=reference,
        inputs_for_checking=model.make_inputs(CHECK_BATCH, data_seed + 1),
        data_seed=data_seed,
    )


@st.composite
def examples(
    draw: Any, max_blocks: int = 6, kinds: Sequence[str] | None = None, onednn_fusions: bool = False
) -> Example:
    """A drawn model and recipe, calibrated and captured as a reference model."""
    model = draw(float_models(max_blocks, kinds))
    recipe = draw(recipes(model, onednn_fusions))
    data_seed = draw(st.integers(0, 2**16 - 1))
    return build_example(model, recipe, data_seed)


# Fused modules whose lowered kernels exist only in the onednn engine (quantized::
# linear_leaky_relu, linear_tanh, conv2d_add, conv2d_add_relu); on this machine's
# fbgemm/x86 engines they crash or segfault.
ONEDNN_ONLY_FUSED = (nni.LinearLeakyReLU, nni.LinearTanh, nni.ConvAdd2d, nni.ConvAddReLU2d)


def runnable(example: Example) -> bool:
    """False when the lowered model would need onednn-only fused kernels."""
    return not any(isinstance(module, ONEDNN_ONLY_FUSED) for module in example.reference.module.modules())


def block_tags(spec: ModelSpec) -> list[str]:
    """``kind`` and ``kind:variant`` of every block, ``scoped`` and ``depth=<levels>``, for coverage checks."""
    tags = []
    for block in spec.blocks:
        tags += [block.kind, f"{block.kind}:{block.variant}", f"depth={len(block.path)}"]
        if block.scoped:
            tags.append("scoped")
    return tags

