"""Two small rule passes used to test the driver, pipelines and logs.

    neg(neg(x))  ->  x                      (cancel-double-neg)
    relu(y)      ->  clamp(y, min=0)        (relu-to-clamp; a relu with several
                                             users is a recorded miss)
"""

from __future__ import annotations

import torch

import fqlower
from fqlower import FrozenDict, Match, Miss, Ref, RemoveNode, ReplaceUses, SetArgs, SetTarget, rule_pass


def match_double_neg(program, node):
    if node.op != "call_function" or node.target is not torch.neg:
        return None
    inner = node.args[0]
    if not isinstance(inner, Ref) or program.node(inner.name).target is not torch.neg:
        return None
    if len(program.users(inner.name)) != 1:
        return Miss("the inner neg has other users")
    return Match(node.name, FrozenDict({"inner": inner.name, "source": program.node(inner.name).args[0].name}))


def rewrite_double_neg(program, match):
    return (ReplaceUses(match.anchor, match.bindings["source"]), RemoveNode(match.anchor), RemoveNode(match.bindings["inner"]))


def match_relu(program, node):
    if node.op != "call_function" or node.target is not torch.relu:
        return None
    if len(program.users(node.name)) > 1:
        return Miss(f"relu {node.name!r} has {len(program.users(node.name))} users")
    return Match(node.name)


def rewrite_relu(program, match):
    node = program.node(match.anchor)
    return (SetTarget(node.name, "call_function", torch.clamp), SetArgs(node.name, node.args, FrozenDict({"min": 0.0})))


CANCEL_DOUBLE_NEG = rule_pass("cancel-double-neg", match_double_neg, rewrite_double_neg)
RELU_TO_CLAMP = rule_pass("relu-to-clamp", match_relu, rewrite_relu)
TOY_PIPELINE = fqlower.Pipeline("toy", (CANCEL_DOUBLE_NEG, RELU_TO_CLAMP))


class ToyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        a = torch.relu(torch.neg(torch.neg(self.fc(x))))
        b = torch.relu(x)
        return a + b + torch.sigmoid(b)


def toy_program() -> fqlower.Program:
    return fqlower.from_fx(torch.fx.symbolic_trace(ToyNet()))
