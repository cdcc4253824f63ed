"""Tensor metadata reads skip the dequantize.

    x ─▶ dequantize ─▶ getattr(·, "shape")        x ─▶ getattr(·, "shape")
    x ─▶ dequantize ─▶ ·.size(1)           become   x ─▶ ·.size(1)
    x ─▶ dequantize ─▶ ·.shape()                    x ─▶ ·.shape()

A quantized tensor has the shape of its dequantized value, so the read goes to
the quantized tensor and the dequantize is left to dead-code elimination, as
torch 2.13's `_lower_getattr_tensor_metadta_op` (rule "getattr-tensor-metadata":
`x.shape` traces to `builtins.getattr(x, "shape")`) and `_lower_get_tensor_info_op`
(rule "get-tensor-info": call_method `shape` or `size`). Only the first argument
changes; the others and any keyword arguments stay.

Where torch would crash the node stays, with a recorded miss: a getattr with no
positional attribute name (torch reads args[1]: IndexError), a read whose first
argument is missing (IndexError) or not a node (AttributeError), a dequantize
without an input node.
"""

from __future__ import annotations

import builtins

from fqlower.engine.edits import Edit, SetArgs
from fqlower.ir import Node, ProgramView, Ref
from fqlower.passes.common import bindings, is_call_function, is_call_method, is_dequantize
from fqlower.engine.pipeline import Match, Miss, Rule, RulePass
from fqlower.reasons import Code

TENSOR_INFO_METHODS = ("shape", "size")


def _dequantized_receiver(program: ProgramView, reader: Node, what: str) -> Match | Miss | None:
    """A match when `reader`'s first argument is a dequantize of a node."""
    if not reader.args:
        return Miss(f"{what} {reader.name!r} has no positional arguments (torch reads args[0]: IndexError)", Code.TORCH_CRASHES)
    receiver = reader.args[0]
    if not isinstance(receiver, Ref):
        return Miss(f"{what} {reader.name!r} reads {receiver!r}, not a node (torch: AttributeError)", Code.TORCH_CRASHES)
    if not is_dequantize(program, receiver):
        return None
    dequantize = program.node(receiver.name)
    if not dequantize.args or not isinstance(dequantize.args[0], Ref):
        return Miss(f"{dequantize.name!r}, read by {reader.name!r}, does not dequantize a node")
    return Match(reader.name, bindings(reader=reader.name, dequantize=dequantize.name))


def match_getattr(program: ProgramView, node: Node) -> Match | Miss | None:
    if node.op != "call_function" or node.target is not builtins.getattr:
        return None
    if len(node.args) < 2:
        return Miss(f"getattr {node.name!r} has no positional attribute name (torch reads args[1]: IndexError)", Code.TORCH_CRASHES)
    attribute = node.args[1]
    if not (isinstance(attribute, str) and attribute == "shape"):
        return None
    return _dequantized_receiver(program, node, "getattr")


def match_tensor_info(program: ProgramView, node: Node) -> Match | Miss | None:
    if node.op != "call_method" or node.target not in TENSOR_INFO_METHODS:
        return None
    return _dequantized_receiver(program, node, f".{node.target}()")


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    reader = program.node(found.bindings["reader"])
    source = program.node(found.bindings["dequantize"]).args[0]
    return [SetArgs(reader.name, (source, *reader.args[1:]), reader.kwargs)]


LOWER_TENSOR_METADATA = RulePass(
    "lower-tensor-metadata",
    (
        Rule("getattr-tensor-metadata", match_getattr, rewrite, is_call_function),
        Rule("get-tensor-info", match_tensor_info, rewrite, is_call_method),
    ),
)
