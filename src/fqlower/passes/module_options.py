"""Options of a reference module that the native module torch swaps in ignores or
cannot honour (torch 2.13), found by auditing every option of every swapped module.

Each check answers a `Miss` whose code says what torch's lowering would do, or None
when the native module honours every option the reference sets:

    Conv padding='same'|'valid'                torch crashes packing it
    Conv padding_mode='replicate'|'circular',  torch crashes ("not supported by quantized
      'reflect' on a 3-d conv                   convolution"; Conv3d asserts)
    LSTM/GRU bias=False                        torch crashes (KeyError 'bias_ih_l0')
    Embedding(Bag) max_norm                    the native module never renormalizes rows
    EmbeddingBag mode='mean'|'max'             the native module always sums
    EmbeddingBag padding_idx, row not zero     the native module sums the padding row in
    Embedding(Bag) 4-bit, odd embedding_dim    quint4x2 packs two values a byte: the
                                               output gains a column of garbage
    Embedding(Bag) called with input=...       the native module names it `indices`: fails running
    BatchNorm affine=False                     torch crashes building it
    BatchNorm track_running_stats=False        the kernel needs running stats: fails running
    InstanceNorm track_running_stats=True      the native module normalizes with the
                                               input's statistics, not the running ones
    ELU/LeakyReLU/Hardswish inplace=True       the quantized op is out of place, so another
      (module or F.*) on a shared dequantize   reader of the dequantized value sees it
                                               unchanged: refused (`check_inplace_activations`)

What stays is left in float (a reference module), and the rest of the model lowers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.nn.quantized.reference as nnqr
import torch.nn as nn
import torch.nn.functional as F

from fqlower.engine.pipeline import Miss
from fqlower.errors import UnsupportedInput
from fqlower.ir import Node, ProgramView, Ref
from fqlower.reasons import Code

_CONVS = (nnqr.Conv1d, nnqr.Conv2d, nnqr.Conv3d, nnqr.ConvTranspose1d, nnqr.ConvTranspose2d, nnqr.ConvTranspose3d)
_EMBEDDINGS = (nnqr.Embedding, nnqr.EmbeddingBag)
_BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
# activations whose quantized op ignores inplace=True (module types; functions -> the
# position of `inplace`). ReLU, ReLU6 and Hardtanh are not here: quantized relu_ mutates.
_OUT_OF_PLACE_MODULES = (nn.ELU, nn.LeakyReLU, nn.Hardswish)
_OUT_OF_PLACE_FUNCTIONS = {F.elu: 2, F.leaky_relu: 2, F.hardswish: 1}


def option_problem(call: Node, module: Any) -> Miss | None:
    """Why the native module for `module` (called by `call`) would not honour one of
    its options; None when it honours them all. A fused module is judged by its parts."""
    if isinstance(module, nn.Sequential):  # fused: ConvReLU2d, BNReLU2d, LinearReLU, ...
        return next((problem for part in module if (problem := option_problem(call, part)) is not None), None)
    if isinstance(module, _CONVS):
        return _conv_problem(module)
    if isinstance(module, (nnqr.LSTM, nnqr.GRU)):
        return _recurrent_problem(module)
    if isinstance(module, _EMBEDDINGS):
        return _embedding_problem(call, module)
    if isinstance(module, _BATCH_NORMS):
        return _batch_norm_problem(module)
    if isinstance(module, _INSTANCE_NORMS) and module.track_running_stats:
        return Miss(
            f"{type(module).__name__} {call.target!r} normalizes with its running statistics, and the quantized "
            "module uses the input's (torch 2.13's from_float drops them): torch's lowered model would compute "
            "something else",
            Code.TORCH_WRONG_RESULT,
        )
    return None


def check_inplace_activations(program: ProgramView) -> None:
    """Refuse (UnsupportedInput) an in-place ELU, LeakyReLU or Hardswish on a dequantized
    value that other nodes read too: in the model they read the changed value, and the
    quantized op works out of place, so no lowering of it (nor of those readers, which
    lowering moves to the quantized value) computes what the model does."""
    for node in program.nodes():
        if node.op == "call_module":
            module = program.modules.get(node.target)
            inplace = isinstance(module, _OUT_OF_PLACE_MODULES) and bool(module.inplace)
        elif node.op == "call_function" and node.target in _OUT_OF_PLACE_FUNCTIONS:
            inplace = node.arg(_OUT_OF_PLACE_FUNCTIONS[node.target], "inplace", False) is True
        else:
            continue
        changed = node.arg(0, "input")
        if not (inplace and isinstance(changed, Ref)):
            continue
        source = program.node(changed.name)
        others = [f"%{user}" for user in program.users(source.name) if user != node.name]
        if source.op == "call_method" and source.target == "dequantize" and others:
            raise UnsupportedInput(
                f"%{node.name} changes %{source.name} in place, and {', '.join(others)} read it too: its quantized "
                "op works out of place, so they would read the value unchanged (torch's lowering computes "
                "something else here); call it with inplace=False",
                node=node.name,
            )


def _conv_problem(conv: Any) -> Miss | None:
    padding, mode = conv.padding, conv.padding_mode
    if isinstance(padding, str):
        return Miss(
            f"the conv pads {padding!r}, which quantized convolutions do not support (torch fails packing it)",
            Code.TORCH_CRASHES,
        )
    if mode not in ("zeros", "reflect") or (mode == "reflect" and isinstance(conv, nnqr.Conv3d)):
        return Miss(
            f"the conv pads with padding_mode={mode!r}; quantized convolutions pad with zeros, or reflect in 1 "
            "or 2 dimensions (torch's lowering fails building it)",
            Code.TORCH_CRASHES,
        )
    return None


def _recurrent_problem(rnn: Any) -> Miss | None:
    name = type(rnn).__name__
    if not rnn.bias:
        return Miss(f"the {name} has no biases (bias=False): torch's lowering fails reading them (KeyError)", Code.TORCH_CRASHES)
    return None  # (proj_size: convert_fx's reference LSTM already drops it, and torch's lowering follows)


def _embedding_problem(call: Node, embedding: Any) -> Miss | None:
    kind = f"{type(embedding).__name__} {call.target!r}"
    bag = isinstance(embedding, nnqr.EmbeddingBag)
    if "input" in call.kwargs:
        return Miss(
            f"%{call.name} passes the indices as input=, which the quantized {type(embedding).__name__} calls "
            "`indices`: torch's lowered model would fail running it",
            Code.TORCH_MODEL_CRASHES,
        )
    if embedding.max_norm is not None:
        return _wrong(f"{kind} renormalizes rows to max_norm={embedding.max_norm}, which the quantized module never does")
    if bag and embedding.mode != "sum":
        return _wrong(f"{kind} reduces with {embedding.mode!r}: the quantized EmbeddingBag always sums (torch 2.13 passes mode 0 to its kernel)")
    if bag and embedding.padding_idx is not None and bool(embedding.weight[embedding.padding_idx].any()):
        return _wrong(
            f"{kind} leaves padding_idx={embedding.padding_idx} out of its bags, and the quantized EmbeddingBag sums "
            "that row in (it is not zero here)"
        )
    if getattr(embedding, "weight_dtype", None) == torch.quint4x2 and embedding.embedding_dim % 2:
        return _wrong(
            f"{kind} has an odd embedding_dim ({embedding.embedding_dim}) and a 4-bit weight: quint4x2 packs two "
            "values a byte, and the quantized module returns an extra column and misaligned rows"
        )
    return None


def _batch_norm_problem(norm: Any) -> Miss | None:
    if not norm.affine:
        return Miss("the batch norm has no weight and bias (affine=False): torch's lowering fails building it", Code.TORCH_CRASHES)
    if not norm.track_running_stats:
        return Miss(
            "the batch norm has no running statistics (track_running_stats=False), which the quantized kernel "
            "needs: torch's lowered model would fail running it",
            Code.TORCH_MODEL_CRASHES,
        )
    return None


def _wrong(what: str) -> Miss:
    return Miss(f"{what}, so torch's lowered model would compute something else", Code.TORCH_WRONG_RESULT)
