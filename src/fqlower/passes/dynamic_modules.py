"""Dynamically quantized modules.

    x ─▶ quantize_per_tensor_dynamic(·, dtype, reduce_range) ─▶ dequantize ─▶ ref.Linear / LSTM / GRU / *Cell
        becomes
    x ─▶ dynamic quantized Linear / LSTM / GRU / *Cell

int8 (quint8/qint8 activations) and fp16, plus the fused LinearReLU. The dynamic
quantize and dequantize nodes are left for dead-code elimination, as torch does.

A module called from several places is swapped at its first lowered call; later
calls that match only read the float input directly (a dynamic quantized module
takes what the reference module took), as in torch.
"""

from __future__ import annotations

from typing import cast

import torch

from fqlower.engine.edits import Edit, SetArgs, SetModule
from fqlower.ir import Build, Node, ProgramView, Ref
from fqlower.names import qualified_name
from fqlower.passes.common import bindings, from_reference, is_call_module, module_of, node_of, reroute_dequantized, source_of_module
from fqlower.passes.module_options import option_problem
from fqlower.patterns import DYNAMIC_FUSED_MODULES, DYNAMIC_MODULES
from fqlower.engine.pipeline import Match, Miss, rule_pass
from fqlower.reasons import Code

ACTIVATION_DTYPES = (torch.quint8, torch.qint8, torch.float16)

# the factory of a spec this pass writes -> its class
SWAPPED = {
    f"{qualified_name(cls)}.from_reference": cls
    for cls in (*DYNAMIC_MODULES.values(), *(quantized for _, quantized in DYNAMIC_FUSED_MODULES.values()))
}


def quantized_class(module: object) -> type | Miss | None:
    """The dynamic quantized class for a module (or for a spec this pass put there
    for an earlier call); a reason when it is almost one; None otherwise."""
    if isinstance(module, Build):
        return SWAPPED.get(module.factory)
    cls = type(module)
    if cls in DYNAMIC_FUSED_MODULES:
        inner, quantized = DYNAMIC_FUSED_MODULES[cls]
        first = cast(torch.nn.Sequential, module)[0]  # fused modules are Sequentials
        if type(first) is not inner:
            return Miss(f"fused {cls.__name__} holds a {type(first).__name__}, not a reference {inner.__name__}")
        return quantized
    return DYNAMIC_MODULES.get(cls)


def match(program: ProgramView, reference: Node) -> Match | Miss | None:
    if reference.op != "call_module":
        return None
    quantized = quantized_class(module_of(program, reference))
    if quantized is None:
        return None
    dequantize = node_of(program, reference.arg(0, "input"))
    if dequantize is None or dequantize.op != "call_method" or dequantize.target != "dequantize":
        return None
    dynamic = node_of(program, dequantize.args[0] if dequantize.args else None)
    if dynamic is None or dynamic.op != "call_function" or dynamic.target is not torch.quantize_per_tensor_dynamic:
        return None
    if isinstance(quantized, Miss):
        return quantized
    unhonoured = option_problem(reference, module_of(program, reference))
    if unhonoured is not None:
        return unhonoured
    if not reference.args:
        return Miss(f"{reference.name!r} takes its input as a keyword: torch reads args[0] and fails", Code.TORCH_CRASHES)
    if not isinstance(dynamic.arg(0, "input"), Ref):
        return Miss(f"{dynamic.name!r} has no input node")
    dtype = dynamic.arg(1, "dtype")
    if dtype not in ACTIVATION_DTYPES:
        return Miss(f"{dynamic.name!r} quantizes to {dtype}, which has no dynamic kernel", Code.KERNEL_MISSING)
    return Match(reference.name, bindings(reference=reference.name, dequantize=dequantize.name, dynamic_quantize=dynamic.name))


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    roles = found.bindings
    reference = program.node(roles["reference"])
    dynamic = program.node(roles["dynamic_quantize"])
    source = dynamic.arg(0, "input")
    reroute = SetArgs(reference.name, reroute_dequantized(reference.args, {roles["dequantize"]: source.name}), reference.kwargs)
    module = module_of(program, reference)
    if isinstance(module, Build):  # swapped for an earlier call
        return [reroute]
    quantized = cast(type, quantized_class(module))  # match found one
    return [SetModule(reference.target, from_reference(quantized, source_of_module(program, reference.target))), reroute]


LOWER_DYNAMIC_MODULES = rule_pass("lower-dynamic-modules", match, rewrite, is_call_module)
