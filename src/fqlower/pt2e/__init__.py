"""The PT2E front end: torchao's `convert_pt2e` output lowered to onednn int8 kernels.

    converted = convert_pt2e(prepare_pt2e(torch.export.export(model, x).module(), X86InductorQuantizer()))
    lowering = fqlower.lower_pt2e(converted)            # a Lowering, as fqlower.lower returns
    lowering.module(*x)                                 # onednn qconv/qlinear pointwise kernels

The same IR, engine, change log, replay, explain, diff and validate as the FX front end;
only the passes differ (`pt2e_pipeline`). fqlower never imports torchao: torch core
registers the quantized_decomposed and onednn ops these graphs and kernels use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.fx

from fqlower.api import Lowering, lower
from fqlower.engine.pipeline import Pipeline
from fqlower.errors import UnsupportedInput
from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE
from fqlower.passes.fold_weights import FOLD_WEIGHTS
from fqlower.pt2e.patterns import is_pt2e
from fqlower.pt2e.weighted import LOWER_PT2E_WEIGHTED


def pt2e_pipeline() -> Pipeline:
    """The PT2E passes, in order."""
    return Pipeline("lower-pt2e-to-onednn", (LOWER_PT2E_WEIGHTED, ELIMINATE_DEAD_CODE, FOLD_WEIGHTS, ELIMINATE_DEAD_CODE))


def pipeline_for(model: torch.fx.GraphModule) -> Pipeline:
    """The passes for `model`: the PT2E ones for what convert_pt2e returns, else torch's."""
    from fqlower.passes import default_pipeline

    return pt2e_pipeline() if is_pt2e(model) else default_pipeline()


def lower_pt2e(
    model: torch.fx.GraphModule,
    example_inputs: Sequence[Any] | None = None,
    *,
    pipeline: Pipeline | None = None,
    validate: bool = False,
) -> Lowering:
    """Lower what `convert_pt2e` returned. `model` is read, never changed; it is not
    re-exported, so `example_inputs` are needed only to validate (`validate=True`)."""
    if not isinstance(model, torch.fx.GraphModule):
        raise UnsupportedInput(f"lower_pt2e expects the GraphModule convert_pt2e returns, got {type(model).__name__}")
    if not is_pt2e(model):
        raise UnsupportedInput(
            "not a PT2E reference graph: it calls no quantized_decomposed quantize/dequantize op "
            "(lower_pt2e takes what torchao's convert_pt2e returns; FX graph mode models go to fqlower.lower)"
        )
    return lower(model, pipeline=pipeline if pipeline is not None else pt2e_pipeline(), validate=validate, example_inputs=example_inputs)


__all__ = ["is_pt2e", "lower_pt2e", "pipeline_for", "pt2e_pipeline"]
