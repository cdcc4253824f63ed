"""Inputs to run both sides of a change on, and how far apart their outputs may be.

Sample 0 is the value the node had when the reference model ran on the example inputs
(calibration-like data); the others keep its shape, dtype and quantization parameters
and draw new values: quantized tensors over their dtype's whole code range (sample 1,
and 3 on if asked for) and at its two ends (sample 2), float tensors from a normal
distribution with the value's mean and spread. Integer tensors (indices), sizes and
other values are kept. `DEFAULT_SAMPLES` is one of each kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from fqlower.cautions import ActivationObservers
from fqlower.compare import values_equal

DEFAULT_SAMPLES = 3  # the reference values, codes over the whole range, codes at its ends


def code_ceiling(qconfigs: Iterable[Any]) -> int | None:
    """The highest quint8 activation code the recipe's observers produce, where one stops
    short of 255: 127 for fbgemm's and x86's (reduce_range) and `default_qconfig`'s
    (quant_max=127). Calibration keeps activations below it, and the kernels rely on it:
    fbgemm's can saturate above it, and an op that keeps its input's codes (`x + 1.0`,
    lowered to quantized.add_scalar, shifts the zero point instead of requantizing) is
    only equal to the reference below it. None when every observer uses all 8 bits."""
    observers = ActivationObservers()
    ceilings = []
    for qconfig in qconfigs:
        observer = observers.of(qconfig)
        top = getattr(observer, "quant_max", None)
        if getattr(observer, "dtype", None) == torch.quint8 and isinstance(top, int) and top < 255:
            ceilings.append(top)
    return min(ceilings) if ceilings else None


def draw(value: Any, sample: int, generator: torch.Generator, ceiling: int | None = None) -> Any:
    """Sample `sample` of an input whose reference value is `value` (quint8 codes up to
    `ceiling`, when given)."""
    if sample == 0 or not isinstance(value, torch.Tensor):
        return value
    if value.is_quantized and value.qscheme() == torch.per_tensor_affine:
        codes = _codes(value.int_repr(), sample, generator, ceiling if value.dtype == torch.quint8 else None)
        return torch._make_per_tensor_quantized_tensor(codes, value.q_scale(), value.q_zero_point())
    if value.dtype == torch.uint8:  # a PT2E activation: uint8 codes, its qparams in the graph
        return _codes(value, sample, generator, ceiling)
    if value.is_floating_point() and value.numel() > 1:
        spread = float(value.std()) or 1.0
        return _laid_out_like((torch.randn(value.shape, generator=generator) * spread + float(value.mean())).to(value.dtype), value)
    return value


def _codes(codes: torch.Tensor, sample: int, generator: torch.Generator, ceiling: int | None) -> torch.Tensor:
    """New integer codes shaped and laid out like `codes`: over the dtype's range, up to
    `ceiling` (sample 1 and 3 on), or at its two ends (sample 2)."""
    info = torch.iinfo(codes.dtype)
    top = min(info.max, ceiling) if ceiling is not None else info.max
    if sample == 2:
        drawn = torch.where(torch.rand(codes.shape, generator=generator) < 0.5, info.min, top)
    else:
        drawn = torch.randint(info.min, top + 1, codes.shape, generator=generator)
    return _laid_out_like(drawn.to(codes.dtype), codes)


def _laid_out_like(tensor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`tensor` in `value`'s memory format (a kernel may take only the layout it writes:
    onednn's binary conv, a channels-last accumulator)."""
    if tensor.stride() == value.stride():
        return tensor
    laid_out = torch.empty_like(value)
    laid_out.copy_(tensor)
    return laid_out


def difference(before: Any, after: Any) -> tuple[float, float] | None:
    """The worst (error, bound) over the items of two outputs (tuples and lists item by
    item, as an LSTM's `(output, (h, c))`); None when they are equal."""
    if isinstance(before, (tuple, list)) and isinstance(after, (tuple, list)):
        if len(before) != len(after):
            return float("inf"), 0.0
        found = [item for item in map(difference, before, after) if item is not None]
        return max(found, key=lambda pair: pair[0] - pair[1]) if found else None
    return _difference(before, after)


def _difference(before: Any, after: Any) -> tuple[float, float] | None:
    """(error, bound) between the two sides' values of one output, dequantized: within
    one output step for a quantized value (two when both sides quantize), within 1%
    of its largest magnitude for a float one (a dynamic kernel quantizes its activations
    where the reference does not); exact for anything else (None when equal, (inf, 0)
    when not). Where the matched side's output saturates, see `_distance`."""
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        if before.shape != after.shape:
            return float("inf"), 0.0
        steps = [tensor.q_scale() for tensor in (before, after) if tensor.is_quantized and tensor.qscheme() == torch.per_tensor_affine]
        if len(steps) == 2 and _same_codes(before, after):  # most rewrites: the same codes, no error
            return 0.0, 1.01 * max(steps) * 2
        a, b = (tensor.dequantize() if tensor.is_quantized else tensor for tensor in (before, after))
        if not (a.is_floating_point() and b.is_floating_point()):
            return None if torch.equal(a, b) else (float("inf"), 0.0)
        error = float(_distance(before, a.float(), b.float()).max()) if a.numel() else 0.0
        bound = 1.01 * max(steps) * len(steps) if steps else 1e-2 * float(a.float().abs().max() if a.numel() else 0) + 1e-4
        return error, bound
    if isinstance(before, torch._C.ScriptObject) and isinstance(after, torch._C.ScriptObject):
        same = values_equal(before.__getstate__(), after.__getstate__())  # a packed weight: its tensors
        return None if same else (float("inf"), 0.0)
    return None if values_equal(before, after) else (float("inf"), 0.0)


def _distance(before: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| elementwise, one-sided where `before` (the matched side's value, `a`
    dequantized) is quantized and saturated: a code at its dtype's top only says the
    value is at least that, one at the bottom at most that. An op lowered to a kernel
    that keeps its input's codes and moves the zero point (`x + 1.0` as
    quantized.add_scalar) represents what the reference clamps there."""
    distance = (a - b).abs()
    if not (before.is_quantized and before.qscheme() == torch.per_tensor_affine):
        return distance
    codes = before.int_repr()
    info = torch.iinfo(codes.dtype)
    distance = torch.where(codes == info.max, (a - b).clamp(min=0), distance)
    return torch.where(codes == info.min, (b - a).clamp(min=0), distance)


def _same_codes(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Two per-tensor quantized tensors with the same dtype, qparams and codes."""
    return (
        before.dtype == after.dtype
        and before.q_scale() == after.q_scale()
        and before.q_zero_point() == after.q_zero_point()
        and torch.equal(before.int_repr(), after.int_repr())
    )
