"""The special-pattern rule "quantized-op": a default functional (F.elu, F.hardswish,
F.layer_norm, ...) between dequantize and quantize becomes its quantized op, called
with the arguments torch would pass it.

    dq(x) -> F.elu(., alpha) -> quantize_per_tensor(., scale, zero_point)
        becomes
    quantized.elu(x, output_scale=scale, output_zero_point=zero_point, alpha=alpha)

`call_problem` says when that call would not mean what the float call meant (torch
makes it anyway, and its lowered model fails); the match is then a Miss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch.ao.quantization.quantization_mappings import DEFAULT_FLOAT_TO_QUANTIZED_OPERATOR_MAPPINGS

from fqlower.ir import FrozenDict, Node, ProgramView, Ref, refs_in
from fqlower.patterns import QOP_KWARGS_TO_DROP
from fqlower.engine.pipeline import Match, Miss
from fqlower.reasons import Code


def match_quantized_op(
    program: ProgramView, anchor: Node, ref: Node, roles: dict[str, str], args: tuple, kwargs: FrozenDict
) -> Match | Miss:
    if len(anchor.args) < 3:
        return Miss(f"%{anchor.name} passes its scale or zero point by keyword: torch reads args[1:3] and fails", Code.TORCH_CRASHES)
    scale, zero_point = anchor.args[1], anchor.args[2]
    if not isinstance(zero_point, Ref):
        return Miss(
            f"the zero point of %{anchor.name} is {zero_point!r}, not a node: torch would fail inserting after it",
            Code.TORCH_CRASHES,
        )
    qop = DEFAULT_FLOAT_TO_QUANTIZED_OPERATOR_MAPPINGS[ref.target]
    for key in QOP_KWARGS_TO_DROP.get(qop, ()):
        kwargs = kwargs.remove(key)
    kwargs = kwargs.set("output_scale", scale).set("output_zero_point", zero_point)
    problem = call_problem(qop, ref.target, args, kwargs)
    if problem is not None:
        return Miss(f"torch would call {problem}; the lowered %{ref.name} would fail", Code.TORCH_MODEL_CRASHES)
    limit = program.position(zero_point.name)
    late = [r.name for r in refs_in((args, kwargs)) if program.position(r.name) > limit]
    if late:
        return Miss(
            f"%{late[0]} comes after the zero point %{zero_point.name}, after which torch inserts "
            "the quantized op: its graph fails lint",
            Code.TORCH_CRASHES,
        )
    if isinstance(scale, Ref):
        roles.update(scale=scale.name)
    roles.update(zero_point=zero_point.name)
    anchor_at = program.position(anchor.name)
    in_place = not any(limit < at < anchor_at for at in program.graph.positions.values())
    facts = {"qop": qop, "args": args, "kwargs": kwargs, "in_place": in_place}
    return Match(anchor.name, FrozenDict(roles), FrozenDict(facts))


def call_problem(qop: Any, function: Callable, args: tuple, kwargs: FrozenDict) -> str | None:
    """Why `qop(*args, **kwargs)` does not call `qop` with the arguments `function`
    got (a missing, doubled or unknown argument, or a positional argument that
    means something else there); None when it does."""
    name = qop._qualified_op_name
    schema = qop.default._schema
    params = [arg for arg in schema.arguments if not arg.kwarg_only]
    if len(args) > len(params):
        return f"{name} with {len(args)} positional arguments; it takes {len(params)}"
    try:
        meant = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        meant = []
    for index in range(1, min(len(args), len(meant))):
        if meant[index] != params[index].name:
            return f"{name} with {function.__name__}'s {meant[index]!r} as its {params[index].name!r}"
    given = {param.name for param in params[: len(args)]}
    known = {arg.name for arg in schema.arguments}
    for key in kwargs:
        if key not in known:
            return f"{name} with an argument {key!r} it does not have"
        if key in given:
            return f"{name} with {key!r} both by position and by keyword"
    supplied = given | set(kwargs)
    missing = [arg.name for arg in schema.arguments if arg.name not in supplied and not arg.has_default_value()]
    if missing:
        return f"{name} without {missing[0]!r}"
    return None
