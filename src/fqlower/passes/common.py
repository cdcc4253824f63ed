"""Queries the lowering passes share: what a node is, where its pieces are.

Everything here reads a program; nothing builds edits except `reroute_dequantized`,
which only computes new args.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from typing import Any

import attrs
import torch
from torch import nn

from fqlower.ir import Build, FrozenDict, Node, Original, ProgramView, Ref, map_arg
from fqlower.names import qualified_name
from fqlower.patterns import RELU_FUNCTIONS, TRANSPOSED_CONVS, WEIGHT_QUANTIZER_ARGS
from fqlower.engine.pipeline import Match, Miss
from fqlower.reasons import Code


def node_of(program: ProgramView, arg: Any) -> Node | None:
    """The node an argument refers to, or None for a constant."""
    return program.node(arg.name) if isinstance(arg, Ref) else None


def is_dequantize(program: ProgramView, arg: Any) -> bool:
    """True when `arg` refers to a `.dequantize()` of another node (not of a constant)."""
    node = node_of(program, arg)
    return node is not None and node.op == "call_method" and node.target == "dequantize" and bool(node.args) and isinstance(node.args[0], Ref)


def is_quantize_per_tensor(node: Node) -> bool:
    return node.op == "call_function" and node.target is torch.quantize_per_tensor


def is_call_module(node: Node) -> bool:
    return node.op == "call_module"


def is_call_function(node: Node) -> bool:
    return node.op == "call_function"


def is_call_method(node: Node) -> bool:
    return node.op == "call_method"


_ABSENT = object()


def qconfig_is_none(program: ProgramView, name: str) -> bool:
    """True when the qconfig map says: do not quantize this node."""
    return program.qconfig.get(name, _ABSENT) is None  # one PMap lookup, not `in` and `[]`


def module_of(program: ProgramView, node: Node) -> Any:
    """The module a call_module node calls (None for other nodes)."""
    return program.modules.get(node.target) if node.op == "call_module" else None


_RELU_FUNCTION_IDS = frozenset(map(id, RELU_FUNCTIONS))  # `target is relu` for one of them, as a set lookup


def is_relu(program: ProgramView, node: Node) -> bool:
    if node.op == "call_function":
        return id(node.target) in _RELU_FUNCTION_IDS
    return node.op == "call_module" and type(module_of(program, node)) is nn.ReLU


def quantized_op_behind(program: ProgramView, quantize: Node) -> tuple[Node | None, Node | None]:
    """For `quantize_per_tensor(op(...))` or `quantize_per_tensor(relu(op(...)))`:
    (op, relu or None); (None, None) when `quantize` is no quantize_per_tensor."""
    if not is_quantize_per_tensor(quantize):
        return None, None
    op = node_of(program, quantize.arg(0, "input"))
    if op is not None and is_relu(program, op):
        return node_of(program, op.arg(0, "input")), op
    return op, None


def source_of_module(program: ProgramView, path: str) -> Original | Build:
    """How a spec refers to the module now at `path`: the input's object, or the spec
    an earlier pass put there."""
    current = program.modules[path]
    if isinstance(current, Build):
        return current
    if program.originals.get(path) is current:
        return Original(path)
    raise ValueError(f"module at {path!r} is neither from the input nor a spec")


def source_of_constant(program: ProgramView, attr: str) -> Any:
    """How a spec refers to the constant now at `attr`."""
    current = program.constants[attr]
    if program.originals.get(attr) is current:
        return Original(attr)
    return current


def constant_of(program: ProgramView, arg: Any) -> Any:
    """The constant a get_attr node reads, for a Ref to one (or its name); None otherwise."""
    name = arg.name if isinstance(arg, Ref) else arg
    node = program.node(name) if isinstance(name, str) and name in program else None
    return program.constants.get(node.target) if node is not None and node.op == "get_attr" else None


def same_value(a: Any, b: Any) -> bool:
    """Equal constants: tensors of one dtype and shape with equal elements, or equal plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    return type(a) is type(b) and a == b


def from_reference(quantized_class: type, *args: Any) -> Build:
    """A spec for `quantized_class.from_reference(*args)`."""
    return Build(f"{qualified_name(quantized_class)}.from_reference", tuple(args))


def constant_qparams(program: ProgramView, quantize: Node) -> tuple[Node, Node] | Miss:
    """The scale and zero-point get_attr nodes of a quantize_per_tensor node, or why not
    (torch reads them with getattr and fails)."""
    scale, zero_point = quantize.arg(1, "scale"), quantize.arg(2, "zero_point")
    found = []
    for role, arg in (("scale", scale), ("zero point", zero_point)):
        node = node_of(program, arg)
        if node is None or node.op != "get_attr":
            return Miss(f"the output {role} of {quantize.name!r} is not read from a constant", Code.TORCH_CRASHES)
        found.append(node)
    return found[0], found[1]


