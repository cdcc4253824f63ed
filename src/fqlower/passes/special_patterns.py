"""Special patterns: ops that run on quantized tensors as they are, or have a quantized twin.

torch 2.13's `special_pattern_replacement`, anchored on a `quantize_per_tensor`
(or a `.to(torch.float16)`) whose input `ref` is a node of one of five families
(fixed-qparams, default, copy, general tensor shape, cat) reading dequantized values:

    x ─▶ dequantize ─▶ ref ─▶ quantize_per_tensor(·, scale, zero_point) ─▶ users
        becomes (rule "reroute": copy and shape ops, cat, sigmoid/tanh, ...)
    x ─▶ ref ─▶ users

        becomes (rule "swap-module": nn.Softmax, BatchNorm2d, reference ConvTranspose, ...)
    x ─▶ quantized module(scale, zero_point) ─▶ users

        becomes (rule "quantized-op": F.elu, F.hardswish, F.layer_norm, ...)
    x ─▶ torch.ops.quantized.<op>(·, ..., output_scale=scale, output_zero_point=zero_point) ─▶ users

For `cat` the dequantized input is a list; every dequantize in it is bypassed. The
scale and zero-point nodes go away with the quantize (they stay as the quantized
op's arguments in "quantized-op", whose node takes the quantize node's place right
after the zero point, as torch inserts it). Dequantize nodes are left for
dead-code elimination. `.to(torch.float16)` anchors skip fixed-qparams and default
nodes and never swap modules, as in torch.

Module types are read from the program as it was when the pass started (torch
reads them from a `named_modules()` snapshot taken before its loop), and a
swapped module is built from that original reference module.

Where torch raises (inputs passed by keyword, a quantize of a constant, non-node
list items, scale/zero point that are not top-level constants, parameter nodes
it cannot erase, a graph it leaves out of order) or produces a wrong program (the
op's other users would get its quantized output; it bypasses only the first of
several dequantized inputs; it would delete a graph input; the quantized op cannot
be called with the arguments torch gives it; a module shared by several calls
with different output qparams ends up with the last call's), the node is left as
it is and the reason recorded.
"""

from __future__ import annotations

import functools

import attrs
import torch

from fqlower.engine.edits import AddNode, Edit, RemoveNode, ReplaceUses, SetArgs, SetModule, SetTarget
from fqlower.ir import Graph, Node, Program, ProgramView
from fqlower.engine.pipeline import Match, Miss, PassResult, Rule, RulePass

from fqlower.passes.special_classify import QUANTIZED_OP, REROUTE, SWAP_MODULE, Outcome, PassStart, classify, is_to_float16

# --- rewriting -------------------------------------------------------------------------------


def _anchor_role(found: Match) -> str:
    return found.bindings.get("quantize", found.bindings.get("to_float16"))


def rewrite_reroute(program: ProgramView, found: Match) -> list[Edit]:
    ref, anchor = found.bindings["reference"], _anchor_role(found)
    retarget = [SetTarget(ref, "call_method", found.facts["method"])] if "method" in found.facts else []
    return [
        *retarget,
        SetArgs(ref, found.facts["args"], found.facts["kwargs"]),
        ReplaceUses(anchor, ref),
        RemoveNode(anchor),
        *(RemoveNode(name) for name in found.facts["erase"]),
    ]


def rewrite_swap_module(program: ProgramView, found: Match) -> list[Edit]:
    path = program.node(found.bindings["reference"]).target
    return [SetModule(path, found.facts["module"]), *rewrite_reroute(program, found)]


def rewrite_quantized_op(program: ProgramView, found: Match) -> list[Edit]:
    ref, anchor = found.bindings["reference"], found.bindings["quantize"]
    qop, args, kwargs = found.facts["qop"], found.facts["args"], found.facts["kwargs"]
    if found.facts["in_place"]:  # the quantize sits right after the zero point: it becomes the op
        return [SetTarget(anchor, "call_function", qop), SetArgs(anchor, args, kwargs), RemoveNode(ref)]
    # torch's own steps; the new op takes the quantize's name and goes right after the zero point
    return [
        ReplaceUses(anchor, ref),
        RemoveNode(anchor),
        AddNode(Node(anchor, "call_function", qop, args, kwargs), after=found.bindings["zero_point"]),
        ReplaceUses(ref, anchor),
        RemoveNode(ref),
    ]


REWRITES = {SWAP_MODULE: rewrite_swap_module, QUANTIZED_OP: rewrite_quantized_op, REROUTE: rewrite_reroute}


def is_anchor(node: Node) -> bool:
    """What `classify` looks at: a quantize_per_tensor or a `.to(torch.float16)`."""
    return (node.op == "call_function" and node.target is torch.quantize_per_tensor) or is_to_float16(node)


class _Classified:
    """`classify` of the node being visited, asked once: every rule of the pass asks
    about the same node of the same program in turn (the driver moves on after a change)."""

    def __init__(self, start: PassStart):
        self.start = start
        # keyed by the graph value: a pass's draft stays the same object across its
        # changes, its graph does not
        self.last: tuple[Graph, Node, Outcome | None] | None = None

    def __call__(self, program: ProgramView, node: Node) -> Outcome | None:
        last, graph = self.last, program.graph
        if last is None or last[0] is not graph or last[1] is not node:
            last = self.last = (graph, node, classify(self.start, program, node))
        return last[2]


def _match(rule: str, classified: _Classified, program: ProgramView, node: Node) -> Match | Miss | None:
    outcome = classified(program, node)
    return outcome[1] if outcome is not None and outcome[0] == rule else None


@attrs.frozen
class SpecialPatterns:
    """A RulePass whose matchers also see the program as the pass found it."""

    name: str = "lower-special-patterns"

    def rules(self, start: PassStart) -> tuple[Rule, ...]:
        classified = _Classified(start)
        return tuple(Rule(rule, functools.partial(_match, rule, classified), REWRITES[rule], is_anchor) for rule in REWRITES)

    def run(self, program: Program) -> PassResult:
        return RulePass(self.name, self.rules(PassStart.of(program))).run(program)


LOWER_SPECIAL_PATTERNS = SpecialPatterns()
