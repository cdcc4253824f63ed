"""Two-input fused modules.

    a ─▶ dequantize ─┐
                     ├─▶ ConvAdd2d / ConvAddReLU2d (reference conv inside) ─▶ quantize_per_tensor(·, scale, zero_point)
    b ─▶ dequantize ─┘
        becomes
    a, b ─▶ quantized ConvAdd2d / ConvAddReLU2d(scale, zero_point)
"""

from __future__ import annotations

from fqlower.engine.edits import Edit, RemoveNode, ReplaceUses, SetArgs
from fqlower.ir import Node, ProgramView
from fqlower.passes.common import (
    dequantize_sources,
    from_reference,
    is_dequantize,
    is_quantize_per_tensor,
    module_of,
    node_of,
    output_qparams_match,
    qconfig_is_none,
    removable,
    reroute_dequantized,
    source_of_constant,
    source_of_module,
)
from fqlower.passes.module_options import option_problem
from fqlower.passes.module_calls import ModuleSwapPass, swap_module
from fqlower.patterns import STATIC_TWO_INPUT_FUSED_MODULES
from fqlower.engine.pipeline import Match, Miss


def match(program: ProgramView, quantize: Node) -> Match | Miss | None:
    if not is_quantize_per_tensor(quantize):
        return None
    reference = node_of(program, quantize.arg(0, "input"))
    if reference is None or reference.op != "call_module":
        return None
    module = module_of(program, reference)
    if type(module) not in STATIC_TWO_INPUT_FUSED_MODULES:
        return None
    inner, _ = STATIC_TWO_INPUT_FUSED_MODULES[type(module)]
    if type(module[0]) is not inner:
        return Miss(f"fused {type(module).__name__} holds a {type(module[0]).__name__}, not a reference {inner.__name__}")
    unhonoured = option_problem(reference, module)
    if unhonoured is not None:
        return unhonoured
    if qconfig_is_none(program, reference.name):
        return Miss(f"qconfig of {reference.name!r} is None")
    if len(reference.args) != 2 or reference.kwargs or not all(is_dequantize(program, arg) for arg in reference.args):
        return Miss(f"{reference.name!r} does not take exactly two dequantized positional inputs")
    return output_qparams_match(program, quantize, reference=reference.name)


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    reference = program.node(roles["reference"])
    scale, zero_point = program.node(roles["scale"]), program.node(roles["zero_point"])
    _, quantized = STATIC_TWO_INPUT_FUSED_MODULES[type(module_of(program, reference))]
    spec = from_reference(
        quantized,
        source_of_module(program, reference.target),
        source_of_constant(program, scale.target),
        source_of_constant(program, zero_point.target),
    )
    edits: list[Edit] = [
        *swap_module(found, reference, spec),
        SetArgs(reference.name, reroute_dequantized(reference.args, dequantize_sources(program, reference.args)), reference.kwargs),
        ReplaceUses(roles["quantize"], reference.name),
        RemoveNode(roles["quantize"]),
    ]
    going_away = {roles["quantize"]}
    edits += [RemoveNode(param.name) for param in dict.fromkeys((scale, zero_point)) if removable(program, param.name, going_away)]
    return edits


LOWER_TWO_INPUT_MODULES = ModuleSwapPass("lower-two-input-modules", match, rewrite, is_quantize_per_tensor)
