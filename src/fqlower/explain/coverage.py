"""How much of a model's weights run natively: weighted ops and their coverage."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn as nn

from fqlower.api import Lowering
from fqlower.log import PROVENANCE
from fqlower.errors import UnsupportedInput
from fqlower.log.fingerprint import fingerprint
from fqlower.ir import Node, Program, Ref, from_fx
from fqlower.patterns import FUNCTIONAL_SIGNATURES
from fqlower.pt2e.weighted import CONVS, LINEARS
from fqlower.explain.kinds import _native_weighted, is_weighted_module
from fqlower.explain.records import Coverage, WeightedOp

def _weight_tensors(program: Program, arg: Any) -> list[torch.Tensor]:
    """The constant tensor an argument reads, following first arguments back
    (weight -> quantize -> dequantize): [] when it comes from an input."""
    while isinstance(arg, Ref):
        node = program.node(arg.name)
        if node.op == "get_attr":
            value = program.constants.get(node.target)
            return [value] if isinstance(value, torch.Tensor) else []
        if node.op in ("call_function", "call_method") and node.args:
            arg = node.args[0]
            continue
        return []
    return []


def weighted_ops(program: Program) -> list[tuple[Node, str, list[torch.Tensor]]]:
    """(node, kind, parameter tensors) for every weighted op of a (reference) program."""
    from fqlower.passes.prepack import bind

    found: list[tuple[Node, str, list[torch.Tensor]]] = []
    for node in program.nodes():
        if node.op == "call_module":
            module = program.modules.get(node.target)
            if isinstance(module, nn.Module) and is_weighted_module(module):
                found.append((node, type(module).__name__, list(module.parameters())))
        elif node.op == "call_function" and (node.target in CONVS or node.target in LINEARS) and len(node.args) > 1:
            # a PT2E graph's aten conv/linear: weight (int8, through its dequantize) and bias
            tensors = [tensor for arg in node.args[1:3] for tensor in _weight_tensors(program, arg)]
            found.append((node, f"aten.{node.target.overloadpacket.__name__}", tensors))
        elif node.op == "call_function" and node.target in FUNCTIONAL_SIGNATURES:
            params = bind(node)
            tensors = [] if isinstance(params, str) else _weight_tensors(program, params["weight"]) + _weight_tensors(program, params["bias"])
            found.append((node, f"F.{node.target.__name__}", tensors))
    return found


def _provenance(node: Node) -> tuple[str, ...]:
    record = node.meta.get(PROVENANCE)
    sources = tuple(record["from"]) if record else ()
    return (node.name, *sources)


def reference_program(lowering: Lowering, reference: torch.fx.GraphModule) -> Program:
    """The program of the reference model `lowering` was made from; UnsupportedInput
    when `reference` is another model (its fingerprint is not the log's input)."""
    lowered = lowering.program
    start = from_fx(reference, dict(lowered.qconfig), dict(lowered.scope))
    if fingerprint(start) != lowering.log.header.input:
        raise UnsupportedInput(
            "the reference model given to explain() is not the one this lowering was made from "
            "(its fingerprint differs from the change log's input)"
        )
    return start


def coverage(lowering: Lowering, reference: torch.fx.GraphModule | Program) -> Coverage:
    """Weighted ops of `reference` and their parameters that run natively in `lowering`."""
    lowered = lowering.program
    start = reference if isinstance(reference, Program) else reference_program(lowering, reference)
    runs: dict[str, str] = {}
    for node in lowered.nodes():
        kind = _native_weighted(lowered, node)
        if kind is not None:
            for source in _provenance(node):
                runs.setdefault(source, f"%{node.name} ({kind})")
    ops = []
    sizes: dict[int, int] = {}
    native_tensors: set[int] = set()
    for node, kind, tensors in weighted_ops(start):
        unique = {id(tensor): tensor.numel() for tensor in tensors}
        sizes.update(unique)
        native = runs.get(node.name)
        if native is not None:
            native_tensors.update(unique)
        ops.append(WeightedOp(node.name, kind, sum(unique.values()), native))
    return Coverage(
        ops=tuple(ops),
        params_total=sum(sizes.values()),
        params_native=sum(sizes[key] for key in native_tensors),
    )
