"""Quantized binary ops: add, mul and matmul, with an optional relu.

    a ─▶ dequantize ─┐
                     ├─▶ add ─▶ [relu] ─▶ quantize_per_tensor(·, scale, zero_point)
    b ─▶ dequantize ─┘
        becomes
    a ─┐
       ├─▶ quantized.add[_relu](a, b, scale, zero_point)
    b ─┘

and, with one dequantized input and a scalar (`x + 1.0`, `2.0 * x`),

    x ─▶ dequantize ─▶ mul(·, 2.0) ─▶ [relu] ─▶ quantize_per_tensor(·, scale, zero_point)
        becomes
    x ─▶ quantized.mul[_relu](x, 2.0)          (the Scalar overloads; no scale, zero point)

for operator.add, torch.add, operator.mul, torch.mul and torch.matmul
(`patterns.BINARY_OPS`), as torch 2.13's `_lower_quantized_binary_op`. The relu
is F.relu, torch.relu or an nn.ReLU module. The quantize node itself becomes the
quantized op (torch inserts the op right after it and erases it: same graph); the
binary op and the relu are removed; the dequantize nodes and, for the scalar
form, the now unused scale and zero-point reads are left to dead-code elimination.

Left alone, with a recorded miss, where torch would crash or change the result:
the binary op's qconfig is None (torch skips it too); inputs passed by keyword
(`torch.add(input=a, other=b)`: AssertionError); keyword arguments torch would
drop (`torch.add(a, b, alpha=2)`); matmul followed by a relu (no quantized
matmul_relu: KeyError); a binary op or relu read by other nodes too (torch erases
it anyway: RuntimeError); a quantize node whose scale, zero point and dtype are
not its three positional arguments after the input (ValueError); an input that
is a node but not a dequantize, or no dequantized input at all (torch skips).
"""

from __future__ import annotations

from typing import Any

from fqlower.engine.edits import Edit, RemoveNode, SetArgs, SetTarget
from fqlower.ir import FrozenDict, Node, ProgramView, Ref, format_arg, refs_in
from fqlower.passes.common import (
    quantized_op_behind,
    bindings,
    is_dequantize,
    is_quantize_per_tensor,
    qconfig_is_none,
    reroute_dequantized,
)
from fqlower.passes.kernel_bugs import qnnpack_add_problem
from fqlower.patterns import BINARY_OPS, QUANTIZED_BINARY_OPS, QUANTIZED_BINARY_RELU_OPS
from fqlower.engine.pipeline import Match, Miss, rule_pass
from fqlower.reasons import Code

SIDES = ("lhs", "rhs")  # binding roles of the dequantize nodes at args[0] and args[1]


# the tables by the identity of their ops: `target is op` as one dict lookup
_BINARY_OP_IDS = frozenset(map(id, BINARY_OPS))
_QUANTIZED_BY_ID = {id(op): qop for op, qop in QUANTIZED_BINARY_OPS.items()}
_QUANTIZED_RELU_BY_ID = {id(op): qop for op, qop in QUANTIZED_BINARY_RELU_OPS.items()}


def is_binary_op(node: Node) -> bool:
    return node.op == "call_function" and id(node.target) in _BINARY_OP_IDS


def quantized_op(binop: Node, with_relu: bool) -> Any:
    """The quantized op torch picks, or None where its table has none (torch: KeyError)."""
    return (_QUANTIZED_RELU_BY_ID if with_relu else _QUANTIZED_BY_ID).get(id(binop.target))


