"""Quick construction of the quantized modules torch's `from_reference` builds.

`nnq.Conv2d.from_reference(ref, scale, zero_point)` first constructs a module around
a throwaway weight (`__init__` quantizes and *prepacks* an empty weight: one packing
for a conv, two for a linear, whose `LinearPackedParams` packs a 1x1 weight of its
own) and then packs the real weight. Packing is most of the cost of lowering a
small module, so the builders here construct the same module with one packing: the
attributes `__init__` and `from_reference` set, in the same order, with the same
values, and the real weight packed by the same operator.

    build(nnq.Conv2d, ref, scale, zero_point)  ==  nnq.Conv2d.from_reference(ref, scale, zero_point)

(equal type, attributes in the same order, equal values and packed weights:
tests/test_builders.py checks every class here against `from_reference`). A builder
answers None for anything outside the common case it was written for (padding given
as a string, a padding mode other than zeros, a weight that is not float32 on the
CPU, channels that `__init__` would reject, an unexpected reference type);
`emit.materialize` then calls `from_reference` itself, so unusual modules get
torch's own construction and torch's own errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
from torch.ao.nn.quantized.modules.linear import LinearPackedParams
from torch.nn.modules.utils import _pair, _single, _triple

from fqlower.names import qualified_name

# quantized conv class -> (reference conv class, tuple parser of its __init__, prepack op)
_CONVS: dict[type, tuple[Any, Callable[[Any], tuple], Any]] = {
    nnq.Conv1d: (nnqr.Conv1d, _single, torch.ops.quantized.conv1d_prepack),
    nnq.Conv2d: (nnqr.Conv2d, _pair, torch.ops.quantized.conv2d_prepack),
    nnq.Conv3d: (nnqr.Conv3d, _triple, torch.ops.quantized.conv3d_prepack),
}
# fused quantized class -> its plain quantized base (from_reference reads ref[0])
_FUSED_CONVS: dict[type, type] = {
    nniq.ConvReLU1d: nnq.Conv1d,
    nniq.ConvReLU2d: nnq.Conv2d,
    nniq.ConvReLU3d: nnq.Conv3d,
    nniq.ConvAdd2d: nnq.Conv2d,
    nniq.ConvAddReLU2d: nnq.Conv2d,
}
# fused reference containers whose first module is the reference conv/linear
_FUSED_REFERENCES = (nni.ConvReLU1d, nni.ConvReLU2d, nni.ConvReLU3d, nni.ConvAdd2d, nni.ConvAddReLU2d, nni.LinearReLU, nni.LinearTanh)


def _new_module(cls: type[torch.nn.Module]) -> torch.nn.Module:
    """An instance of `cls` with only `torch.nn.Module.__init__` run."""
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    return module


def _plain_weight(ref: torch.nn.Module) -> bool:
    weight = ref._parameters.get("weight")
    return weight is not None and weight.dtype == torch.float32 and weight.device.type == "cpu"


def _conv(cls: type, ref: Any, scale: Any, zero_point: Any) -> torch.nn.Module | None:
    base = _FUSED_CONVS.get(cls, cls)
    reference_class, parse, prepack = _CONVS[base]
    if base is not cls:
        if type(ref) not in _FUSED_REFERENCES:
            return None
        ref = ref[0]
    if type(ref) is not reference_class or not _plain_weight(ref):
        return None
    in_channels, out_channels, groups = ref.in_channels, ref.out_channels, ref.groups
    if ref.padding_mode != "zeros" or isinstance(ref.padding, str) or out_channels <= 0 or groups <= 0:
        return None
    if in_channels % groups or out_channels % groups:
        return None
    bias = ref.bias
    stride, padding, dilation = parse(ref.stride), parse(ref.padding), parse(ref.dilation)
    packed = prepack(ref.get_quantized_weight(), bias, stride, padding, dilation, groups)
    module = _new_module(cls)
    # the attributes of _ConvNd._init, then from_reference's scale and zero point
    vars(module).update(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=parse(ref.kernel_size),
        stride=stride,
        padding=padding,
        dilation=dilation,
        transposed=False,
        output_padding=parse(0),
        groups=groups,
        padding_mode="zeros",
        _packed_params=packed,
        scale=float(scale),
        zero_point=int(zero_point),
    )
    return module


def _linear(cls: type, ref: Any, scale: Any, zero_point: Any) -> torch.nn.Module | None:
    if cls is not nnq.Linear:
        if type(ref) not in _FUSED_REFERENCES:
            return None
        ref = ref[0]
    if type(ref) is not nnqr.Linear or not _plain_weight(ref):
        return None
    packed = _new_module(LinearPackedParams)
    vars(packed).update(dtype=torch.qint8, _packed_params=torch.ops.quantized.linear_prepack(ref.get_quantized_weight(), ref.bias))
    module = _new_module(cls)
    vars(module).update(in_features=ref.in_features, out_features=ref.out_features)
    module._modules["_packed_params"] = packed
    vars(module).update(scale=float(scale), zero_point=int(zero_point))
    return module


BUILDERS: dict[str, Callable[..., torch.nn.Module | None]] = {
    **{f"{qualified_name(cls)}.from_reference": lambda *args, cls=cls: _conv(cls, *args) for cls in (*_CONVS, *_FUSED_CONVS)},
    **{f"{qualified_name(cls)}.from_reference": lambda *args, cls=cls: _linear(cls, *args) for cls in (nnq.Linear, nniq.LinearReLU, nniq.LinearTanh)},
}
"""`from_reference` factory name (as `Build` specs spell it) -> its quick builder."""


def with_output_qparams(module: torch.nn.Module, scale: Any, zero_point: Any) -> torch.nn.Module:
    """`module` (a static quantized module) with another output scale and zero point,
    sharing its packed weight: what each call of a module called from several places
    gets (fqlower.passes.module_calls). The module's own tables are copied, so the two
    can be changed apart; the packed weight (a submodule or attribute) is the same object."""
    copy = type(module).__new__(type(module))
    vars(copy).update({key: dict(value) if isinstance(value, dict) else value for key, value in vars(module).items()})
    vars(copy).update(scale=float(scale), zero_point=int(zero_point))
    return copy
