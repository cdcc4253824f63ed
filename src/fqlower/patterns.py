"""The op and module tables of torch 2.13's `_lower_to_native_backend`, as data.

Which reference module or op lowers to which native module or op. Passes read
these tables; nothing here decides how a graph changes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
import torch.nn.functional as F

# reference module -> static quantized module
STATIC_MODULES: dict[type, type] = {
    nnqr.Linear: nnq.Linear,
    nnqr.Conv1d: nnq.Conv1d,
    nnqr.Conv2d: nnq.Conv2d,
    nnqr.Conv3d: nnq.Conv3d,
}

# fused module -> (the reference module it must hold at [0], static quantized module)
STATIC_FUSED_MODULES: dict[type, tuple[type, type]] = {
    nni.LinearReLU: (nnqr.Linear, nniq.LinearReLU),
    nni.LinearLeakyReLU: (nnqr.Linear, nniq.LinearLeakyReLU),
    nni.LinearTanh: (nnqr.Linear, nniq.LinearTanh),
    nni.ConvReLU1d: (nnqr.Conv1d, nniq.ConvReLU1d),
    nni.ConvReLU2d: (nnqr.Conv2d, nniq.ConvReLU2d),
    nni.ConvReLU3d: (nnqr.Conv3d, nniq.ConvReLU3d),
}

# fused module with two dequantized inputs -> (inner reference module, quantized module)
STATIC_TWO_INPUT_FUSED_MODULES: dict[type, tuple[type, type]] = {
    nni.ConvAdd2d: (nnqr.Conv2d, nniq.ConvAdd2d),
    nni.ConvAddReLU2d: (nnqr.Conv2d, nniq.ConvAddReLU2d),
}

# reference module -> dynamically quantized module
DYNAMIC_MODULES: dict[type, type] = {
    nnqr.Linear: nnqd.Linear,
    nnqr.GRUCell: nnqd.GRUCell,
    nnqr.LSTMCell: nnqd.LSTMCell,
    nnqr.RNNCell: nnqd.RNNCell,
    nnqr.LSTM: nnqd.LSTM,
    nnqr.GRU: nnqd.GRU,
}

DYNAMIC_FUSED_MODULES: dict[type, tuple[type, type]] = {
    nni.LinearReLU: (nnqr.Linear, nniqd.LinearReLU),
}

# reference module -> weight-only quantized module
WEIGHT_ONLY_MODULES: dict[type, type] = {
    nnqr.Embedding: nnq.Embedding,
    nnqr.EmbeddingBag: nnq.EmbeddingBag,
}

# module swapped by the special-pattern pass -> quantized module
SPECIAL_MODULES: dict[type, type] = {
    nn.BatchNorm2d: nnq.BatchNorm2d,
    nn.BatchNorm3d: nnq.BatchNorm3d,
    nnqr.ConvTranspose1d: nnq.ConvTranspose1d,
    nnqr.ConvTranspose2d: nnq.ConvTranspose2d,
    nnqr.ConvTranspose3d: nnq.ConvTranspose3d,
    nn.ELU: nnq.ELU,
    nn.LeakyReLU: nnq.LeakyReLU,
    nn.Hardswish: nnq.Hardswish,
    nn.InstanceNorm1d: nnq.InstanceNorm1d,
    nn.InstanceNorm2d: nnq.InstanceNorm2d,
    nn.InstanceNorm3d: nnq.InstanceNorm3d,
    nn.LayerNorm: nnq.LayerNorm,
    nn.Dropout: nnq.Dropout,
    nn.Softmax: nnq.Softmax,
    nn.PReLU: nnq.PReLU,
    nni.BNReLU2d: nniq.BNReLU2d,
    nni.BNReLU3d: nniq.BNReLU3d,
}

RELU_FUNCTIONS: tuple[Callable, ...] = (F.relu, torch.relu)


# --- the five node families of the special-pattern pass ------------------------------------


class NodeFamily:
    """Functions, method names and module types that make up one family."""

    def __init__(self, name: str, functions: list[Any], methods: list[str], module_types: list[type]):
        self.name = name
        self.functions = tuple(functions)
        self.methods = frozenset(methods)
        self.module_types = tuple(module_types)

    def kind_of(self, op: str, target: Any, module: Any) -> str | None:
        """'function', 'method' or 'module' when the node belongs to the family, else None."""
        if op == "call_function" and any(target is f or target == f for f in self.functions):
            return "function"
        if op == "call_method" and target in self.methods:
            return "method"
        if op == "call_module" and type(module) in self.module_types:
            return "module"
        return None


FIXED_QPARAMS = NodeFamily(
    "fixed-qparams",
    [F.hardsigmoid, F.sigmoid, torch.sigmoid, torch.tanh],
    ["hardsigmoid", "hardsigmoid_", "sigmoid", "sigmoid_", "tanh", "tanh_"],
    [nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softmax],
)

DEFAULT = NodeFamily(
    "default",
    [F.elu, F.hardswish, F.instance_norm, F.layer_norm, F.leaky_relu, F.dropout],
    [],
    [
        nnqr.ConvTranspose1d,
        nnqr.ConvTranspose2d,
        nnqr.ConvTranspose3d,
        nn.ELU,
        nn.LeakyReLU,
        nn.Hardswish,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
        nn.LayerNorm,
        nn.Dropout,
        nn.PReLU,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nni.BNReLU2d,
        nni.BNReLU3d,
    ],
)

COPY = NodeFamily(
    "copy",
    [
        torch.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d,
        F.hardtanh,
        F.hardtanh_,
        F.interpolate,
        F.max_pool1d,
        F.max_pool2d,
        F.max_pool3d,
        F.relu,
        F.relu6,
        torch.avg_pool1d,
        torch._C._nn.avg_pool2d,
        torch._C._nn.avg_pool3d,
        torch.clamp,
        torch.flatten,
        torch.mean,
        operator.floordiv,
        torch.channel_shuffle,
    ],
    ["clamp", "mean", "relu", "relu_"],
    [
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.Hardtanh,
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.ReLU,
        nn.ReLU6,
        nn.ChannelShuffle,
    ],
)

GENERAL_TENSOR_SHAPE = NodeFamily(
    "general-tensor-shape",
    [
        torch.narrow,
        torch.transpose,
        torch.repeat_interleave,
        torch.squeeze,
        torch.stack,
        torch.unsqueeze,
        F.pixel_shuffle,
        F.pixel_unshuffle,
    ],
    [
        "contiguous",
        "detach",
        "detach_",
        "permute",
        "repeat",
        "repeat_interleave",
        "reshape",
        "resize_",
        "shape",
        "size",
        "squeeze",
        "squeeze_",
        "transpose",
        "unsqueeze",
        "unsqueeze_",
        "view",
    ],
    [nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle],
)

OTHER = NodeFamily("other", [torch.cat], [], [])

SPECIAL_FAMILIES: tuple[NodeFamily, ...] = (FIXED_QPARAMS, DEFAULT, COPY, GENERAL_TENSOR_SHAPE, OTHER)

# quantized op -> keyword arguments it does not take (dropped when lowering a default functional)
QOP_KWARGS_TO_DROP: dict[Any, tuple[str, ...]] = {
    torch.ops.quantized.hardswish: ("inplace",),
    torch.ops.quantized.elu: ("inplace",),
    torch.ops.quantized.dropout: ("inplace",),
    torch.ops.quantized.instance_norm: ("running_mean", "running_var", "use_input_stats", "momentum"),
}


# --- binary ops ------------------------------------------------------------------------------

# the ops the binary-op pass looks for (operator.matmul is in torch's op map but not here)
BINARY_OPS: tuple[Callable, ...] = (operator.add, torch.add, operator.mul, torch.mul, torch.matmul)

QUANTIZED_BINARY_OPS: dict[Callable, Any] = {
    operator.add: torch.ops.quantized.add,
    torch.add: torch.ops.quantized.add,
    operator.mul: torch.ops.quantized.mul,
    operator.matmul: torch.ops.quantized.matmul,
    torch.mul: torch.ops.quantized.mul,
    torch.matmul: torch.ops.quantized.matmul,
}

QUANTIZED_BINARY_RELU_OPS: dict[Callable, Any] = {
    operator.add: torch.ops.quantized.add_relu,
    torch.add: torch.ops.quantized.add_relu,
    operator.mul: torch.ops.quantized.mul_relu,
    torch.mul: torch.ops.quantized.mul_relu,
}


# --- functional linear / conv ----------------------------------------------------------------

REQUIRED = object()  # marks a parameter without default in the signatures below

# functional -> ((parameter, default), ...) in positional order
FUNCTIONAL_SIGNATURES: dict[Callable, tuple[tuple[str, Any], ...]] = {
    F.linear: (("input", REQUIRED), ("weight", REQUIRED), ("bias", None)),
    **{
        conv: (("input", REQUIRED), ("weight", REQUIRED), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))
        for conv in (F.conv1d, F.conv2d, F.conv3d)
    },
    **{
        conv: (
            ("input", REQUIRED),
            ("weight", REQUIRED),
            ("bias", None),
            ("stride", 1),
            ("padding", 0),
            ("output_padding", 0),
            ("groups", 1),
            ("dilation", 1),
        )
        for conv in (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
    },
}

# spatial dimensions of each conv functional
CONV_DIMS: dict[Callable, int] = {
    F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, F.conv_transpose1d: 1, F.conv_transpose2d: 2, F.conv_transpose3d: 3,
}

# functional -> (quantized op, quantized op fused with relu or None)
STATIC_FUNCTIONALS: dict[Callable, tuple[Any, Any]] = {
    F.linear: (torch.ops.quantized.linear, torch.ops.quantized.linear_relu),
    F.conv1d: (torch.ops.quantized.conv1d, torch.ops.quantized.conv1d_relu),
    F.conv2d: (torch.ops.quantized.conv2d, torch.ops.quantized.conv2d_relu),
    F.conv3d: (torch.ops.quantized.conv3d, torch.ops.quantized.conv3d_relu),
    F.conv_transpose1d: (torch.ops.quantized.conv_transpose1d, None),
    F.conv_transpose2d: (torch.ops.quantized.conv_transpose2d, None),
    F.conv_transpose3d: (torch.ops.quantized.conv_transpose3d, None),
}

# functional -> {(activation dtype, weight dtype): (dynamic op, dynamic op fused with relu or None)}
DYNAMIC_FUNCTIONALS: dict[Callable, dict[tuple[torch.dtype, torch.dtype], tuple[Any, Any]]] = {
    F.linear: {
        (torch.quint8, torch.qint8): (torch.ops.quantized.linear_dynamic, torch.ops.quantized.linear_relu_dynamic),
        (torch.float16, torch.float16): (torch.ops.quantized.linear_dynamic_fp16, torch.ops.quantized.linear_relu_dynamic_fp16),
    },
    F.conv1d: {(torch.quint8, torch.qint8): (torch.ops.quantized.conv1d_dynamic, None)},
    F.conv2d: {(torch.quint8, torch.qint8): (torch.ops.quantized.conv2d_dynamic, None)},
    F.conv3d: {(torch.quint8, torch.qint8): (torch.ops.quantized.conv3d_dynamic, None)},
}

LINEAR_PREPACK_BY_WEIGHT_DTYPE: dict[torch.dtype, Any] = {
    torch.qint8: torch.ops.quantized.linear_prepack,
    torch.float16: torch.ops.quantized.linear_prepack_fp16,
}

CONV_PREPACK: dict[Callable, Any] = {
    F.conv1d: torch.ops.quantized.conv1d_prepack,
    F.conv2d: torch.ops.quantized.conv2d_prepack,
    F.conv3d: torch.ops.quantized.conv3d_prepack,
    F.conv_transpose1d: torch.ops.quantized.conv_transpose1d_prepack,
    F.conv_transpose2d: torch.ops.quantized.conv_transpose2d_prepack,
    F.conv_transpose3d: torch.ops.quantized.conv_transpose3d_prepack,
}

WEIGHT_PREPACK_OPS: tuple[Any, ...] = (
    torch.ops.quantized.linear_prepack,
    torch.ops.quantized.linear_prepack_fp16,
    *CONV_PREPACK.values(),
    # the PT2E front end's (fqlower.pt2e): onednn's, folded the same way
    torch.ops.onednn.qconv_prepack,
    torch.ops.onednn.qlinear_prepack,
)

# the PT2E front end's kernels (fqlower.pt2e): what torchao's x86 lowering emits
PT2E_KERNELS: tuple[Any, ...] = (
    torch.ops.onednn.qconv_pointwise.default,
    torch.ops.onednn.qlinear_pointwise.default,
    torch.ops.onednn.qconv2d_pointwise.binary,
    torch.ops.onednn.qlinear_pointwise.binary,
)

# weight quantizer -> positions of its zero point(s) and dtype arguments, with their keywords
WEIGHT_QUANTIZER_ARGS = {
    torch.quantize_per_tensor: ((2, "zero_point"), (3, "dtype")),
    torch.quantize_per_channel: ((2, "zero_points"), (4, "dtype")),
}

TRANSPOSED_CONVS = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