def _target_name(node: Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _check_inputs(program: ProgramView, binop: Node) -> dict[str, str] | Miss:
    """Binding role -> dequantize node for the dequantized inputs, or why not."""
    found: dict[str, str] = {}
    for side, arg in zip(SIDES, binop.args):
        if is_dequantize(program, arg):
            dequantize = program.node(arg.name)
            if not dequantize.args or not isinstance(dequantize.args[0], Ref):
                return Miss(f"{dequantize.name!r}, an input of {binop.name!r}, does not dequantize a node")
            found[side] = arg.name
        elif next(refs_in(arg), None) is not None:
            return Miss(f"input {format_arg(arg)} of {binop.name!r} is not a dequantize node")
    if not found:
        return Miss(f"no input of {binop.name!r} is dequantized")
    return found


def match(program: ProgramView, quantize: Node) -> Match | Miss | None:
    binop, relu = quantized_op_behind(program, quantize)
    if binop is None or not is_binary_op(binop):
        return None

    name = binop.name
    if qconfig_is_none(program, name):
        return Miss(f"qconfig of {name!r} is None")
    if relu is not None and not relu.args:
        return Miss(f"relu {relu.name!r} takes its input by keyword (torch reads args[0])", Code.TORCH_CRASHES)
    if len(binop.args) < 2:
        return Miss(f"{name!r} takes its inputs by keyword (torch asserts both are positional)", Code.TORCH_CRASHES)
    if len(binop.args) > 2:
        return Miss(f"{name!r} has {len(binop.args)} positional arguments, not 2", Code.TORCH_MODEL_CRASHES)
    if binop.kwargs:
        return Miss(f"{name!r} has keyword arguments {sorted(binop.kwargs)} that torch would drop", Code.TORCH_WRONG_RESULT)
    if relu is not None and quantized_op(binop, with_relu=True) is None:
        return Miss(f"no quantized {_target_name(binop)} fused with relu for {name!r} + {relu.name!r} (torch: KeyError)", Code.TORCH_CRASHES)
    if len(quantize.args) != 4 or quantize.kwargs:
        return Miss(
            f"quantize node {quantize.name!r} does not take input, scale, zero point and dtype "
            "as its four positional arguments (torch unpacks args[1:] and fails)",
            Code.TORCH_CRASHES,
        )
    inputs = _check_inputs(program, binop)
    if isinstance(inputs, Miss):
        return inputs
    no_operator = qnnpack_add_problem(program, binop, list(inputs.values()), quantize) if len(inputs) == 2 else None
    if no_operator is not None:
        return no_operator
    chain = (name, relu.name) if relu is not None else (name,)
    users = program.graph.users
    for node, reader in zip(chain, (*chain[1:], quantize.name)):
        if users[node] == {reader}:  # the common case, without sorting the users
            continue
        others = [user for user in program.users(node) if user != reader]
        if others:
            return Miss(f"{node!r} is also used by {others} (torch would erase it anyway)", Code.TORCH_CRASHES)

    scale, zero_point = quantize.args[1], quantize.args[2]
    both = len(inputs) == 2  # both sides dequantized (possibly by one node, x + x)
    return Match(
        quantize.name,
        bindings(
            quantize=quantize.name,
            relu=relu.name if relu is not None else None,
            binop=name,
            lhs=inputs.get("lhs"),
            rhs=inputs.get("rhs"),
            scale=scale.name if both and isinstance(scale, Ref) else None,
            zero_point=zero_point.name if both and isinstance(zero_point, Ref) else None,
        ),
    )


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    quantize = program.node(roles["quantize"])
    binop = program.node(roles["binop"])
    dequantized = {roles[side]: program.node(roles[side]).args[0].name for side in SIDES if side in roles}
    args = reroute_dequantized(binop.args, dequantized)
    if all(side in roles for side in SIDES):  # tensor-tensor: the output scale and zero point
        args = (*args, quantize.args[1], quantize.args[2])
    edits: list[Edit] = [
        SetTarget(quantize.name, "call_function", quantized_op(binop, with_relu="relu" in roles)),
        SetArgs(quantize.name, args, FrozenDict()),
    ]
    if "relu" in roles:
        edits.append(RemoveNode(roles["relu"]))
    edits.append(RemoveNode(binop.name))
    return edits


LOWER_BINARY_OPS = rule_pass("lower-binary-ops", match, rewrite, is_quantize_per_tensor)
