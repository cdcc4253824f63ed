"""What a PT2E reference graph is made of: quantized_decomposed quantize/dequantize calls
with literal qparams around aten ops (torchao's `convert_pt2e` output)."""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)

from fqlower.engine.pipeline import Miss
from fqlower.ir import ListArg, Node, Program, ProgramView

decomposed = torch.ops.quantized_decomposed
QUANTIZE = decomposed.quantize_per_tensor.default
DEQUANTIZE = decomposed.dequantize_per_tensor.default
DEQUANTIZE_PER_CHANNEL = decomposed.dequantize_per_channel.default
PT2E_OPS = frozenset({QUANTIZE, DEQUANTIZE, DEQUANTIZE_PER_CHANNEL, decomposed.quantize_per_channel.default})


def is_pt2e(graph: Any) -> bool:
    """A PT2E reference graph (an fqlower Program or a torch.fx GraphModule): it calls
    quantized_decomposed quantize/dequantize ops."""
    nodes = graph.graph.nodes.values() if isinstance(graph, Program) else graph.graph.nodes
    return any(node.op == "call_function" and node.target in PT2E_OPS for node in nodes)


def _uint8_qparams(node: Node, target: Any) -> tuple[float, int] | None:
    """(scale, zero_point) of a quantize/dequantize_per_tensor to uint8 over 0..255 with literal qparams."""
    if node.op != "call_function" or node.target != target or len(node.args) != 6:
        return None
    _, scale, zero_point, low, high, dtype = node.args
    if not isinstance(scale, float) or not isinstance(zero_point, int) or (low, high, dtype) != (0, 255, torch.uint8):
        return None
    return scale, zero_point


def is_quantize_uint8(node: Node) -> bool:
    return _uint8_qparams(node, QUANTIZE) is not None


def activation_qparams(program: ProgramView, dq: Node | None) -> tuple[float, int] | Miss:
    """The qparams of a weighted op's input, which must be a uint8 dequantize: the onednn
    int8 kernels take unsigned 8-bit activations over 0..255."""
    if dq is None or dq.op != "call_function" or dq.target != DEQUANTIZE:
        return Miss("its input is not dequantized from uint8: no int8 kernel takes a float input here")
    found = _uint8_qparams(dq, DEQUANTIZE)
    if found is None:
        return Miss(f"its input is dequantized with {dq.args[1:]}: onednn's int8 kernels take uint8 activations over 0..255 with constant qparams")
    return found


def is_dequantize_per_channel(node: Node) -> bool:
    return (
        node.op == "call_function"
        and node.target == DEQUANTIZE_PER_CHANNEL
        and len(node.args) == 7
        and tuple(node.args[4:]) == (-128, 127, torch.int8)
    )


def int_list(value: Any) -> list[int] | None:
    """A list of int constants (a graph's `[1, 1]`), else None."""
    items = value.items if isinstance(value, ListArg) else value
    if isinstance(items, (list, tuple)) and all(type(item) is int for item in items):
        return list(items)
    return None


def conv_arguments(node: Node) -> tuple[list[int], list[int], list[int], int] | None:
    """stride, padding, dilation, groups of an aten convolution, its defaults filled in
    (one entry per spatial dimension); None when one is not a constant."""
    dims = {torch.ops.aten.conv1d.default: 1, torch.ops.aten.conv2d.default: 2, torch.ops.aten.conv3d.default: 3}[node.target]
    names = ("stride", "padding", "dilation", "groups")
    defaults: tuple[Any, ...] = ([1], [0], [1], 1)
    values = [node.args[3 + index] if len(node.args) > 3 + index else node.kwargs.get(name, default) for index, (name, default) in enumerate(zip(names, defaults))]
    lists = [int_list(value) for value in values[:3]]
    groups = values[3]
    if type(groups) is not int or any(value is None for value in lists):
        return None
    expanded = [value * dims if len(value) == 1 else value for value in lists if value is not None]
    if any(len(value) != dims for value in expanded):
        return None
    return expanded[0], expanded[1], expanded[2], groups


def sole_user(program: ProgramView, name: str) -> Node | None:
    users = program.users(name)
    return program.node(users[0]) if len(users) == 1 else None


SHAPE = "fqlower_shape"  # node meta: the static shape of a kernel's value (fqlower.pt2e.weighted)


def static_shape(node: Node) -> list[int] | None:
    """The shape export recorded for `node`'s value (or fqlower did, for a kernel it
    added), when every size is a plain int."""
    value = node.meta.get("val")
    shape = getattr(value, "shape", None) or node.meta.get(SHAPE)
    if shape is None or not all(isinstance(size, int) for size in shape):
        return None
    return list(shape)
