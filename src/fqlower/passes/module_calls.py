"""Module swaps at every call: a static weighted module called from several places.

    %a = fc(%dequantize)   ─▶ quantize(·, s_a, z_a)         %a = fc_1(%x)    quantized Linear(s_a, z_a)
    %b = fc(%dequantize_1) ─▶ quantize(·, s_b, z_b)   ─▶    %b = fc(%a)      quantized Linear(s_b, z_b)

A static quantized module carries one call's output scale and zero point. torch 2.13
swaps the module once per call, each time at the module's own path and each time from
the reference module, so the last swap wins and every call computes with the last
call's qparams. `ModuleSwapPass` plans every call of such a module before it rewrites any:

- every call lowers, with equal output qparams: they share the module at its path, as
  torch's lowering gives them (the same graph and state_dict); the last call swaps it;
- every call lowers, with different qparams: the last call keeps the path (where torch
  leaves the module it swapped last), and each earlier one calls a module of its own
  at a fresh path beside it (`fc_1`, `fc_2`, ...), built from the same reference module
  with its call's qparams (a departure: `torch-wrong-result`; the state_dict gains
  those modules);
- some calls stay float: each call that lowers gets a module at a fresh path, and the
  reference module stays at its path for the others (torch would hand those a
  quantized module and the model would fail at run time: `torch-model-crashes`).

Until the last call's rewrite the module at the path stays the reference module, so
every call's match reads it. The modules share one packed weight: the last call that lowers packs it, and each other
call's module is that module with its own qparams (`with_output_qparams`, which the
emitter builds from the same spec, so the packed weight is one object). Dynamic and
weight-only modules take what their reference modules take, so their passes share them
as torch does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from fqlower.engine.edits import Edit, SetModule, SetTarget
from fqlower.engine.pipeline import Candidate, Match, Matcher, Miss, PassResult, Rewriter, rule_pass
from fqlower.ir import Build, Node, Program, ProgramView
from fqlower.log.vocabulary import SHARED_WEIGHT_FACTORY
from fqlower.passes.common import constant_of, same_value, source_of_constant
from fqlower.reasons import Code

MODULE_PATH = "module_path"  # Match facts: where a call's quantized module goes,
SWAPS = "swaps_module"  # whether this call's rewrite puts it there,
SHARES_WITH = "shares_weight_with"  # and the (scale, zero point) of the call whose packed weight it shares


@attrs.frozen
class Placement:
    """Where the quantized module of one call goes, and how that relates to torch."""

    path: str
    swaps: bool = True  # False: a later call that shares the path swaps it
    code: Code = Code.AS_TORCH
    reason: str = ""
    shares_with: tuple[Any, Any] | None = None  # the sources of the anchor call's output qparams


def module_call_sites(program: ProgramView) -> dict[str, tuple[str, ...]]:
    """module path -> the call_module nodes that call it, in graph order."""
    sites: dict[str, list[str]] = {}
    nodes = program.graph.nodes
    for name in program.graph.order:
        node = nodes[name]
        if node.op == "call_module":
            sites.setdefault(node.target, []).append(name)
    return {path: tuple(names) for path, names in sites.items()}


def plan_placements(program: ProgramView, match: Matcher, candidate: Candidate | None) -> dict[str, Placement]:
    """call node -> Placement, for every call that lowers of a module called more than once."""
    shared = {path: calls for path, calls in module_call_sites(program).items() if len(calls) > 1}
    if not shared:
        return {}
    wanted = {call for calls in shared.values() for call in calls}
    lowering: dict[str, Match] = {}
    for node in program.nodes():
        if candidate is not None and not candidate(node):
            continue
        outcome = match(program, node)
        if isinstance(outcome, Match) and outcome.bindings.get("reference") in wanted:
            lowering[outcome.bindings["reference"]] = outcome
    placements: dict[str, Placement] = {}
    taken: set[str] = set()
    for path, calls in shared.items():
        lowered = [call for call in calls if call in lowering]
        if not lowered:
            continue
        if len(lowered) == len(calls) and _same_qparams(program, [lowering[call] for call in calls]):
            placements.update((call, Placement(path, swaps=call == calls[-1])) for call in calls)
            continue
        every_call = len(lowered) == len(calls)
        paths = {call: path if every_call and call == calls[-1] else _fresh_path(program, path, taken) for call in lowered}
        listed = ", ".join(f"%{call} -> {paths[call]!r}" for call in lowered)
        if every_call:
            code = Code.TORCH_WRONG_RESULT
            reason = (
                f"module {path!r} is called by {', '.join('%' + call for call in calls)} with different output qparams: "
                f"each call gets a quantized module of its own ({listed}); torch would give every call those of the last"
            )
        else:
            code = Code.TORCH_MODEL_CRASHES
            floats = ", ".join("%" + call for call in calls if call not in lowering)
            reason = (
                f"module {path!r} is also called by {floats}, which stays float: the calls that lower get quantized "
                f"modules of their own ({listed}); torch would swap {path!r} itself and hand the float calls a quantized module"
            )
        anchor = lowering[lowered[-1]].bindings  # the last call that lowers packs the weight
        qparams = tuple(source_of_constant(program, program.node(anchor[role]).target) for role in ("scale", "zero_point"))
        placements.update(
            (call, Placement(paths[call], True, code, reason, None if call == lowered[-1] else (qparams[0], qparams[1])))
            for call in lowered
        )
    return placements


def _same_qparams(program: ProgramView, matches: list[Match]) -> bool:
    """True when every match's output scale and zero point hold equal values."""
    values = [tuple(constant_of(program, found.bindings[role]) for role in ("scale", "zero_point")) for found in matches]
    return all(None not in value and all(map(same_value, value, values[0])) for value in values[1:])


