"""Translation validation: every change of a lowering checked on its own subgraph.

    validation = fqlower.validate(gm, qconfig_map, node_name_to_scope, example_inputs)
    validation.refuted        # the changes whose produced subgraph computes something else
    lowering = fqlower.lower(gm, qconfig_map, node_name_to_scope, validate=True, example_inputs=inputs)
    lowering.validation       # the same checks, made as it lowers: a refuted rewrite is not applied

fqlower is trusted because it equals torch, and torch is sometimes wrong (on the x86
engine a ConvTranspose2d lowers to a kernel about 2 off a 2.3-range output; a user's
own pass has no oracle at all). So, as Alive2 does for LLVM's peephole rewrites, each
`Change` of the log is checked in isolation: the subgraph it matched, taken from the
program before it, and the subgraph it produced, taken from the program after it, run
on the same inputs (fqlower.validation.fragments), and their outputs must agree within
one output quantization step (fqlower.validation.samples). Inputs are the values the
nodes had when the reference model ran on `example_inputs` (so shapes come from the
model), then fresh draws over each input's whole code range and at its ends. Nodes a
change adds get their values from its produced side, for the changes after it.

A verdict per change, in log order (fqlower.validation.verdicts): `validated`, `refuted`
(with the error, the bound and the inputs that show it, printable as a runnable
reproducer: fqlower.validation.reproducer) or `unchecked` (with the reason). `validate`
changes nothing: the model, the log and the lowering stay as they are. Lowering with
`validate=True` runs the same checks as the passes make their changes
(fqlower.validation.checker) and leaves a refuted pattern as it was, with a `Skip`
that says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.fx

from fqlower.engine.draft import apply
from fqlower.engine.pipeline import Pipeline
from fqlower.ir import from_fx
from fqlower.log import ChangeLog
from fqlower.validation.checker import Validator
from fqlower.validation.samples import DEFAULT_SAMPLES
from fqlower.validation.verdicts import REFUTED, UNCHECKED, VALIDATED, Validation, Verdict, check, reference_values


def validate(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    example_inputs: Sequence[Any] = (),
    *,
    pipeline: Pipeline | None = None,
    log: ChangeLog | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Validation:
    """Lower `model` (with `pipeline`, or take the changes of `log`) and check every change."""
    program = from_fx(model, qconfig_map, node_name_to_scope)
    if log is None:
        from fqlower.pt2e.pipeline import pipeline_for  # the passes import the engine, not this

        log = (pipeline if pipeline is not None else pipeline_for(model)).run_logged(program)[1]
    validator = Validator.of(model, program, example_inputs, samples, seed, pipeline)
    for change in log.changes:
        after = apply(program, change.edits)
        validator.check(change, program, after)
        program = after
    return validator.validation()


__all__ = ["DEFAULT_SAMPLES", "REFUTED", "UNCHECKED", "VALIDATED", "Validation", "Validator", "Verdict", "check", "reference_values", "validate"]
