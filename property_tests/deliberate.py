"""Where fqlower's lowering differs from torch's on purpose (shared by the laws and the fuzzer).

Skips that record where torch 2.13 fails or computes something else (README, "Where
fqlower does better than torch 2.13", and the pass docstrings) all say what torch would
do, except "also used outside the quantized pattern".
"""

from __future__ import annotations

import re

import torch.fx

import fqlower
from fqlower.explain import native_kind

_DELIBERATE = re.compile(r"torch|also used outside the quantized pattern")


def quantized_calls(gm: torch.fx.GraphModule) -> int:
    """How many nodes run natively (a quantized op or a non-reference quantized module)."""
    program = fqlower.from_fx(gm)
    return sum(native_kind(program, node) is not None for node in program.nodes())


def deliberate_differences(lowering: fqlower.Lowering, theirs: torch.fx.GraphModule | None = None) -> list[str]:
    """The places where fqlower's result differs from torch's on purpose: a skip that
    says why, a relu kept, or more native quantized calls than torch's result has (torch
    leaves ops float that it misreads, e.g. a weight quantize with keyword arguments)."""
    found = [f"skip {skip.rule} at {skip.node!r}: {skip.reason}" for skip in lowering.log.skips if _DELIBERATE.search(skip.reason)]
    if theirs is not None and quantized_calls(lowering.module) > quantized_calls(theirs):
        found.append(f"fqlower lowers {quantized_calls(lowering.module)} calls to native ops, torch {quantized_calls(theirs)}")
    for change in lowering.log.changes:
        relu = change.bindings.get("relu")
        if relu is not None and relu in lowering.program:
            found.append(f"relu {relu!r} kept after {change.anchor!r} ({change.pass_name})")
    return found
