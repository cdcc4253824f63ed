"""torch 2.13 kernels that compute something else than the reference model, and when.

torch's lowering hands these ops their quantized kernels all the same; fqlower leaves
them in float, with a skip whose code says what torch's model would do (or, for a view,
lowers a reshape instead, with a change that carries the code). Each check
reads the program (and, for PReLU, the weight qparams torch would compute) and returns
a `Miss`, or None when the kernel is right here:

    %y = clamp(%x, min=0.0)        on qnnpack: "Both min and max should be specified"
    %y = clamp(conv(...), lo, hi)  on qnnpack: clamp, hardtanh and relu6 read the conv's
                                   channels_last output as if it were contiguous
    %y = prelu(%x)  (nn.PReLU)     quantized::prelu scales positive inputs by 1.0 quantized
                                   in the weight's qparams, which saturates when they
                                   cannot hold 1.0 (the default weight 0.25 cannot)
    %y = conv(...).view(n, -1)     quantized convolutions return channels_last tensors, on
                                   which such a view fails (the float model's is contiguous):
                                   this one is lowered, as a reshape
    %y = interpolate(%x, mode='bicubic') or antialias=True: no quantized kernel

(Options of swapped modules that the native module ignores, such as an
EmbeddingBag's mode: fqlower.passes.module_options.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fqlower.ir import Build, Node, ProgramView
from fqlower.engine.pipeline import Miss
from fqlower.reasons import Code

CLAMP_FUNCTIONS = (torch.clamp, F.hardtanh, F.hardtanh_, F.relu6)
CLAMP_MODULES = (nn.Hardtanh,)  # nn.ReLU6 is a Hardtanh
CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)


def kernel_problem(program: ProgramView, op: Node, module: Any) -> Miss | None:
    """Why the quantized kernel torch would give `op` (read by a quantize) computes
    something else here; None when it is right."""
    if torch.backends.quantized.engine == "qnnpack" and _clamps(op, module):
        if _one_sided_clamp(op):
            return Miss(
                f"%{op.name} clamps one side only, and qnnpack's quantized clamp needs both bounds: "
                "torch's lowered model would fail running it",
                Code.TORCH_MODEL_CRASHES,
            )
        if _after_a_conv(program, op):
            return Miss(
                f"%{op.name} clamps the output of a convolution, which is channels_last, and qnnpack's "
                "quantized clamp, hardtanh and relu6 read a channels_last tensor as if it were contiguous: "
                "torch's lowered model would compute something else",
                Code.TORCH_WRONG_RESULT,
            )
    if type(module) is nn.PReLU:
        return _prelu_problem(op, module)
    resampling = _resampling_without_kernel(op, module)
    if resampling is not None:
        return Miss(
            f"%{op.name} resamples with {resampling}, which has no quantized kernel: torch's lowered model "
            "would fail running it",
            Code.TORCH_MODEL_CRASHES,
        )
    return None


def _resampling_without_kernel(op: Node, module: Any) -> str | None:
    """The interpolation an F.interpolate or nn.Upsample asks for that quantized tensors
    lack (bicubic, or anti-aliasing), as words; None for one they have."""
    if op.op == "call_function" and op.target is F.interpolate:
        mode, antialias = op.arg(3, "mode", "nearest"), op.arg(6, "antialias", False)
    elif isinstance(module, nn.Upsample):
        mode, antialias = module.mode, False
    else:
        return None
    if mode == "bicubic":
        return "mode='bicubic'"
    return "antialias=True" if antialias is True else None


def view_of_channels_last(program: ProgramView, op: Node) -> str | None:
    """Why a `view` torch reroutes must become a `reshape`; None when a view is fine."""
    if not (op.op == "call_method" and op.target == "view" and _after_a_conv(program, op)):
        return None
    return (
        f"%{op.name} views the output of a convolution, which is channels_last once quantized: a view "
        "that merges channels with positions fails on it, so torch's lowered model would fail running "
        "it; fqlower reshapes instead (the same values, copied when the layout needs it)"
    )


def _clamps(node: Node, module: Any) -> bool:
    if node.op == "call_function":
        return any(node.target is function for function in CLAMP_FUNCTIONS)
    if node.op == "call_method":
        return node.target in ("clamp", "clamp_")
    return isinstance(module, CLAMP_MODULES)


def _one_sided_clamp(node: Node) -> bool:
    """A clamp (function or method) that leaves its min or its max out (or None)."""
    if not ((node.op == "call_function" and node.target is torch.clamp) or (node.op == "call_method" and node.target in ("clamp", "clamp_"))):
        return False
    bounds = [node.args[i] if len(node.args) > i else node.kwargs.get(name) for i, name in ((1, "min"), (2, "max"))]
    return any(bound is None for bound in bounds)


def _after_a_conv(program: ProgramView, node: Node) -> bool:
    """True when a convolution (module or functional, float, reference or quantized) or an
    explicit memory-format change computes any of `node`'s inputs, however far back: the
    value may be channels_last (quantized convolutions return channels_last tensors, and
    most ops keep the memory format they get)."""
    frontier, seen = list(node.refs()), set()
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        current = program.node(name)
        if current.op == "call_module" and _is_conv_module(program.modules.get(current.target)):
            return True
        if current.op == "call_function" and (any(current.target is conv for conv in CONV_FUNCTIONS) or "conv" in str(current.target)):
            return True
        if "memory_format" in current.kwargs:  # contiguous, to, clone, empty_like, ... with a layout
            return True
        frontier.extend(current.refs())
    return False


def _is_conv_module(module: Any) -> bool:
    """A conv module of any kind (float, fused, reference, quantized), or a spec of one."""
    name = module.factory if isinstance(module, Build) else type(module).__name__
    return "conv" in name.lower()


def _prelu_problem(op: Node, module: nn.PReLU) -> Miss | None:
    """torch's `nnq.PReLU.from_reference` quantizes the weight with the qconfig's weight
    observer; quantized::prelu then multiplies positive inputs by 1.0 in that weight's
    qparams, which saturates at the dtype's top when `1/scale + zero_point` exceeds it."""
    qconfig = getattr(module, "qconfig", None)
    if qconfig is None:
        return None
    observer = qconfig.weight()  # a fresh observer: the module's weight is only read
    observer(module.weight.detach().float())
    scale, zero_point = observer.calculate_qparams()
    top = torch.iinfo(torch.uint8).max
    one = 1.0 / float(scale) + int(zero_point)
    if one <= top:
        return None
    return Miss(
        f"%{op.name} is a PReLU whose weight quantizes with scale {float(scale):.3g} and zero point "
        f"{int(zero_point)}, which cannot hold 1.0 (it would be {one:.0f} > {top}); quantized::prelu scales "
        "positive inputs by that 1.0, so torch's lowered model would shrink them",
        Code.TORCH_WRONG_RESULT,
    )
