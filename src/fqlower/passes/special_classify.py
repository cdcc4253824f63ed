"""What the special-pattern pass sees at an anchor (a quantize_per_tensor or a
`.to(torch.float16)`): which of its rules applies (`classify`) and, when one almost
does, why not; and the program as the pass found it (`PassStart`: shared modules)."""

from __future__ import annotations

import functools
import operator
from typing import Any

import attrs
import torch
import torch.ao.nn.quantized as nnq
import torch.nn as nn

from fqlower.ir import FrozenDict, ListArg, Node, ProgramView, Ref, map_arg, refs_in
from fqlower.passes.common import from_reference, same_value, source_of_constant, source_of_module
from fqlower.passes.kernel_bugs import kernel_problem, view_of_channels_last
from fqlower.passes.module_options import option_problem
from fqlower.passes.quantized_op_call import match_quantized_op
from fqlower.patterns import DEFAULT, FIXED_QPARAMS, SPECIAL_FAMILIES, SPECIAL_MODULES
from fqlower.engine.pipeline import Match, Miss
from fqlower.reasons import Code

SWAP_MODULE = "swap-module"
QUANTIZED_OP = "quantized-op"
REROUTE = "reroute"

Outcome = tuple[str, "Match | Miss"]

# family members with no float16 kernel on the CPU (torch 2.13), which a
# `.to(torch.float16)` anchor would make read float16 values
NO_HALF_CPU_KERNEL: frozenset[tuple[str, Any]] = frozenset({("call_function", torch._C._nn.avg_pool3d)})
NO_HALF_CPU_KERNEL_MODULES: tuple[type, ...] = (nn.AvgPool3d,)

# family members that torch lowers to run on a quantized tensor, which no kernel accepts
NO_QUANTIZED_KERNEL: frozenset[tuple[str, Any]] = frozenset(
    {("call_function", operator.floordiv), ("call_method", "sigmoid_"), ("call_method", "tanh_")}
)


# --- the program as the pass found it ------------------------------------------------------


@attrs.frozen
class PassStart:
    """What torch reads once, before its loop: the modules (by path), and, computed
    here, which shared swappable modules torch would lower wrongly."""

    program: ProgramView
    shared_misses: FrozenDict = FrozenDict()  # module path -> Miss

    @classmethod
    def of(cls, program: ProgramView) -> PassStart:
        start = cls(program)
        sites: dict[str, list[str]] = {}
        for node in program.nodes():
            if node.op == "call_module" and type(program.modules.get(node.target)) in SPECIAL_MODULES:
                sites.setdefault(node.target, []).append(node.name)
        reasons = {}
        for path, names in sites.items():
            if len(names) > 1:
                reason = _shared_module_problem(start, path, names)
                if reason is not None:
                    reasons[path] = reason
        return attrs.evolve(start, shared_misses=FrozenDict(reasons))

    def module(self, node: Node) -> Any:
        return self.program.modules.get(node.target) if node.op == "call_module" else None


def _shared_module_problem(start: PassStart, path: str, sites: list[str]) -> Miss | None:
    """Why swapping the module at `path`, called by several nodes, would be wrong; None when right.

    torch swaps the module once per lowered call, each time building it from the
    original with that call's output qparams: the last swap wins for all calls.
    """
    quantized = SPECIAL_MODULES[type(start.program.modules[path])]
    if quantized is nnq.Dropout:  # from_reference ignores the qparams; forward returns its input
        return None
    program = start.program
    calls = ", ".join(f"%{site}" for site in sites)
    qparams = []
    for site in sites:
        users = program.users(site)
        if not users:  # dead: removed by dead-code elimination, here as in torch
            continue
        outcome = classify(start, program, program.node(users[0]), check_shared=False) if len(users) == 1 else None
        if outcome is None or outcome[0] != SWAP_MODULE or not isinstance(outcome[1], Match):
            return Miss(
                f"module {path!r} is called by {calls}; torch would swap it for a {quantized.__name__}, "
                f"and %{site}, which it does not lower, would then run it on a float input",
                Code.TORCH_MODEL_CRASHES,
            )
        roles = outcome[1].bindings
        qparams.append(tuple(program.constants[program.node(roles[role]).target] for role in ("scale", "zero_point")))
    if not all(same_value(a, b) for other in qparams[1:] for a, b in zip(qparams[0], other)):  # [] or [one]: fine
        return Miss(
            f"module {path!r} is called by {calls} with different output scales or zero points; "
            "torch would give every call those of the last",
            Code.TORCH_WRONG_RESULT,
        )
    return None


# --- matching --------------------------------------------------------------------------------


def is_to_float16(node: Node) -> bool:
    return node.op == "call_method" and node.target == "to" and len(node.args) == 2 and node.args[1] == torch.float16


def _in_families(start: PassStart, node: Node, families: tuple[Any, ...]) -> bool:
    module = start.module(node)
    return any(family.kind_of(node.op, node.target, module) for family in families)


