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
from typing import TYPE_CHECKING, Any

import torch.fx

from fqlower.engine.pipeline import Pipeline
from fqlower.errors import UnsupportedInput
from fqlower.pt2e.patterns import is_pt2e
from fqlower.pt2e.pipeline import pipeline_for, pt2e_pipeline

if TYPE_CHECKING:
    from fqlower.api import Lowering


def lower_pt2e(
    model: torch.fx.GraphModule,
    example_inputs: Sequence[Any] | None = None,
    *,
    pipeline: Pipeline | None = None,
    validate: bool = False,
) -> Lowering:
    """Lower what `convert_pt2e` returned. `model` is read, never changed; it is not
    re-exported, so `example_inputs` are needed only to validate (`validate=True`)."""
    from fqlower.api import lower

    if not isinstance(model, torch.fx.GraphModule):
        raise UnsupportedInput(f"lower_pt2e expects the GraphModule convert_pt2e returns, got {type(model).__name__}")
    if not is_pt2e(model):
        raise UnsupportedInput(
            "not a PT2E reference graph: it calls no quantized_decomposed quantize/dequantize op "
            "(lower_pt2e takes what torchao's convert_pt2e returns; FX graph mode models go to fqlower.lower)"
        )
    return lower(model, pipeline=pipeline if pipeline is not None else pt2e_pipeline(), validate=validate, example_inputs=example_inputs)


__all__ = ["is_pt2e", "lower_pt2e", "pipeline_for", "pt2e_pipeline"]
