"""Weight-only quantized modules.

    indices ─▶ ref.Embedding / ref.EmbeddingBag
        becomes
    indices ─▶ quantized Embedding / EmbeddingBag

Only the module changes; the graph stays as it is.

A module with an option the quantized one ignores stays a reference module, with a
recorded skip (fqlower.passes.module_options): an EmbeddingBag that reduces with 'mean'
or 'max' (torch 2.13's quantized EmbeddingBag always sums), max_norm, a non-zero
padding row of a bag, a 4-bit weight of odd width, indices passed as input=.
"""

from __future__ import annotations

from fqlower.engine.edits import Edit, SetModule
from fqlower.ir import Node, ProgramView
from fqlower.passes.common import bindings, from_reference, is_call_module, module_of, source_of_module
from fqlower.patterns import WEIGHT_ONLY_MODULES
from fqlower.passes.module_options import option_problem
from fqlower.engine.pipeline import Match, Miss, rule_pass


def match(program: ProgramView, reference: Node) -> Match | Miss | None:
    module = module_of(program, reference)
    if reference.op != "call_module" or type(module) not in WEIGHT_ONLY_MODULES:
        return None
    unhonoured = option_problem(reference, module)
    if unhonoured is not None:
        return unhonoured
    return Match(reference.name, bindings(reference=reference.name))


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    reference = program.node(found.anchor)
    quantized = WEIGHT_ONLY_MODULES[type(module_of(program, reference))]
    return [SetModule(reference.target, from_reference(quantized, source_of_module(program, reference.target)))]


LOWER_WEIGHT_ONLY_MODULES = rule_pass("lower-weight-only-modules", match, rewrite, is_call_module)