def _fresh_path(program: ProgramView, path: str, taken: set[str]) -> str:
    """`path_1`, `path_2`, ...: the first that names no module, constant or parent of one."""
    occupied = {*program.modules.keys(), *program.constants.keys()}
    suffix = 1
    while True:
        candidate = f"{path}_{suffix}"
        if candidate not in occupied and candidate not in taken and not any(key.startswith(candidate + ".") for key in occupied):
            taken.add(candidate)
            return candidate
        suffix += 1


def _placed(match: Matcher, placements: Mapping[str, Placement], program: ProgramView, node: Node) -> Match | Miss | None:
    outcome = match(program, node)
    if not isinstance(outcome, Match):
        return outcome
    placement = placements.get(outcome.bindings["reference"])
    if placement is None:
        return outcome
    facts = outcome.facts.set(MODULE_PATH, placement.path).set(SWAPS, placement.swaps)
    found = attrs.evolve(outcome, facts=facts if placement.shares_with is None else facts.set(SHARES_WITH, placement.shares_with))
    if outcome.code is Code.AS_TORCH and placement.code is not Code.AS_TORCH:
        found = attrs.evolve(found, code=placement.code, reason=placement.reason)
    return found


def swap_module(found: Match, reference: Node, spec: object) -> list[Edit]:
    """Put `spec` where the plan placed this call's module (unless a later call swaps
    it there); a call given a fresh path is pointed at it."""
    path = found.facts.get(MODULE_PATH, reference.target)
    shares_with = found.facts.get(SHARES_WITH)
    if shares_with is not None and isinstance(spec, Build) and len(spec.args) == 3:
        # the anchor call's module, equal to its own spec, with this call's qparams
        anchor = Build(spec.factory, (spec.args[0], *shares_with), spec.kwargs)
        spec = Build(SHARED_WEIGHT_FACTORY, (anchor, spec.args[1], spec.args[2]))
    edits: list[Edit] = [SetModule(path, spec)] if found.facts.get(SWAPS, True) else []
    if path != reference.target:
        edits.append(SetTarget(reference.name, "call_module", path))
    return edits


@attrs.frozen
class ModuleSwapPass:
    """A one-rule pass whose rule swaps the module its `reference` binding calls, at
    every call of that module (see the module docstring); rewrites use `swap_module`."""

    name: str
    match: Matcher
    rewrite: Rewriter
    candidate: Candidate | None = None

    def run(self, program: Program) -> PassResult:
        placed = functools.partial(_placed, self.match, plan_placements(program, self.match, self.candidate))
        return rule_pass(self.name, placed, self.rewrite, self.candidate).run(program)