def weight_dtype(node: Node) -> Any:
    """The dtype a weight node produces: the dtype argument of quantize_per_tensor /
    quantize_per_channel (by position or keyword), else the last positional argument
    (`w.to(torch.float16)`); None when there is none."""
    if node.op == "call_function" and node.target in WEIGHT_QUANTIZER_ARGS:
        return node.arg(*WEIGHT_QUANTIZER_ARGS[node.target][1])
    return node.args[-1] if len(node.args) > 1 else None


def weight_quantization_problem(program: ProgramView, weight: Node, function: Any = None) -> Miss | None:
    """Why a weight quantized by `weight` cannot be packed for `function`; None when it can.

    Reads the quantized engine (`torch.backends.quantized.engine`), which decides at
    emit time whether a packed weight can be built at all."""
    if weight_dtype(weight) is None:
        return Miss(f"%{weight.name} names no dtype for the weight: torch would fail reading it", Code.TORCH_CRASHES)
    if weight.op != "call_function" or weight.target not in WEIGHT_QUANTIZER_ARGS:
        return None
    engine = torch.backends.quantized.engine
    if function in TRANSPOSED_CONVS and weight.target is torch.quantize_per_channel and engine != "qnnpack":
        return Miss(
            f"%{weight.name} quantizes a transposed conv's weight per channel, which the {engine} engine "
            "cannot pack (only qnnpack can): torch would fail packing it",
            Code.TORCH_CRASHES,
        )
    zero_point = node_of(program, weight.arg(*WEIGHT_QUANTIZER_ARGS[weight.target][0]))
    value = program.constants.get(zero_point.target) if zero_point is not None and zero_point.op == "get_attr" else None
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return Miss(
            f"%{weight.name} quantizes the weight with floating-point zero points: torch would pack it "
            "into a weight that cannot be read back and computes garbage",
            Code.TORCH_WRONG_RESULT,
        )
    return None


def output_qparams_match(program: ProgramView, quantize: Node, **roles: str | None) -> Match | Miss:
    """A match anchored at `quantize`, binding it, `roles` and its output scale and
    zero point; a Miss when those are not read from constants."""
    qparams = constant_qparams(program, quantize)
    if isinstance(qparams, Miss):
        return qparams
    scale, zero_point = qparams
    found = Match(quantize.name, bindings(quantize=quantize.name, **roles, scale=scale.name, zero_point=zero_point.name))
    if not quantize.args:
        # torch's static passes read every quantize's input as `q_node.args[0]`
        reason = f"%{quantize.name} takes its input by keyword: torch reads it by position and its lowering raises IndexError"
        return attrs.evolve(found, code=Code.TORCH_CRASHES, reason=reason)
    return found


def reroute_dequantized(value: Any, dequantized: dict[str, str]) -> Any:
    """`value` with every Ref to a dequantize node replaced by that node's input."""
    return map_arg(value, lambda ref: Ref(dequantized.get(ref.name, ref.name)))


def dequantize_sources(program: ProgramView, args: Any) -> dict[str, str]:
    """dequantize node name -> the name of the node it dequantizes, for Refs in `args`."""
    from fqlower.ir import refs_in

    found = {}
    for ref in refs_in(args):
        node = program.node(ref.name)
        if node.op == "call_method" and node.target == "dequantize" and isinstance(node.args[0], Ref):
            found[ref.name] = node.args[0].name
    return found


def removable(program: ProgramView, name: str, going_away: set[str]) -> bool:
    """True when every user of `name` is among the nodes being removed."""
    return all(user in going_away for user in program.graph.users.get(name, ()))  # any order will do


def bindings(**roles: str | None) -> FrozenDict:
    """Match bindings without the roles that are absent."""
    return FrozenDict({role: name for role, name in roles.items() if name is not None})


_NOT_IN_A_NAME = re.compile("[^0-9a-zA-Z_]+")


def fresh_name(program: ProgramView, preferred: str, taken: AbstractSet[str] = frozenset()) -> str:
    """`preferred`, or `preferred_1`, `preferred_2`, ... : the first that no node has.
    `preferred` is made a name as FX makes one: a run of characters other than ASCII
    letters, digits and `_` becomes `_`, and a leading digit gets a `_` before it
    (`block1-0 f_packed_weight_0` -> `block1_0_f_packed_weight_0`)."""
    preferred = _NOT_IN_A_NAME.sub("_", preferred) or "_unnamed"
    if preferred[0].isdigit():
        preferred = f"_{preferred}"
    name, suffix = preferred, 0
    while name in program or name in taken:
        suffix += 1
        name = f"{preferred}_{suffix}"
    return name


def produced_from_constants(program: ProgramView, name: str) -> bool:
    """True when the node `name` is computed from get_attr constants and literals only."""
    frontier, seen = [name], set()
    while frontier:
        node = program.node(frontier.pop())
        if node.op == "placeholder":
            return False
        for used in node.refs():
            if used not in seen:
                seen.add(used)
                frontier.append(used)
    return True
