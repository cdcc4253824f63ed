"""Deliberately wrong rules, written as a user writes passes (fqlower's public API), to
append to the default pipeline: translation validation must refute each of their
rewrites, and nothing else.

Each rule fires only where it changes what the model computes by more than one output
step, so that every rewrite it makes is wrong:

    add-as-mul              quantized.add              -> quantized.mul
    scale-quartered         an op's or a module's output scale / 4 (its range saturates)
    relu-dropped            a relu on a quantized tensor whose zero point is above the
                            lowest code (so the relu clamps codes it has) removed
    stride-padding-swapped  a conv's stride and padding swapped, where they differ
    bias-dropped            a conv's or linear's bias left out of its packed weight, where
                            the bias exceeds four output steps

The module rewrites wrap the module's spec in a `Build` of a factory below (module-level,
so a change log can name it); the factories copy the module before changing it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from fqlower import Build, FrozenDict, Match, Original, Pipeline, Ref, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetModule, SetTarget, default_pipeline, rule_pass

ops = torch.ops.quantized
# quantized ops whose args are (inputs..., scale, zero_point) with the scale third
SCALED_OPS = (ops.add, ops.add_relu, ops.mul, ops.mul_relu, ops.linear, ops.linear_relu, ops.conv2d, ops.conv2d_relu, ops.conv1d, ops.conv3d)
STATIC_MODULE_FACTORIES = ("from_reference",)
CONV_PREPACKS = ("torch.ops.quantized.conv1d_prepack", "torch.ops.quantized.conv2d_prepack", "torch.ops.quantized.conv3d_prepack")
PREPACKS = (*CONV_PREPACKS, "torch.ops.quantized.linear_prepack")


# --- factories the module rewrites build -----------------------------------------------------


def rescaled(module: torch.nn.Module, factor: float) -> torch.nn.Module:
    wrong = copy.deepcopy(module)
    wrong.scale = float(module.scale) * factor
    return wrong


def stride_padding_swapped(module: torch.nn.Module) -> torch.nn.Module:
    wrong = copy.deepcopy(module)
    wrong.stride, wrong.padding = module.padding, module.stride
    wrong.set_weight_bias(module.weight(), module.bias())
    return wrong


def without_bias(module: torch.nn.Module) -> torch.nn.Module:
    wrong = copy.deepcopy(module)
    wrong.set_weight_bias(module.weight(), None)
    return wrong


# --- what the matchers read ------------------------------------------------------------------


def value_of(program: Any, value: Any) -> Any:
    """A Ref to a get_attr node, an Original or a plain value, as the value it stands for."""
    if isinstance(value, Ref):
        node = program.node(value.name)
        return program.constants.get(node.target) if node.op == "get_attr" else None
    if isinstance(value, Original):
        return program.originals.get(value.path)
    return value


def static_module_spec(program: Any, node: Any) -> Build | None:
    """The spec of a static quantized module built from its reference (conv, linear, fused)."""
    if node.op != "call_module":
        return None
    spec = program.modules.get(node.target)
    if isinstance(spec, Build) and spec.factory.endswith(".from_reference") and len(spec.args) == 3:
        return spec
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


# --- the rules -------------------------------------------------------------------------------


def _add_as_mul() -> Any:
    def match(program: Any, node: Any) -> Match | None:
        return Match(node.name) if node.op == "call_function" and node.target is ops.add else None

    return rule_pass("add-as-mul", match, lambda program, found: [SetTarget(found.anchor, "call_function", ops.mul)])


def _scale_quartered() -> Any:
    def match(program: Any, node: Any) -> Match | None:
        if node.op == "call_function" and node.target in SCALED_OPS and len(node.args) >= 4 and _number(value_of(program, node.args[2])):
            return Match(node.name)
        return Match(node.name) if static_module_spec(program, node) is not None else None

    def rewrite(program: Any, found: Match) -> list[Any]:
        node = program.node(found.anchor)
        if node.op == "call_module":
            return [SetModule(node.target, Build(f"{__name__}.rescaled", (program.modules[node.target], 0.25)))]
        scale = _number(value_of(program, node.args[2]))
        assert scale is not None
        return [SetArgs(node.name, (*node.args[:2], scale / 4, *node.args[3:]), node.kwargs)]

    return rule_pass("scale-quartered", match, rewrite)


RELUS = (torch.relu, torch.nn.functional.relu)


# ops that give their quantized input's qparams to their output
PASS_THROUGH = {
    torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d, torch.nn.functional.max_pool3d,
    torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
}
PASS_THROUGH_METHODS = {"reshape", "view", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "contiguous"}
PASS_THROUGH_MODULES = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d, torch.nn.Flatten, torch.nn.Identity, torch.nn.Dropout)


def zero_point_of(program: Any, ref: Any) -> float | None:
    """The output zero point of the node `ref` names, where its producer states it: a
    quantize_per_tensor, a quantized op, a static quantized module, or an op that passes
    its input's qparams on (else None)."""
    if not isinstance(ref, Ref):
        return None
    node = program.node(ref.name)
    if node.op == "call_function" and (node.target is torch.quantize_per_tensor or node.target in SCALED_OPS) and len(node.args) >= 4:
        return _number(value_of(program, node.args[-2] if node.target is torch.quantize_per_tensor else node.args[3]))
    spec = static_module_spec(program, node)
    if spec is not None:
        return _number(value_of(program, spec.args[2]))
    passes = (
        (node.op == "call_function" and node.target in PASS_THROUGH)
        or (node.op == "call_method" and node.target in PASS_THROUGH_METHODS)
        or (node.op == "call_module" and isinstance(program.modules.get(node.target), PASS_THROUGH_MODULES))
    )
    return zero_point_of(program, node.args[0]) if passes and node.args else None


