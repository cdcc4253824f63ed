"""Cautions: what a right lowering cannot fix, written into the log for the user.

`recipe-engine`. fbgemm's and x86's quantized linear and conv kernels multiply 8-bit
activations with 8-bit weights in pairs summed into 16 bits, which can saturate; their
qconfigs keep activations to 7 bits (`reduce_range=True`) so that it never does. A
model calibrated with a recipe that uses the full 8 bits (qnnpack's and onednn's
qconfigs: `reduce_range=False`) and lowered while the quantized engine is fbgemm or x86
gets kernels that can compute wrong values (a linear was measured 1.96 off on its
output). The lowering is still torch's (torch is silent about it); the log gets one
`Caution` naming the ops and the recipe:

    caution [recipe-engine] %fc1, %conv: calibrated with activations of the full 8 bits
    (reduce_range=False, as qnnpack's and onednn's qconfigs do) and lowered for the x86
    engine, whose kernels can saturate on them ...
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from fqlower.ir import ProgramView
from fqlower.log import Caution, Change

RECIPE_ENGINE = "recipe-engine"
# the passes whose rewrites run fbgemm/x86 linear and conv kernels on quint8 activations
STATIC_WEIGHTED_PASSES = frozenset({"lower-static-modules", "lower-two-input-modules", "lower-static-functionals"})
SATURATING_ENGINES = frozenset({"fbgemm", "x86"})


def recipe_engine_cautions(program: ProgramView, changes: Iterable[Change], engine: str) -> tuple[Caution, ...]:
    """One caution naming every static linear/conv that `changes` lowered in `program`
    (the input program: its qconfig map) whose activations were observed with the full
    8 bits, when `engine` is one whose kernels can saturate on them; else none."""
    if engine not in SATURATING_ENGINES:
        return ()
    nodes = []
    observers = ActivationObservers()
    for change in changes:
        if change.pass_name not in STATIC_WEIGHTED_PASSES:
            continue
        op = change.bindings.get("reference") or change.bindings.get("function")
        observer = observers.of(program.qconfig.get(op)) if op is not None else None
        if getattr(observer, "dtype", None) == torch.quint8 and getattr(observer, "reduce_range", True) is False:
            nodes.append(op)
    if not nodes:
        return ()
    message = (
        f"{', '.join('%' + node for node in nodes)}: calibrated with activations of the full 8 bits "
        f"(reduce_range=False, as qnnpack's and onednn's qconfigs do) and lowered for the {engine} engine, "
        "whose linear and conv kernels can saturate on such activations and compute wrong values "
        f"(torch's lowering does the same, silently). Calibrate with get_default_qconfig_mapping({engine!r}), "
        "or run the model with torch.backends.quantized.engine = 'qnnpack'"
    )
    return (Caution(RECIPE_ENGINE, tuple(nodes), message),)


class ActivationObservers:
    """The activation observer a qconfig makes, built once per constructor: convert_fx
    copies a qconfig's wrapper per node but shares the partial inside it, and building
    an observer per op cost the 3k-node bench model 51 ms. None for no qconfig, or a
    constructor that cannot be called."""

    def __init__(self) -> None:
        self.built: dict[int, Any] = {}

    def of(self, qconfig: Any) -> Any:
        make = getattr(qconfig, "activation", None)
        if make is None:
            return None
        key = id(getattr(make, "p", make))  # the partial stays alive in the qconfig map
        if key not in self.built:
            try:
                with warnings.catch_warnings():  # torch warns that reduce_range is deprecated
                    warnings.simplefilter("ignore")
                    self.built[key] = make()
            except Exception:  # not an observer constructor we can read: say nothing
                self.built[key] = None
        return self.built[key]
