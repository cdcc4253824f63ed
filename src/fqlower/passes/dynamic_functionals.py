"""Dynamic functional linear / conv.

    x ─▶ quantize_per_tensor_dynamic(·, dtype, reduce_range) ─▶ dequantize ─┐
    w ─▶ quantize_per_*|to(float16) ─▶ dequantize ───────────────────────────┼─▶ F.linear|F.convNd ─▶ [F.relu | nn.ReLU]
        becomes
    prepack(w, b, ...) ─┐
    x ──────────────────┴─▶ quantized.linear_dynamic|linear_relu_dynamic|convNd_dynamic(·, ·, reduce_range)
                            (linear_dynamic_fp16 / linear_relu_dynamic_fp16 for fp16: no reduce_range)

A dtype pair or relu fusion with no native op is a recorded skip. Dynamic conv is
a recorded skip too: torch 2.13 never lowers it (it looks for a conv+relu op even
without a relu), and rightly so, since its convNd_dynamic kernels clamp the output
to the input's quantization range (measured: outputs in [-15.5, 19.1] came back in
[-3.1, 10.0]).
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import torch
import torch.nn as nn
import torch.nn.functional as F

from fqlower.engine.edits import AddNode, Edit, RemoveNode, ReplaceUses, SetArgs, SetTarget
from fqlower.ir import FrozenDict, Node, ProgramView, Ref
from fqlower.passes.common import (
    bindings,
    fresh_name,
    is_call_function,
    is_dequantize,
    module_of,
    node_of,
    produced_from_constants,
    qconfig_is_none,
    weight_dtype,
    weight_quantization_problem,
)
from fqlower.passes.prepack import Prepack, bind, prepack_call
from fqlower.patterns import DYNAMIC_FUNCTIONALS
from fqlower.engine.pipeline import Match, Miss, rule_pass
from fqlower.reasons import Code


UNRELIABLE_KERNELS = {
    conv: f"quantized::{conv.__name__}_dynamic clamps its output to the input's range in torch 2.13; left in float"
    for conv in (F.conv1d, F.conv2d, F.conv3d)
}


def fused_relu(program: ProgramView, function: Node) -> Node | None:
    """The relu torch fuses: F.relu or an nn.ReLU module that is the function's only user."""
    users = program.users(function.name)
    if len(users) != 1:
        return None
    user = program.node(users[0])
    is_relu = (user.op == "call_function" and user.target is F.relu) or (
        user.op == "call_module" and type(module_of(program, user)) is nn.ReLU
    )
    return user if is_relu and user.args and user.args[0] == Ref(function.name) else None


def match(program: ProgramView, function: Node) -> Match | Miss | None:
    if function.op != "call_function" or function.target not in DYNAMIC_FUNCTIONALS:
        return None
    params = bind(function)
    if isinstance(params, str):
        return Miss(params)
    if not (is_dequantize(program, params["input"]) and is_dequantize(program, params["weight"])):
        return None
    dynamic = node_of(program, program.node(params["input"].name).args[0])
    if dynamic is None or dynamic.op != "call_function" or dynamic.target is not torch.quantize_per_tensor_dynamic:
        return None
    if qconfig_is_none(program, function.name):
        return Miss(f"qconfig of {function.name!r} is None")
    if function.target in UNRELIABLE_KERNELS:
        return Miss(UNRELIABLE_KERNELS[function.target], Code.KERNEL_MISSING)
    if len(dynamic.args) != 3 or dynamic.kwargs:
        return Miss(f"{dynamic.name!r} does not pass (input, dtype, reduce_range) by position")
    activation_dtype = dynamic.args[1]
    quantized_weight = node_of(program, program.node(params["weight"].name).args[0])
    if quantized_weight is None or not (quantized_weight.args or quantized_weight.kwargs):
        return Miss(f"the weight of {function.name!r} is not quantized")
    problem = weight_quantization_problem(program, quantized_weight)
    if problem is not None:
        return problem
    dtype = weight_dtype(quantized_weight)
    ops = DYNAMIC_FUNCTIONALS[function.target].get((activation_dtype, dtype))
    if ops is None:
        return Miss(f"no dynamic {function.target.__name__} for activation {activation_dtype} and weight {dtype}", Code.KERNEL_MISSING)
    relu = fused_relu(program, function)
    if relu is not None and ops[1] is None:
        return Miss(f"no dynamic {function.target.__name__} fused with relu (relu {relu.name!r})", Code.KERNEL_MISSING)
    for role, source in (("weight", Ref(quantized_weight.name)), ("bias", params["bias"])):
        if isinstance(source, Ref) and not produced_from_constants(program, source.name):
            return Miss(f"the {role} of {function.name!r} is computed from the model's inputs, so it cannot be prepacked")
    prepack = prepack_call(function.target, params, Ref(quantized_weight.name), dtype)
    if isinstance(prepack, Miss):
        return attrs.evolve(prepack, reason=f"{function.name!r}: {prepack.reason}")
    return Match(
        function.name,
        bindings(function=function.name, dynamic_quantize=dynamic.name, weight_quantize=quantized_weight.name, relu=relu.name if relu else None),
    )


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    function = program.node(roles["function"])
    dynamic = program.node(roles["dynamic_quantize"])
    quantized_weight = program.node(roles["weight_quantize"])
    pattern_input, activation_dtype, reduce_range = dynamic.args
    plain_op, relu_op = DYNAMIC_FUNCTIONALS[function.target][(activation_dtype, weight_dtype(quantized_weight))]
    # match read the call and found its prepack op
    params = cast(dict[str, Any], bind(function))
    prepack_op, prepack_args = cast(Prepack, prepack_call(function.target, params, Ref(quantized_weight.name), weight_dtype(quantized_weight)))
    prepack_name = fresh_name(program, f"{function.name}_prepack")
    is_int8 = activation_dtype != torch.float16
    op_args = (pattern_input, Ref(prepack_name), reduce_range) if is_int8 else (pattern_input, Ref(prepack_name))
    relu = roles.get("relu")
    edits: list[Edit] = [
        AddNode(Node(prepack_name, "call_function", prepack_op, prepack_args), before=function.name),
        SetTarget(function.name, "call_function", relu_op if relu else plain_op),
        SetArgs(function.name, op_args, FrozenDict()),
    ]
    if relu is not None:
        edits += [ReplaceUses(relu, function.name), RemoveNode(relu)]
    return edits


LOWER_DYNAMIC_FUNCTIONALS = rule_pass("lower-dynamic-functionals", match, rewrite, is_call_function)
