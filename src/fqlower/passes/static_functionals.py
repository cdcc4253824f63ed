"""Static functional linear / conv / conv-transpose.

    x ─▶ dequantize ─┐
    w ─▶ quantize_per_tensor|per_channel ─▶ dequantize ─┼─▶ F.linear|F.convNd|F.conv_transposeNd ─▶ [relu] ─▶ quantize_per_tensor(·, scale, zp)
    b ──────────────────────────────────────────────────┘
        becomes
    prepack(quantize_per_*(w), b, stride, padding, ...) ─┐
    x ───────────────────────────────────────────────────┴─▶ quantized.linear|linear_relu|convNd|convNd_relu|conv_transposeNd(·, ·, scale, zp)

The prepack node sits right before the scale node and the op right after the
zero-point node, where torch puts them; weight folding later turns the prepack
into a packed-weight attribute. Arguments may come by position, by keyword or by
default. A relu with no fused op (conv-transpose) is dropped when the output
quantization clamps at zero anyway, and otherwise kept after the op.
"""

from __future__ import annotations

from typing import Any, cast

import attrs


from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, ReplaceUses, SetArgs, SetTarget
from fqlower.ir import FrozenDict, Node, ProgramView, Ref
from fqlower.passes.common import (
    fresh_name,
    is_dequantize,
    is_quantize_per_tensor,
    node_of,
    output_qparams_match,
    produced_from_constants,
    qconfig_is_none,
    quantized_op_behind,
    weight_dtype,
    weight_quantization_problem,
)
from fqlower.passes.prepack import Prepack, bind, prepack_call
from fqlower.passes.static_modules import with_kept_relu
from fqlower.patterns import STATIC_FUNCTIONALS, WEIGHT_QUANTIZER_ARGS
from fqlower.engine.pipeline import Match, Miss, rule_pass
from fqlower.reasons import Code

def match(program: ProgramView, quantize: Node) -> Match | Miss | None:
    function, relu = quantized_op_behind(program, quantize)
    if function is None or function.op != "call_function" or function.target not in STATIC_FUNCTIONALS:
        return None
    if qconfig_is_none(program, function.name):
        return Miss(f"qconfig of {function.name!r} is None")
    params = bind(function)
    if isinstance(params, str):
        return Miss(params)
    if not is_dequantize(program, params["input"]):
        return Miss(f"the input of {function.name!r} is not dequantized")
    if not is_dequantize(program, params["weight"]):
        return Miss(f"the weight of {function.name!r} is not dequantized")
    quantized_weight = node_of(program, program.node(params["weight"].name).args[0])
    if quantized_weight is None or quantized_weight.op != "call_function" or quantized_weight.target not in WEIGHT_QUANTIZER_ARGS:
        return Miss(f"the weight of {function.name!r} is not quantized with quantize_per_tensor or quantize_per_channel")
    for role in ("weight", "bias"):
        source = quantized_weight.name if role == "weight" else params["bias"]
        name = source.name if isinstance(source, Ref) else source
        if isinstance(name, str) and not produced_from_constants(program, name):
            return Miss(f"the {role} of {function.name!r} is computed from the model's inputs, so it cannot be prepacked")
    problem = weight_quantization_problem(program, quantized_weight, function.target)
    if problem is not None:
        return problem
    prepack = prepack_call(function.target, params, Ref(quantized_weight.name), weight_dtype(quantized_weight))
    if isinstance(prepack, Miss):
        return attrs.evolve(prepack, reason=f"{function.name!r}: {prepack.reason}")
    chain_end = relu or function
    if program.users(function.name) != (chain_end.name if relu else quantize.name,) or program.users(chain_end.name) != (quantize.name,):
        return Miss(
            f"the output of {function.name!r} is also used outside the quantized pattern: torch would hand "
            "that user the quantized output",
            Code.TORCH_WRONG_RESULT,
        )
    found = output_qparams_match(
        program,
        quantize,
        relu=relu.name if relu else None,
        function=function.name,
        input_dequantize=params["input"].name,
        weight_quantize=quantized_weight.name,
    )
    if isinstance(found, Match) and relu is not None and STATIC_FUNCTIONALS[function.target][1] is None:
        return with_kept_relu(program, found, quantize, relu)
    return found


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    function = program.node(roles["function"])
    quantize = program.node(roles["quantize"])
    # match read the call and found its prepack op
    params = cast(dict[str, Any], bind(function))
    prepack_op, prepack_args = cast(
        Prepack, prepack_call(function.target, params, Ref(roles["weight_quantize"]), weight_dtype(program.node(roles["weight_quantize"])))
    )
    plain_op, relu_op = STATIC_FUNCTIONALS[function.target]
    relu = roles.get("relu")
    fuse_relu = relu is not None and relu_op is not None
    keep_relu = relu is not None and not fuse_relu and found.code is Code.TORCH_WRONG_RESULT
    prepack_name = fresh_name(program, f"{function.name}_prepack")
    input_source = program.node(roles["input_dequantize"]).args[0]
    edits: list[Edit] = [
        AddNode(Node(prepack_name, "call_function", prepack_op, prepack_args), before=roles["scale"]),
        SetTarget(function.name, "call_function", relu_op if fuse_relu else plain_op),
        SetArgs(function.name, (input_source, Ref(prepack_name), Ref(roles["scale"]), Ref(roles["zero_point"])), FrozenDict()),
        MoveNode(function.name, after=roles["zero_point"]),
    ]
    if keep_relu:
        edits += [MoveNode(relu, after=function.name), ReplaceUses(quantize.name, relu), RemoveNode(quantize.name)]
    else:
        edits += [ReplaceUses(quantize.name, function.name), RemoveNode(quantize.name)]
        if relu is not None:
            edits.append(RemoveNode(relu))
    return edits


LOWER_STATIC_FUNCTIONALS = rule_pass("lower-static-functionals", match, rewrite, is_quantize_per_tensor)
