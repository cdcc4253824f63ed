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
    %y = add(%a, %b)  on qnnpack: an input scale over the output scale outside
                      [2**-14, 2**8) (ConvNeXt's layer scale): no add operator

(Options of swapped modules that the native module ignores, such as an
EmbeddingBag's mode: fqlower.passes.module_options.)
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fqlower.ir import Build, ListArg, Node, Original, ProgramView, Ref
from fqlower.passes.common import constant_of
from fqlower.patterns import CONV_DIMS
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


# QNNPACK creates its add operator only for input-to-output scale ratios in this range
QNNPACK_ADD_RATIOS = (2.0**-14, 2.0**8)
_QUANTIZED_ADD_MUL = (torch.ops.quantized.add, torch.ops.quantized.add_relu, torch.ops.quantized.mul, torch.ops.quantized.mul_relu)


def qnnpack_add_problem(program: ProgramView, add: Node, dequantized: list[str], quantize: Node) -> Miss | None:
    """On qnnpack, why the quantized add torch would give `add` fails to run: an input's
    scale over the output's is outside QNNPACK's range (ConvNeXt's layer scale of 1e-6
    does it). None elsewhere, or where a scale cannot be read."""
    if torch.backends.quantized.engine != "qnnpack" or not (add.target is operator.add or add.target is torch.add):
        return None
    output = _scale_constant(program, quantize.args[1] if len(quantize.args) > 1 else None)
    if output is None or output <= 0:
        return None
    low, high = QNNPACK_ADD_RATIOS
    for name in dequantized:
        scale = _input_scale(program, program.node(name))
        if scale is not None and not low <= scale / output < high:
            return Miss(
                f"%{add.name} adds %{name}, whose scale is {scale / output:.3g} times the output's: QNNPACK's add "
                "takes ratios in [2**-14, 2**8) only, so torch's lowered model would fail running it",
                Code.TORCH_MODEL_CRASHES,
            )
    return None


def _input_scale(program: ProgramView, dequantize: Node) -> float | None:
    """The scale of the quantized tensor `dequantize` reads, where the program says it."""
    source = dequantize.args[0] if dequantize.args else None
    return _tensor_scale(program, program.node(source.name)) if isinstance(source, Ref) else None


def _tensor_scale(program: ProgramView, producer: Node, depth: int = 0) -> float | None:
    """The scale of the quantized tensor `producer` computes: a quantize's, a quantized
    module's (or its spec's), a quantized binary op's (a scalar mul scales it by |scalar|)."""
    if producer.op == "call_function" and producer.target is torch.quantize_per_tensor:
        return _scale_constant(program, producer.arg(1, "scale"))
    if producer.op == "call_module":
        module = program.modules.get(producer.target)
        if isinstance(module, Build) and len(module.args) == 3 and isinstance(module.args[1], Original):
            return _as_float(program.originals.get(module.args[1].path))
        return _as_float(getattr(module, "scale", None))
    if producer.op == "call_function" and producer.target in _QUANTIZED_ADD_MUL and producer.args:
        if len(producer.args) >= 4:
            return _scale_constant(program, producer.args[2])
        scalar, first = _as_float(producer.args[-1]), producer.args[0]
        if scalar is None or not isinstance(first, Ref) or depth > 8:
            return None
        scale = _tensor_scale(program, program.node(first.name), depth + 1)
        multiplies = producer.target in (torch.ops.quantized.mul, torch.ops.quantized.mul_relu)
        return None if scale is None else scale * abs(scalar) if multiplies else scale
    return None


def _scale_constant(program: ProgramView, arg: Any) -> float | None:
    return _as_float(constant_of(program, arg) if isinstance(arg, Ref) else arg)


def _as_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value)
    return None


def view_of_channels_last(program: ProgramView, op: Node) -> str | None:
    """Why a `view` torch reroutes must become a `reshape`; None when a view is fine.

    A view can fail on a channels_last tensor only where it merges the channels with the
    positions, which takes fewer dimensions than the tensor has: a view to as many or
    more (ShuffleNet's `x.view(n, groups, c // groups, h, w)`) splits or keeps them and
    works, as it does in torch's lowered model. A `.contiguous()` on the way back makes
    the tensor contiguous again (ShuffleNet's second view)."""
    if not (op.op == "call_method" and op.target == "view"):
        return None
    rank = _conv_output_rank(program, op, through_contiguous=False)
    if rank is None or _view_rank(op) >= rank:
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
    return _conv_output_rank(program, node, through_contiguous=True) is not None


def _conv_output_rank(program: ProgramView, node: Node, through_contiguous: bool) -> int | None:
    """The rank of the output of the first convolution (or memory-format change) found
    computing `node`'s inputs, however far back (4 when it cannot tell); None when none
    does. Unless `through_contiguous`, a plain `.contiguous()` ends the search there."""
    frontier, seen = list(node.refs()), set()
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        current = program.node(name)
        if current.op == "call_module" and _is_conv_module(module := program.modules.get(current.target)):
            return _module_rank(module)
        if current.op == "call_function" and (any(current.target is conv for conv in CONV_FUNCTIONS) or "conv" in str(current.target)):
            return 2 + CONV_DIMS.get(current.target, 2)
        if "memory_format" in current.kwargs:  # contiguous, to, clone, empty_like, ... with a layout
            return 4
        if not through_contiguous and current.op == "call_method" and current.target == "contiguous":
            continue
        frontier.extend(current.refs())
    return None


def _module_rank(module: Any) -> int:
    """The output rank of a conv module (or spec) by its name: 3 for 1d, 5 for 3d, else 4."""
    name = (module.factory if isinstance(module, Build) else type(module).__name__).lower()
    return 3 if "1d" in name else 5 if "3d" in name else 4


def _view_rank(view: Node) -> int:
    """How many dimensions `x.view(...)` asks for (a view to a dtype keeps the rank: large)."""
    shape = view.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, ListArg)):
        shape = tuple(shape[0].items if isinstance(shape[0], ListArg) else shape[0])
    if len(shape) == 1 and not isinstance(shape[0], (int, Ref)):
        return 1 << 30  # a dtype, or a size object: not a merge fqlower can see
    return len(shape)


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
