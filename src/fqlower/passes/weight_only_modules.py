"""Weight-only quantized modules.

    indices ─▶ ref.Embedding / ref.EmbeddingBag
        becomes
    indices ─▶ quantized Embedding / EmbeddingBag

Only the module changes; the graph stays as it is.

An EmbeddingBag that reduces with 'mean' or 'max' stays a reference module, with a
recorded skip: torch 2.13's quantized EmbeddingBag always calls its kernel with mode 0
(sum), whatever `mode` says, so torch's lowered model sums where the model averages.
"""

from __future__ import annotations

from fqlower.engine.edits import Edit, SetModule
from fqlower.ir import Node, ProgramView
from fqlower.passes.common import bindings, from_reference, is_call_module, module_of, source_of_module
from fqlower.patterns import WEIGHT_ONLY_MODULES
from fqlower.passes.kernel_bugs import embedding_bag_problem
from fqlower.engine.pipeline import Match, Miss, rule_pass


def match(program: ProgramView, reference: Node) -> Match | Miss | None:
    module = module_of(program, reference)
    if reference.op != "call_module" or type(module) not in WEIGHT_ONLY_MODULES:
        return None
    wrong_kernel = embedding_bag_problem(reference, module)
    if wrong_kernel is not None:
        return wrong_kernel
    return Match(reference.name, bindings(reference=reference.name))


def rewrite(program: ProgramView, found: Match) -> list[Edit]:
    reference = program.node(found.anchor)
    quantized = WEIGHT_ONLY_MODULES[type(module_of(program, reference))]
    return [SetModule(reference.target, from_reference(quantized, source_of_module(program, reference.target)))]


LOWER_WEIGHT_ONLY_MODULES = rule_pass("lower-weight-only-modules", match, rewrite, is_call_module)
