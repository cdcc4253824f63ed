"""Arguments of functional linear/conv calls, and the prepack call that packs their weight.

Shared by the static and dynamic functional passes. Callers may pass any argument
by position or keyword, or leave it at its default: `bind` fills in the signature,
`prepack_call` spells the prepack op's arguments in full, with strides, paddings and
dilations as tuples of the conv's dimension (torch's own lowering passes them as
given, and crashes on defaults and on ints for 2-d and 3-d convs).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from fqlower.ir import ListArg, Node, Ref
from fqlower.engine.pipeline import Miss
from fqlower.reasons import Code
from fqlower.patterns import CONV_DIMS, CONV_PREPACK, FUNCTIONAL_SIGNATURES, LINEAR_PREPACK_BY_WEIGHT_DTYPE, REQUIRED


def bind(node: Node) -> dict[str, Any] | str:
    """Parameter name -> argument of a functional linear/conv call, defaults filled in;
    or why the call cannot be read."""
    signature = FUNCTIONAL_SIGNATURES[node.target]
    if len(node.args) > len(signature):
        return f"{node.name!r} has more positional arguments than {node.target.__name__} takes"
    names = [name for name, _ in signature]
    unknown = set(node.kwargs) - set(names)
    if unknown:
        return f"{node.name!r} passes unknown keywords {sorted(unknown)}"
    bound = dict(zip(names, node.args))
    for name, default in signature:
        if name in node.kwargs:
            if name in bound:
                return f"{node.name!r} passes {name!r} twice"
            bound[name] = node.kwargs[name]
        elif name not in bound:
            if default is REQUIRED:
                return f"{node.name!r} lacks its {name!r} argument"
            bound[name] = default
    return bound


def _int_tuple(value: Any, dims: int) -> tuple[int, ...] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * dims
    items = value.items if isinstance(value, ListArg) else value
    if isinstance(items, tuple) and all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return tuple(items)
    return None


Prepack = tuple[Any, tuple[Any, ...]]
"""A prepack op and its positional args."""


def prepack_call(function: Any, params: dict[str, Any], quantized_weight: Ref, weight_dtype: Any) -> Prepack | Miss:
    """(prepack op, its positional args) for a bound call, or why there is none."""
    bias = params["bias"]
    if function is F.linear:
        prepack = LINEAR_PREPACK_BY_WEIGHT_DTYPE.get(weight_dtype)
        if prepack is None:
            return Miss(f"no linear prepack op for weight dtype {weight_dtype}", Code.KERNEL_MISSING)
        return prepack, (quantized_weight, bias)
    dims = CONV_DIMS[function]
    spatial = ["stride", "padding", "output_padding", "dilation"] if "output_padding" in params else ["stride", "padding", "dilation"]
    values = {}
    for name in spatial:
        values[name] = _int_tuple(params[name], dims)
        if values[name] is None:
            return Miss(f"{name}={params[name]!r} is not a constant int or tuple of ints")
    groups = params["groups"]
    if not isinstance(groups, int):
        return Miss(f"groups={groups!r} is not a constant int")
    # prepack ops take (weight, bias, stride, padding, [output_padding,] dilation, groups)
    return CONV_PREPACK[function], (quantized_weight, bias, *(values[name] for name in spatial), groups)
