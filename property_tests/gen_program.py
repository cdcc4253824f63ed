"""The generated models' building blocks: constants, specs (`Value`, `Block`,
`ModelSpec`), `GeneratedModel` and its source, and the drawing helpers (`Draw`,
`_Builder`) the block kinds use. See models.py."""

from __future__ import annotations

import contextlib
import functools
import math
import random
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

from scopes import PLACEMENTS, Tree, access, attach, attach_source

from fqlower.reference import quiet_torch_quantization

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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation notices (`quiet_torch_quantization`)
    and the advice it gives when preparing for onednn."""
    with quiet_torch_quantization(), warnings.catch_warnings():
        for message in (r"Default qconfig of oneDNN backend", r".*torch\.ao\.quantization.*"):
            warnings.filterwarnings("ignore", message=message)
        yield
