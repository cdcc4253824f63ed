"""The two sides of one change, as runnable fragments over the same free inputs.

    before:  %q = quantize(%x, s, z) ─▶ dequantize ─▶ ref.Linear ─▶ quantize(·, s1, z1) ─▶ %user
    after:   %q ──────────────────────────────────▶ quantized Linear(s1, z1) ───────────▶ %user

A change's *site* is every node it names (its bindings, and the nodes its edits add,
remove, re-argument, retarget, move, or whose module or constant they replace). The
*before* fragment is the site in the program before the change, the *after* fragment
the site in the program after it; each brings the get_attr constants it reads and its
modules, specs materialised. Free inputs are the nodes outside the site that either
side reads; outputs are paired through the nodes outside the site that read the site:
the reader's references into the site, position by position, before and after.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.emit.to_fx import fx_arg, materialize
from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetModule, SetTarget
from fqlower.ir import Build, Program
from fqlower.log import Change


@attrs.frozen
class Step:
    """One node of a fragment: what it calls, on arguments that name other nodes (Refs)."""

    name: str
    op: str
    target: Any
    args: tuple[Any, ...]
    kwargs: Any


@attrs.frozen
class Fragment:
    """A runnable piece of one program: `run(inputs)` returns the values of `outputs`.

    It runs its steps directly, as torch.fx's Interpreter would run them, with its modules
    and constants materialised (`objects`, by node name): no GraphModule is built to check
    a change. `module()` builds one, for a reproducer."""

    steps: tuple[Step, ...]
    objects: dict[str, Any] = attrs.field(eq=False, repr=False)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The program nodes it computes, in order."""
        return tuple(step.name for step in self.steps)

    @functools.cached_property
    def mutates(self) -> bool:
        """Whether a step may write into a tensor it reads (onednn's binary conv
        accumulates into its `qaccum`; `relu_`): then each run gets copies of its inputs."""
        return any(_mutating(step) for step in self.steps)

    def run(self, inputs: tuple[Any, ...], record: dict[str, Any] | None = None) -> tuple[Any, ...]:
        """The outputs on `inputs`; with `record`, every computed node's value into it.
        `inputs` are left as they were."""
        if self.mutates:
            inputs = tuple(value.clone() if isinstance(value, torch.Tensor) else value for value in inputs)
        env: dict[str, Any] = dict(zip(self.inputs, inputs))
        objects = self.objects
        for step in self.steps:
            if step.op == "get_attr":
                result = objects[step.name]
            else:
                args, kwargs = fx_arg(step.args, env), fx_arg(step.kwargs, env)
                if step.op == "call_function":
                    result = step.target(*args, **kwargs)
                elif step.op == "call_method":
                    result = getattr(args[0], step.target)(*args[1:], **kwargs)
                else:
                    result = objects[step.name](*args, **kwargs)
            env[step.name] = result
            if record is not None:
                record[step.name] = result
        return tuple(env[name] for name in self.outputs)

    def module(self) -> torch.fx.GraphModule:
        """The same computation as a GraphModule: inputs `in_0`, ..., a tuple of outputs."""
        graph = torch.fx.Graph()
        root = torch.nn.Module()
        env: dict[str, Any] = {name: graph.placeholder(f"in_{index}") for index, name in enumerate(self.inputs)}
        for index, step in enumerate(self.steps):
            if step.op == "get_attr":
                value = self.objects[step.name]
                attr = f"constant_{index}"
                if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                    root.register_buffer(attr, value)
                else:
                    setattr(root, attr, value)
                env[step.name] = graph.get_attr(attr)
            elif step.op == "call_module":
                path = f"module_{index}"
                root.add_module(path, self.objects[step.name])
                env[step.name] = graph.call_module(path, fx_arg(step.args, env), fx_arg(step.kwargs, env))
            else:
                env[step.name] = graph.create_node(step.op, step.target, fx_arg(step.args, env), fx_arg(step.kwargs, env))
        graph.output(tuple(env[name] for name in self.outputs))
        return torch.fx.GraphModule(root, graph)


@attrs.frozen
class Sides:
    before: Fragment
    after: Fragment


class Readers:
    """Which nodes call a module path or read a constant: an index of a program, kept
    current by `note`ing each change's edits. Nodes since removed or retargeted are
    filtered out when asked, so only the edits that add a reader need noting."""

    def __init__(self, program: Program):
        self._by_target: dict[tuple[str, Any], set[str]] = {}
        for node in program.graph.nodes.values():
            self._add(node.name, node.op, node.target)

    def _add(self, name: str, op: str, target: Any) -> None:
        if op in ("call_module", "get_attr"):
            self._by_target.setdefault((op, target), set()).add(name)

    def note(self, edits: Iterable[Edit]) -> None:
        for edit in edits:
            if isinstance(edit, AddNode):
                self._add(edit.node.name, edit.node.op, edit.node.target)
            elif isinstance(edit, SetTarget):
                self._add(edit.name, edit.op, edit.target)

    def of(self, programs: tuple[Program, ...], op: str, target: str) -> list[str]:
        """The nodes that call or read `target` in any of `programs`."""
        return [
            name
            for name in sorted(self._by_target.get((op, target), ()))
            if any(name in program and program.node(name).op == op and program.node(name).target == target for program in programs)
        ]


def site(change: Change, before: Program, after: Program, readers: Readers) -> set[str]:
    """Every node the change names, in either program."""
    names = set(change.bindings.values()) | {change.anchor}
    for edit in change.edits:
        names.update(_named(edit, (before, after), readers))
    return {name for name in names if name in before or name in after}


