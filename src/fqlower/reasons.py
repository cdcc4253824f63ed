"""Reason codes: how a rule's outcome at a node relates to torch 2.13's lowering.

Every `Skip` (a rule left a node as it was) and every `Change` (a rule rewrote it)
carries one code besides its text, so that tools and tests can tell, as data, where
fqlower departs from torch on purpose:

    as-torch             torch's lowering does the same here: it leaves the node too,
                         or rewrites it the same way (the default)
    kernel-missing       no native kernel fits (dtype pair, fused op); torch leaves the
                         node too, or prints and leaves it
    torch-crashes        torch's lowering raises on this input
    torch-model-crashes  torch returns a model that raises when it runs
    torch-wrong-result   torch returns a model that runs and computes something else

Only the three `torch-*` codes are departures (`DEPARTURES`): there, and only there,
fqlower's result may differ from torch's.
"""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    AS_TORCH = "as-torch"
    KERNEL_MISSING = "kernel-missing"
    TORCH_CRASHES = "torch-crashes"
    TORCH_MODEL_CRASHES = "torch-model-crashes"
    TORCH_WRONG_RESULT = "torch-wrong-result"


DEPARTURES = frozenset({Code.TORCH_CRASHES, Code.TORCH_MODEL_CRASHES, Code.TORCH_WRONG_RESULT})


def is_departure(code: str) -> bool:
    """True when `code` says that torch's lowering fails or computes something else here."""
    return code in DEPARTURES