def _dequantize_list(program: ProgramView, ref: Node, first: Any) -> list[Node] | Miss | None:
    """The dequantize nodes torch bypasses (`first` is ref's first input), None when
    `first` is not dequantized, or why torch would fail on it."""
    items = (first,) if isinstance(first, Ref) else first.items if isinstance(first, ListArg) else first
    if not isinstance(first, Ref) and not items:
        return Miss(f"%{ref.name} has an empty list of inputs")
    found = []
    for item in items:  # torch's all(...) stops at the first item that is not a dequantize
        if not isinstance(item, Ref):
            return Miss(f"an input of %{ref.name} is {item!r}, not a node: torch would fail reading its op", Code.TORCH_CRASHES)
        node = program.node(item.name)
        if not (node.op == "call_method" and node.target == "dequantize"):
            return None
        if not node.args:
            return Miss(f"%{node.name} is a dequantize without positional input: torch would fail reading it", Code.TORCH_CRASHES)
        if node not in found:
            found.append(node)
    return found


def _bypass(value: Any, dequantize: list[Node]) -> Any:
    """`value` with each dequantize replaced by its input, one after the other
    (torch's `replace_input_with`, every occurrence)."""
    for node in dequantize:
        value = map_arg(value, functools.partial(_bypass_one, node))
    return value


def _bypass_one(dequantize: Node, ref: Ref) -> Any:
    return dequantize.args[0] if ref.name == dequantize.name else ref


def classify(start: PassStart, program: ProgramView, anchor: Node, check_shared: bool = True) -> Outcome | None:
    """(rule, Match or Miss) for an anchor of torch's special pattern; None when torch passes it by."""
    is_quantize = anchor.op == "call_function" and anchor.target is torch.quantize_per_tensor
    if not is_quantize and not is_to_float16(anchor):
        return None
    role = "quantize" if is_quantize else "to_float16"
    if not anchor.args:
        return REROUTE, Miss(f"%{anchor.name} gets its input by keyword: torch reads args[0] and fails", Code.TORCH_CRASHES)
    if not isinstance(anchor.args[0], Ref):
        return REROUTE, Miss(
            f"%{anchor.name} quantizes {anchor.args[0]!r}, not a node: torch would fail reading its op", Code.TORCH_CRASHES
        )
    ref = program.node(anchor.args[0].name)
    if not is_quantize and _in_families(start, ref, (FIXED_QPARAMS, DEFAULT)):
        return None
    if not _in_families(start, ref, SPECIAL_FAMILIES):
        return None
    module = start.module(ref)
    if ref.op == "call_module" and type(module) in SPECIAL_MODULES and is_quantize:
        rule = SWAP_MODULE
    elif DEFAULT.kind_of(ref.op, ref.target, module) == "function":
        rule = QUANTIZED_OP
    else:
        rule = REROUTE
    if not ref.args and not ref.kwargs:
        return rule, Miss(f"%{ref.name} has no inputs: torch asserts it has some", Code.TORCH_CRASHES)
    first = ref.args[0] if ref.args else next(iter(ref.kwargs.values()))
    if not isinstance(first, (Ref, tuple, ListArg)):
        return rule, Miss(f"the first input of %{ref.name} is {first!r}: torch asserts a node, tuple or list", Code.TORCH_CRASHES)
    dequantize = _dequantize_list(program, ref, first)
    if dequantize is None or isinstance(dequantize, Miss):
        return None if dequantize is None else (rule, dequantize)

    # torch rewrites here (or fails while doing so)
    if is_quantize and (ref.op, ref.target) in NO_QUANTIZED_KERNEL:
        what = ref.target if ref.op == "call_method" else ref.target.__name__
        return rule, Miss(f"%{ref.name} ({what}) has no quantized kernel: torch's lowered model would fail running it", Code.TORCH_MODEL_CRASHES)
    if is_quantize:
        wrong_kernel = kernel_problem(program, ref, module)
        if wrong_kernel is None and rule == SWAP_MODULE:
            wrong_kernel = option_problem(ref, module)
        if wrong_kernel is not None:
            return rule, wrong_kernel
    if not is_quantize and ((ref.op, ref.target) in NO_HALF_CPU_KERNEL or isinstance(module, NO_HALF_CPU_KERNEL_MODULES)):
        return rule, Miss(f"%{ref.name} has no float16 CPU kernel: rerouting it to read float16 would fail at run time", Code.TORCH_MODEL_CRASHES)
    float_input = next((node for node in dequantize if _computes_in_float(program, node.args[0])), None)
    if float_input is not None:
        return rule, Miss(
            f"%{float_input.name} dequantizes %{float_input.args[0].name}, which computes in float: "
            f"torch would hand %{ref.name} a float tensor where it expects a quantized one",
            Code.TORCH_MODEL_CRASHES,
        )
    others = [user for user in program.users(ref.name) if user != anchor.name and not _reads_quantized(program, user)]
    if others:
        listed = ", ".join(f"%{user}" for user in others)
        return rule, Miss(f"%{ref.name} is also used by {listed}, which torch would hand its quantized output", Code.TORCH_WRONG_RESULT)
    bypassed = {node.name for node in dequantize}
    inputs = refs_in((ref.args, ref.kwargs))
    left = [r.name for r in inputs if r.name not in bypassed and _is_dequantize(program, r.name)]
    if left:
        return rule, Miss(
            f"%{ref.name} also reads the dequantized %{left[0]}, which torch would leave in place "
            f"while bypassing %{dequantize[0].name}",
            Code.TORCH_MODEL_CRASHES,
        )
    params = [arg for arg in anchor.args[1:] if isinstance(arg, Ref)]
    odd = [p.name for p in params if p.name == ref.name or p.name in bypassed]
    if odd:
        return rule, Miss(f"%{anchor.name} computes its parameters from its own input (%{odd[0]}): torch would fail erasing them", Code.TORCH_CRASHES)
    args = _bypass(ref.args, dequantize)
    kwargs = _bypass(ref.kwargs, dequantize)
    roles = {role: anchor.name, "reference": ref.name}
    if len(dequantize) == 1 and isinstance(first, Ref):
        roles["dequantize"] = dequantize[0].name
    else:
        roles.update((f"dequantize_{index}", node.name) for index, node in enumerate(dequantize))

    if rule == QUANTIZED_OP:
        return rule, match_quantized_op(program, anchor, ref, roles, args, kwargs)
    if rule == SWAP_MODULE:
        found = _swap_qparams(program, anchor)
        if isinstance(found, Miss):
            return rule, found
        if check_shared and ref.target in start.shared_misses:
            return rule, start.shared_misses[ref.target]
        roles.update(scale=found[0].name, zero_point=found[1].name)
    erase = _erasable(program, anchor, params)
    if isinstance(erase, Miss):
        return rule, erase
    facts = {"args": args, "kwargs": kwargs, "erase": erase}
    if rule == SWAP_MODULE:
        scale, zero_point = (program.node(roles[role]) for role in ("scale", "zero_point"))
        facts["module"] = from_reference(
            SPECIAL_MODULES[type(module)],
            source_of_module(start.program, ref.target),
            source_of_constant(program, scale.target),
            source_of_constant(program, zero_point.target),
        )
    reshape = view_of_channels_last(program, ref) if rule == REROUTE else None
    if reshape is not None:
        facts["method"] = "reshape"
        return rule, Match(anchor.name, FrozenDict(roles), FrozenDict(facts), Code.TORCH_MODEL_CRASHES, reshape)
    return rule, Match(anchor.name, FrozenDict(roles), FrozenDict(facts))


