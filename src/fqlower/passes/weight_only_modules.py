"""Weight-only quantized modules.

    indices ─▶ ref.Embedding / ref.EmbeddingBag
        becomes
    indices ─▶ quantized Embedding / EmbeddingBag

Only the module changes; the graph stays as it is.
"""

from __future__ import annotations

from fqlower.edits import Edit, SetModule
from fqlower.ir import Node, Program
from fqlower.passes.common import bindings, from_reference, is_call_module, module_of, source_of_module
from fqlower.patterns import WEIGHT_ONLY_MODULES
from fqlower.pipeline import Match, rule_pass


def match(program: Program, reference: Node) -> Match | None:
    if reference.op != "call_module" or type(module_of(program, reference)) not in WEIGHT_ONLY_MODULES:
        return None
    return Match(reference.name, bindings(reference=reference.name))


def rewrite(program: Program, found: Match) -> list[Edit]:
    reference = program.node(found.anchor)
    quantized = WEIGHT_ONLY_MODULES[type(module_of(program, reference))]
    return [SetModule(reference.target, from_reference(quantized, source_of_module(program, reference.target)))]


LOWER_WEIGHT_ONLY_MODULES = rule_pass("lower-weight-only-modules", match, rewrite, is_call_module)