def _relu_dropped() -> Any:
    """A relu run on a quantized tensor keeps its input's qparams: where that zero point
    is above the lowest code, the relu clamps codes the input has, and dropping it is
    wrong. (A relu fused into the op before it, or whose output zero point is 0, is not:
    the output's quantization clamps at zero by itself, and validation says so.)"""

    def match(program: Any, node: Any) -> Match | None:
        is_relu = (node.op == "call_function" and node.target in RELUS) or (node.op == "call_method" and node.target == "relu")
        if not is_relu or node.kwargs.get("inplace") or len(node.args) != 1:
            return None
        zero_point = zero_point_of(program, node.args[0])
        return Match(node.name, FrozenDict({"input": node.args[0].name})) if zero_point is not None and zero_point > 0 else None

    def rewrite(program: Any, found: Match) -> list[Any]:
        return [ReplaceUses(found.anchor, found.bindings["input"]), RemoveNode(found.anchor)]

    return rule_pass("relu-dropped", match, rewrite)


def _packed_conv(program: Any, node: Any) -> tuple[str, Build] | None:
    """The packed-weight constant (attribute, spec) a functional conv reads."""
    if node.op != "call_function" or len(node.args) < 2 or not isinstance(node.args[1], Ref):
        return None
    source = program.node(node.args[1].name)
    spec = program.constants.get(source.target) if source.op == "get_attr" else None
    return (source.target, spec) if isinstance(spec, Build) and spec.factory in PREPACKS else None


def _module_or_packed_rewrite(factory: str, repacked: Any) -> Any:
    """A rewrite that wraps a module's spec in this file's `factory`, or repacks a
    functional op's packed weight with `repacked(prepack args)`."""

    def rewrite(program: Any, found: Match) -> list[Any]:
        node = program.node(found.anchor)
        if node.op == "call_module":
            return [SetModule(node.target, Build(f"{__name__}.{factory}", (program.modules[node.target],)))]
        attr, spec = _packed_conv(program, node)  # type: ignore[misc]
        return [SetConstant(attr, Build(spec.factory, repacked(spec.args), spec.kwargs))]

    return rewrite


def _stride_padding_swapped() -> Any:
    def match(program: Any, node: Any) -> Match | None:
        packed = _packed_conv(program, node)
        if packed is not None and packed[1].factory in CONV_PREPACKS and tuple(packed[1].args[2]) != tuple(packed[1].args[3]):
            return Match(node.name)
        spec = static_module_spec(program, node)
        reference = value_of(program, spec.args[0]) if spec is not None else None
        if isinstance(reference, torch.nn.modules.conv._ConvNd) and not reference.transposed and tuple(reference.stride) != tuple(reference.padding):
            return Match(node.name)
        return None

    def repacked(args: tuple[Any, ...]) -> tuple[Any, ...]:
        weight, bias, stride, padding, *rest = args
        return (weight, bias, padding, stride, *rest)

    return rule_pass("stride-padding-swapped", match, _module_or_packed_rewrite("stride_padding_swapped", repacked))


def _bias_dropped() -> Any:
    def large_bias(bias: Any, scale: float | None) -> bool:
        return isinstance(bias, torch.Tensor) and scale is not None and bool(bias.abs().max() > 4 * scale)

    def match(program: Any, node: Any) -> Match | None:
        packed = _packed_conv(program, node)
        if packed is not None and len(node.args) >= 4 and large_bias(value_of(program, packed[1].args[1]), _number(value_of(program, node.args[2]))):
            return Match(node.name)
        spec = static_module_spec(program, node)
        if spec is None:
            return None
        reference = value_of(program, spec.args[0])
        if isinstance(reference, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and large_bias(reference.bias, _number(value_of(program, spec.args[1]))):
            return Match(node.name)
        return None

    return rule_pass("bias-dropped", match, _module_or_packed_rewrite("without_bias", lambda args: (args[0], None, *args[2:])))


WRONG_RULES = {
    "add-as-mul": _add_as_mul(),
    "scale-quartered": _scale_quartered(),
    "relu-dropped": _relu_dropped(),
    "stride-padding-swapped": _stride_padding_swapped(),
    "bias-dropped": _bias_dropped(),
}


def with_wrong_rule(name: str) -> Pipeline:
    """The default pipeline, then the wrong rule `name`."""
    return Pipeline(f"default+{name}", (default_pipeline(), WRONG_RULES[name]))