# methods that give the same answer on a quantized tensor as on its dequantized value
QUANTIZED_SAFE_METHODS = frozenset({"dequantize", "size", "dim", "numel"})


def _reads_quantized(program: ProgramView, name: str) -> bool:
    """True when node `name` works on the quantized output of a rerouted op as it
    did on the float one (a dequantize, or a size query)."""
    node = program.node(name)
    return node.op == "call_method" and node.target in QUANTIZED_SAFE_METHODS


def _computes_in_float(program: ProgramView, arg: Any) -> bool:
    """True when `arg` is the output of an op that reads a dequantized value and is no
    quantize: an op left in float, whose output a dequantize cannot make quantized."""
    if not isinstance(arg, Ref):
        return False
    node = program.node(arg.name)
    if node.op not in ("call_function", "call_method", "call_module") or is_to_float16(node):
        return False
    if node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.quantize_per_channel):
        return False
    return any(_is_dequantize(program, used) for used in node.refs())


def _is_dequantize(program: ProgramView, name: str) -> bool:
    node = program.node(name)
    return node.op == "call_method" and node.target == "dequantize"


def _swap_qparams(program: ProgramView, anchor: Node) -> tuple[Node, Node] | Miss:
    """The scale and zero-point nodes torch reads with `getattr(model, node.target)`."""
    if len(anchor.args) < 3:
        return Miss(f"%{anchor.name} passes its scale or zero point by keyword: torch reads args[1:3] and fails", Code.TORCH_CRASHES)
    found = []
    for role, arg in (("scale", anchor.args[1]), ("zero point", anchor.args[2])):
        node = program.node(arg.name) if isinstance(arg, Ref) else None
        if node is None or node.op != "get_attr":
            return Miss(f"the {role} of %{anchor.name} is not read from a constant: torch would fail reading it", Code.TORCH_CRASHES)
        if "." in node.target:
            return Miss(
                f"the {role} of %{anchor.name} is {node.target!r}, not an attribute of the model itself: "
                "torch would fail reading it",
                Code.TORCH_CRASHES,
            )
        found.append(node)
    return found[0], found[1]


def _erasable(program: ProgramView, anchor: Node, params: list[Ref]) -> tuple[str, ...] | Miss:
    """The parameter nodes of the anchor that torch erases with it."""
    names = tuple(dict.fromkeys(param.name for param in params))
    for name in names:
        others = [user for user in program.users(name) if user != anchor.name]
        if others:
            return Miss(
                f"%{name}, a parameter of %{anchor.name}, is also used by %{others[0]}: torch would fail erasing it", Code.TORCH_CRASHES
            )
        if program.node(name).op == "placeholder":
            return Miss(f"%{name}, a parameter of %{anchor.name}, is a graph input: torch would delete it", Code.TORCH_MODEL_CRASHES)
    return names
