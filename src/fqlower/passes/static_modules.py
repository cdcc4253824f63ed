"""Static weighted modules.

    x ─▶ dequantize ─▶ ref.Linear ─▶ [relu] ─▶ quantize_per_tensor(·, scale, zero_point)
        becomes
    x ─▶ quantized Linear(scale, zero_point) ─▶ [relu]

for reference Linear/Conv1d/2d/3d and the fused LinearReLU, LinearLeakyReLU,
LinearTanh and ConvReLU1d/2d/3d whose inner module is a reference module. The
quantized module is a spec (`Cls.from_reference(module, scale, zero_point)`) that
the emitter builds.

A relu between module and quantize (F.relu, torch.relu or nn.ReLU) is dropped, as
torch drops it, when the output quantization already clamps at zero (zero point at
the bottom of the dtype's range, which is what an observer after a relu gives).
Otherwise it stays and runs on the quantized output: torch 2.13 drops it anyway and
lets negative values through.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import torch

from fqlower.engine.edits import Edit, RemoveNode, ReplaceUses, SetArgs
from fqlower.ir import Node, ProgramView
from fqlower.passes.common import (
    from_reference,
    is_dequantize,
    is_quantize_per_tensor,
    module_of,
    output_qparams_match,
    qconfig_is_none,
    quantized_op_behind,
    removable,
    reroute_dequantized,
    source_of_constant,
    source_of_module,
)
from fqlower.passes.module_calls import ModuleSwapPass, swap_module
from fqlower.passes.module_options import option_problem
from fqlower.patterns import STATIC_FUSED_MODULES, STATIC_MODULES
from fqlower.engine.pipeline import Match, Miss
from fqlower.reasons import Code


def quantized_class(module: object) -> type | Miss | None:
    """The static quantized class for a module; a reason when it is almost one; None otherwise."""
    cls = type(module)
    if cls in STATIC_MODULES:
        return STATIC_MODULES[cls]
    if cls in STATIC_FUSED_MODULES:
        inner, quantized = STATIC_FUSED_MODULES[cls]
        first = cast(torch.nn.Sequential, module)[0]  # fused modules are Sequentials; index once (it is slow)
        if type(first) is not inner:
            return Miss(f"fused {cls.__name__} holds a {type(first).__name__}, not a reference {inner.__name__}")
        return quantized
    return None


def relu_is_implied(program: ProgramView, quantize: Node, zero_point: Node) -> bool:
    """True when quantizing already maps every negative value to the same code as zero."""
    dtype = quantize.arg(3, "dtype")
    value: Any = program.constants.get(zero_point.target)
    try:
        return int(value) == torch.iinfo(dtype).min
    except (TypeError, ValueError, RuntimeError):
        return False


def _other_inputs_code(program: ProgramView, reference: Node) -> Code:
    """What torch does with a reference module call that takes other inputs than one
    positional tensor: it asserts there is a first positional input, skips the call
    when that is no dequantize, asserts there is only one, and keeps keyword inputs on
    the quantized module, which does not take them."""
    if not reference.args:
        return Code.TORCH_CRASHES
    if not is_dequantize(program, reference.args[0]):
        return Code.AS_TORCH
    return Code.TORCH_CRASHES if len(reference.args) > 1 else Code.TORCH_MODEL_CRASHES


def match(program: ProgramView, quantize: Node) -> Match | Miss | None:
    reference, relu = quantized_op_behind(program, quantize)
    if reference is None or reference.op != "call_module":
        return None
    quantized = quantized_class(module_of(program, reference))
    if quantized is None:
        return None
    if isinstance(quantized, Miss):
        return quantized
    unhonoured = option_problem(reference, module_of(program, reference))
    if unhonoured is not None:
        return unhonoured
    if qconfig_is_none(program, reference.name):
        return Miss(f"qconfig of {reference.name!r} is None")
    if len(reference.args) != 1 or reference.kwargs:
        return Miss(f"{reference.name!r} takes other inputs than one positional tensor", _other_inputs_code(program, reference))
    if not is_dequantize(program, reference.args[0]):
        return Miss(f"the input of {reference.name!r} is not dequantized")
    found = output_qparams_match(
        program,
        quantize,
        relu=relu.name if relu else None,
        reference=reference.name,
        dequantize=reference.args[0].name,
    )
    if isinstance(found, Match) and relu is not None:
        return with_kept_relu(program, found, quantize, relu)
    return found


def with_kept_relu(program: ProgramView, found: Match, quantize: Node, relu: Node) -> Match:
    """`found`, marked as a departure from torch when its relu must stay: torch drops
    every relu between the op and its quantize, which lets negative values through
    when the output quantization does not clamp at zero."""
    if found.code is not Code.AS_TORCH or relu_is_implied(program, quantize, program.node(found.bindings["zero_point"])):
        return found  # (a departure already: torch crashes before it could drop the relu)
    reason = (
        f"relu {relu.name!r} stays after the quantized op: the output zero point does not clamp at zero, "
        "and torch would drop it and let negative values through"
    )
    return attrs.evolve(found, code=Code.TORCH_WRONG_RESULT, reason=reason)


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    reference = program.node(roles["reference"])
    dequantize = program.node(roles["dequantize"])
    scale, zero_point = program.node(roles["scale"]), program.node(roles["zero_point"])
    quantized = cast(type, quantized_class(module_of(program, reference)))  # match found one
    spec = from_reference(
        quantized,
        source_of_module(program, reference.target),
        source_of_constant(program, scale.target),
        source_of_constant(program, zero_point.target),
    )
    relu = roles.get("relu")
    output = relu if relu is not None and found.code is Code.TORCH_WRONG_RESULT else reference.name
    edits: list[Edit] = [
        *swap_module(found, reference, spec),
        SetArgs(reference.name, reroute_dequantized(reference.args, {dequantize.name: dequantize.args[0].name}), reference.kwargs),
        ReplaceUses(roles["quantize"], output),
        RemoveNode(roles["quantize"]),
    ]
    going_away = {roles["quantize"]}
    edits += [RemoveNode(param.name) for param in (scale, zero_point) if removable(program, param.name, going_away)]
    return edits


LOWER_STATIC_MODULES = ModuleSwapPass("lower-static-modules", match, rewrite, is_quantize_per_tensor)
