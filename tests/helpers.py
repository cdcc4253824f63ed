"""Small graphs shared by the unit tests."""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn as nn

import fqlower


class TinyNet(nn.Module):
    """x -> fc -> relu -> add(x) -> output; with a parameter read by get_attr."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4)
        self.offset = nn.Parameter(torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.fc(x))
        return y + x + self.offset


def tiny_gm() -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(TinyNet())


def tiny_program() -> fqlower.Program:
    return fqlower.from_fx(tiny_gm())


def call(name: str, target, *args, **kwargs) -> fqlower.Node:
    return fqlower.Node(name, "call_function", target, tuple(args), fqlower.FrozenDict(kwargs))


def names(program: fqlower.Program) -> list[str]:
    return [node.name for node in program.nodes()]


ADD = operator.add
