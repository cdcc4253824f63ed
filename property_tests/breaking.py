"""Reference models on which torch's lowering fails: the examples law 2 is about.

`breaking_examples()` draws a generated example (`models.examples`) and rewrites one node
of its reference graph in a way that keeps what the model computes but that torch 2.13's
lowering cannot read (docs/torch_failures.md):

    quantize input by keyword    quantize_per_tensor(input=x, ...)          torch: IndexError
    weight quantize by keyword   quantize_per_channel(input=w, scales=...)  torch: IndexError
    functional by keyword        F.linear(input=x, weight=w, bias=b)        torch: AssertionError
    conv defaults                F.conv2d(x, w, b) for stride 1, padding 0  torch: prepack misses 'stride'
    binary op by keyword         torch.add(input=a, other=b)                torch: AssertionError
    scope entry removed          no node_name_to_scope entry for F.linear   torch: KeyError

The drawn break prints as one line after the example, so a failure is a reproducer.
Whether torch's lowering really fails on the result is for the law to find out (and to
record with `hypothesis.event`): a break that torch reads after all is no example of law 2.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import torch
import torch.fx
from hypothesis import strategies as st
from models import Example, examples

from fqlower.patterns import CONV_DIMS, FUNCTIONAL_SIGNATURES
from fqlower.reference import ReferenceModel

PARAMETERS: dict[Any, tuple[str, ...]] = {
    torch.quantize_per_tensor: ("input", "scale", "zero_point", "dtype"),
    torch.quantize_per_channel: ("input", "scales", "zero_points", "axis", "dtype"),
    torch.add: ("input", "other"),
    torch.mul: ("input", "other"),
    **{function: tuple(name for name, _ in signature) for function, signature in FUNCTIONAL_SIGNATURES.items()},
}
CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0}


@attrs.frozen
class Break:
    kind: str
    node: str

    def __repr__(self) -> str:
        return f"break: {self.kind} at %{self.node}"


def _all_ones_or_zeros(value: Any, default: int) -> bool:
    items = value if isinstance(value, (tuple, list)) else (value,)
    return all(type(item) is int and item == default for item in items)


def _sites(gm: torch.fx.GraphModule, scope: dict[str, Any]) -> list[Break]:
    sites = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or not node.args:
            continue
        if node.target is torch.quantize_per_tensor:
            sites.append(Break("quantize input by keyword", node.name))
        elif node.target is torch.quantize_per_channel:
            sites.append(Break("weight quantize by keyword", node.name))
        elif node.target in (torch.add, torch.mul) and len(node.args) == 2 and not node.kwargs:
            sites.append(Break("binary op by keyword", node.name))
        elif node.target in FUNCTIONAL_SIGNATURES:
            sites.append(Break("functional by keyword", node.name))
            if node.target in CONV_DIMS and _defaults_only(node):
                sites.append(Break("conv defaults", node.name))
            if node.name in scope:
                sites.append(Break("scope entry removed", node.name))
    return sites


def _bound(node: torch.fx.Node) -> dict[str, Any]:
    names = PARAMETERS[node.target]
    return {**dict(zip(names, node.args)), **node.kwargs}


def _defaults_only(node: torch.fx.Node) -> bool:
    bound = _bound(node)
    return all(_all_ones_or_zeros(bound[name], default) for name, default in CONV_DEFAULTS.items() if name in bound)


def apply_break(reference: ReferenceModel, site: Break) -> ReferenceModel:
    """A copy of `reference` with `site` applied (the original is untouched)."""
    gm, qconfig_map, scope = copy.deepcopy((reference.module, dict(reference.qconfig_map), dict(reference.node_name_to_scope)))
    node = next(n for n in gm.graph.nodes if n.name == site.node)
    if site.kind == "scope entry removed":
        del scope[site.node]
    elif site.kind == "conv defaults":
        bound = _bound(node)
        node.args, node.kwargs = (bound["input"], bound["weight"], bound.get("bias")), {}
    else:
        node.args, node.kwargs = (), _bound(node)
    gm.recompile()
    return ReferenceModel(gm, qconfig_map, scope, reference.example_inputs)


def explicit_form(reference: ReferenceModel) -> ReferenceModel:
    """A copy of `reference` whose functional convs pass every argument positionally, the
    geometric ones as tuples (`F.conv_transpose2d(x, w, b, (1, 1), (0, 0), (0, 0), 1, (1, 1))`):
    the one form torch 2.13's lowering packs. Same computation; an oracle for models
    whose convs torch cannot read in their written form (ints, defaults)."""
    gm, qconfig_map, scope = copy.deepcopy((reference.module, dict(reference.qconfig_map), dict(reference.node_name_to_scope)))
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in CONV_DIMS:
            continue
        bound, dims = {**CONV_DEFAULTS, "bias": None, **_bound(node)}, CONV_DIMS[node.target]
        node.args = tuple(
            bound[name] if name in ("input", "weight", "bias", "groups") else _as_tuple(bound[name], dims)
            for name in PARAMETERS[node.target]
        )
        node.kwargs = {}
    gm.recompile()
    return ReferenceModel(gm, qconfig_map, scope, reference.example_inputs)


def _as_tuple(value: Any, dims: int) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


@attrs.frozen(repr=False, eq=False)
class BrokenExample:
    """A generated example whose reference model carries one break."""

    example: Example
    site: Break
    reference: ReferenceModel

    @property
    def recipe(self) -> Any:
        return self.example.recipe

    @property
    def inputs_for_checking(self) -> tuple[torch.Tensor, ...]:
        return self.example.inputs_for_checking

    def __repr__(self) -> str:
        return f"{self.example!r}\n# then, on reference.module:\n# {self.site!r}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        for index, line in enumerate(repr(self).splitlines()):
            if index:
                printer.break_()
            printer.text(line)


@st.composite
def breaking_examples(draw: Any) -> BrokenExample:
    """A generated example with one break (see the module docstring); examples without a
    site to break are redrawn by hypothesis (every static example has a quantize)."""
    example = draw(examples())
    sites = _sites(example.reference.module, dict(example.reference.node_name_to_scope))
    # the breaks torch is surest to fail on come first, so shrinking keeps them
    order = ("functional by keyword", "conv defaults", "binary op by keyword", "scope entry removed", "weight quantize by keyword", "quantize input by keyword")
    sites.sort(key=lambda site: order.index(site.kind))
    if not sites:
        return draw(st.nothing())
    site = draw(st.sampled_from(sites))
    return BrokenExample(example, site, apply_break(example.reference, site))


__all__ = ["Break", "BrokenExample", "apply_break", "breaking_examples", "explicit_form"]
