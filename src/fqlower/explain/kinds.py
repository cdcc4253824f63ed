"""What a node is: a leftover conversion, a native op, a packed weight."""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.nn.intrinsic as nni
import torch.fx
import torch.nn as nn

from fqlower.errors import ChangeLogError
from fqlower.ir import Build, Node, Original, Program, format_target, refs_in
from fqlower.names import qualified_name, resolve
from fqlower.patterns import WEIGHT_PREPACK_OPS
from fqlower.pt2e import patterns as pt2e
from fqlower.explain.records import DEQUANTIZE, QUANTIZE, _QUANTIZERS

_WEIGHTED_MODULES: tuple[type, ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,  # Conv1/2/3d and ConvTranspose1/2/3d
    nn.RNNBase,  # LSTM, GRU, RNN
    nn.RNNCellBase,  # LSTMCell, GRUCell, RNNCell
    nn.Embedding,
    nn.EmbeddingBag,
)


def is_weighted_module(module: nn.Module) -> bool:
    """Linear/Conv/ConvTranspose/RNNs/cells/Embedding(Bag), their reference versions
    (subclasses) and fused modules holding one."""
    if isinstance(module, _WEIGHTED_MODULES):
        return True
    if isinstance(module, nni._FusedModule):
        return any(isinstance(child, _WEIGHTED_MODULES) for child in module.children())
    return False


# a PT2E graph's quantize/dequantize (fqlower.pt2e): the same kinds
_DECOMPOSED_KINDS = {pt2e.QUANTIZE: QUANTIZE, pt2e.DEQUANTIZE: DEQUANTIZE}


def leftover_kind(node: Node) -> str | None:
    """quantize_per_tensor / quantize_per_tensor_dynamic / dequantize, or None."""
    if node.op == "call_method" and node.target == "dequantize":
        return DEQUANTIZE
    if node.op == "call_function":
        for quantizer, kind in _QUANTIZERS.items():
            if node.target is quantizer:
                return kind
        return _DECOMPOSED_KINDS.get(node.target)
    return None


def _is_quantizer(node: Node) -> bool:
    """A quantize node of any kind (per tensor, per channel, dynamic)."""
    return node.op == "call_function" and any(
        node.target is quantizer for quantizer in (*_QUANTIZERS, torch.quantize_per_channel)
    )


def _is_to_float16(node: Node) -> bool:
    return node.op == "call_method" and node.target == "to" and len(node.args) == 2 and node.args[1] == torch.float16


def _module_class(program: Program, node: Node) -> type | None:
    """The class of the module a call_module node calls (specs resolved, not built)."""
    module = program.modules.get(node.target)
    if isinstance(module, Build):
        try:
            factory = resolve(module.factory)
        except ChangeLogError:
            return None
        owner = getattr(factory, "__self__", None)
        if isinstance(owner, type):
            return owner
        return factory if isinstance(factory, type) else None
    return type(module) if module is not None else None


_NATIVE_MODULE_PREFIXES = ("torch.ao.nn.quantized.", "torch.ao.nn.intrinsic.quantized.")


def _is_native_class(cls: type | None) -> bool:
    if cls is None:
        return False
    module = cls.__module__
    return module.startswith(_NATIVE_MODULE_PREFIXES) and not module.startswith("torch.ao.nn.quantized.reference")


_NATIVE_NAMESPACES = ("quantized", "onednn")  # onednn's: the PT2E front end's kernels


def _is_quantized_op(target: Any) -> bool:
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.split("::")[0] in _NATIVE_NAMESPACES and "prepack" not in target._qualified_op_name
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in _NATIVE_NAMESPACES and "prepack" not in target.name()
    return False


_PREPACK_NAMES = frozenset(qualified_name(op) for op in WEIGHT_PREPACK_OPS)


def _is_packed_weight(program: Program, name: str) -> bool:
    node = program.node(name)
    if node.op == "get_attr":
        value = program.constants.get(node.target)
        return isinstance(value, torch._C.ScriptObject) or (isinstance(value, Build) and value.factory in _PREPACK_NAMES)
    return node.op == "call_function" and any(node.target is op for op in WEIGHT_PREPACK_OPS)


def native_kind(program: Program, node: Node) -> str | None:
    """What a node runs natively ("torch.ao.nn.quantized...Linear", "quantized::add"), or None."""
    if node.op == "call_module":
        cls = _module_class(program, node)
        return f"{cls.__module__}.{cls.__qualname__}" if cls is not None and _is_native_class(cls) else None
    if node.op == "call_function" and _is_quantized_op(node.target):
        return format_target(node.target).removeprefix("torch.ops.").replace(".", "::", 1)
    return None


def _native_weighted(program: Program, node: Node) -> str | None:
    """What a node runs natively *with weights*, or None."""
    kind = native_kind(program, node)
    if kind is None:
        return None
    if node.op == "call_module":
        module = program.modules.get(node.target)
        original = module.args[0] if isinstance(module, Build) and module.args else module
        return kind if _holds_weights(program, original) else None
    reads_packed = any(_is_packed_weight(program, ref.name) for ref in refs_in((node.args, node.kwargs)))
    return kind if reads_packed else None


_WEIGHT_ATTRIBUTES = ("weight", "_packed_params", "_all_weight_values")  # of quantized modules


def _holds_weights(program: Program, spec: Any) -> bool:
    """True for a spec built from a weighted module, or a quantized module with weights."""
    if isinstance(spec, Original):
        spec = program.originals.get(spec.path)
    elif isinstance(spec, Build):
        return bool(spec.args) and _holds_weights(program, spec.args[0])
    if not isinstance(spec, nn.Module):
        return False
    return is_weighted_module(spec) or (_is_native_class(type(spec)) and any(hasattr(spec, name) for name in _WEIGHT_ATTRIBUTES))


def describe_op(program: Program, node: Node) -> str:
    """`torch.sigmoid at %sigmoid`, `.relu() at %relu`, `module fc2 (Linear) at %fc2`."""
    if node.op == "call_module":
        cls = _module_class(program, node)
        what = f"module {node.target} ({cls.__name__ if cls else '?'})"
    elif node.op == "call_method":
        what = f".{node.target}()"
    elif node.op == "call_function":
        what = format_target(node.target)
    else:
        what = node.op
    return f"{what} at %{node.name}"