def _named(edit: Edit, programs: tuple[Program, Program], readers: Readers) -> Iterable[str]:
    if isinstance(edit, AddNode):
        return (edit.node.name,)
    if isinstance(edit, (RemoveNode, SetArgs, SetTarget, MoveNode)):
        return (edit.name,)
    if isinstance(edit, ReplaceUses):
        return (edit.old, edit.new)
    if isinstance(edit, SetModule):
        return readers.of(programs, "call_module", edit.path)
    if isinstance(edit, SetConstant):
        return readers.of(programs, "get_attr", edit.attr)
    return ()


def sides(change: Change, before: Program, after: Program, readers: Readers | None = None, built: dict[Build, Any] | None = None) -> Sides:
    """The before and after fragments of `change` (see the module docstring). `readers`
    indexes `before` (built here when not given: a walk over every node); `built`
    memoises the modules built from specs (emit.to_fx.materialize)."""
    if readers is None:
        readers = Readers(before)
        readers.note(change.edits)
    names = _closed(site(change, before, after, readers), (before, after))
    outside_readers = sorted(
        {user for program in (before, after) for name in names if name in program for user in program.users(name)} - names
    )
    outputs_before, outputs_after = [], []
    for reader in outside_readers:
        if reader not in before or reader not in after:
            continue
        refs_before = [ref for ref in before.node(reader).refs() if ref in names]
        refs_after = [ref for ref in after.node(reader).refs() if ref in names]
        for old, new in zip(refs_before, refs_after):
            if old not in outputs_before or new not in outputs_after:
                outputs_before.append(old)
                outputs_after.append(new)
    inputs = sorted(_inputs(before, names) | _inputs(after, names))
    built = built if built is not None else {}
    matched = _fragment(before, names, inputs, outputs_before, built)
    try:
        produced = _fragment(after, names, inputs, outputs_after, built)
    except Exception as error:
        raise UnbuildableProduct(f"{type(error).__name__}: {error}") from error
    return Sides(matched, produced)


class UnbuildableProduct(Exception):
    """The produced side's modules or constants cannot be built from their specs."""


def _closed(names: set[str], programs: tuple[Program, ...]) -> set[str]:
    """`names` with every node it reads that is computed from `names` alone (constants
    aside): the dequantize between a bound quantize and the op, say. Free inputs are then
    independent values, so drawing each apart gives inputs the site could meet."""
    names = set(names)
    while True:
        more = {
            ref
            for program in programs
            for name in names
            if name in program
            for ref in program.node(name).refs()
            if ref not in names
            and program.node(ref).op not in ("placeholder", "get_attr")
            and program.node(ref).refs()
            and all(inner in names or program.node(inner).op == "get_attr" for inner in program.node(ref).refs())
        }
        if not more:
            return names
        names |= more


def _inputs(program: Program, names: set[str]) -> set[str]:
    """Nodes outside `names` that the site reads, get_attr constants excepted (they are
    taken into the fragment)."""
    found = set()
    for name in names:
        if name not in program:
            continue
        for ref in program.node(name).refs():
            if ref not in names and program.node(ref).op != "get_attr":
                found.add(ref)
    return found


def _fragment(program: Program, names: set[str], inputs: list[str], outputs: list[str], built: dict[Build, Any]) -> Fragment:
    steps, objects = [], {}
    wanted = {name for name in names if name in program} | set(_constants_read(program, names))
    for name in sorted(wanted, key=program.position):
        if name in inputs:
            continue
        node = program.node(name)
        if node.op == "get_attr":
            objects[name] = _runnable(materialize(program, program.constants[node.target], built), name)
        elif node.op == "call_module":
            objects[name] = _runnable(materialize(program, program.modules[node.target], built), name)
        elif node.op not in ("call_function", "call_method"):
            continue  # placeholder or output: never part of a site's computation
        steps.append(Step(name, node.op, node.target, node.args, node.kwargs))
    return Fragment(tuple(steps), objects, tuple(inputs), tuple(outputs))


def _mutating(step: Step) -> bool:
    if step.op == "call_method":
        return str(step.target).endswith("_")
    if step.op != "call_function":
        return False
    schema = getattr(step.target, "_schema", None)
    if schema is not None:
        return bool(schema.is_mutable)
    overloads = getattr(step.target, "overloads", None)
    if callable(overloads):  # an OpOverloadPacket: any of its overloads
        return any(getattr(step.target, name)._schema.is_mutable for name in overloads())
    return getattr(step.target, "__name__", "").endswith("_")


def _runnable(value: Any, name: str) -> Any:
    """`value`, unless it is a packed conv weight or a quantized conv module whose kernel
    would kill the process rather than raise: qnnpack's conv prepack takes a stride of 0,
    and its kernel then divides by it (SIGFPE)."""
    packed = getattr(value, "_packed_params", value)
    stride = packed.stride() if isinstance(packed, torch._C.ScriptObject) and hasattr(packed, "stride") else None
    if stride is not None and not all(step >= 1 for step in stride):
        raise ValueError(f"%{name} is a quantized conv with stride {list(stride)}: its kernel divides by the stride")
    return value


def _constants_read(program: Program, names: set[str]) -> list[str]:
    return [ref for name in names if name in program for ref in program.node(name).refs() if program.node(ref).op == "get_attr"]
