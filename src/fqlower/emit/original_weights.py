"""`keep_original_weights=True`: the `original_weights_lookup` torch attaches.

For each packed weight, torch rebuilds the producer subgraph as a GraphModule and
keeps its state_dict values sorted by size (largest first), with `None` appended
when only one tensor remains (no bias). The order of equal-sized tensors is that
state_dict's order, which this module reproduces from the packed-weight spec:
producers in torch's trace-back order, reversed; then per module, parameters
before buffers, and submodules after their parent.
"""

from __future__ import annotations

from typing import Any

import torch

from fqlower.ir import Build, FrozenDict, ListArg, Original, Program

ORIGINAL_WEIGHTS_LOOKUP = "original_weights_lookup"


def _trace_back(spec: Build) -> list[Any]:
    """Nodes in the order torch's collect_producer_nodes lists them."""
    found, frontier = [spec], [spec]
    while frontier:
        current = frontier.pop()
        for arg in _operands(current):
            found.append(arg)
            if isinstance(arg, Build):
                frontier.append(arg)
    return found


def _operands(spec: Build) -> list[Any]:
    items = list(spec.args) + list(spec.kwargs.values())
    flat: list[Any] = []
    for item in items:
        if isinstance(item, (Build, Original)):
            flat.append(item)
        elif isinstance(item, (tuple, ListArg)):
            flat.extend(x for x in (item.items if isinstance(item, ListArg) else item) if isinstance(x, (Build, Original)))
        elif isinstance(item, FrozenDict):
            flat.extend(x for x in item.values() if isinstance(x, (Build, Original)))
    return flat


def _state_dict_order(paths: list[str], program: Program) -> list[torch.Tensor]:
    """The values of the state_dict of a module holding these attribute paths."""
    tree: dict[str, Any] = {}
    for path in paths:
        *parents, field = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(field, program.originals[path])

    def walk(node: dict[str, Any]) -> list[torch.Tensor]:
        values: list[torch.Tensor] = [v for v in node.values() if isinstance(v, torch.nn.Parameter)]
        values += [v for v in node.values() if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter)]
        for child in node.values():
            if isinstance(child, dict):
                values += walk(child)
        return values

    return [value.detach() for value in walk(tree)]


def original_weights(program: Program, spec: Build) -> list[torch.Tensor | None]:
    paths = [node.path for node in reversed(_trace_back(spec)) if isinstance(node, Original)]
    ordered = sorted(_state_dict_order(list(dict.fromkeys(paths)), program), key=lambda tensor: tensor.numel(), reverse=True)
    weights: list[torch.Tensor | None] = list(ordered)
    if len(weights) == 1:
        weights.append(None)  # no bias
    return weights


def lookup_key(attr: str) -> str:
    return attr.replace(":", "_").replace("/", "_").replace("|", "_").replace(" ", "").lower()


def original_weights_lookup(program: Program, packed_attrs: list[str]) -> dict[str, list[torch.Tensor | None]]:
    """Attribute key -> original weights, for the packed weights `packed_attrs` in graph order."""
    return {lookup_key(attr): original_weights(program, program.constants[attr]) for attr in packed_attrs}
