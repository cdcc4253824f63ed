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

import torch
import torch.fx

from fqlower.engine.pipeline import Pipeline
from fqlower.errors import UnsupportedInput
from fqlower.pt2e.patterns import is_pt2e
from fqlower.pt2e.pipeline import pipeline_for, pt2e_pipeline

if TYPE_CHECKING:
    from fqlower.api import Lowering


# what an FX graph mode reference model quantizes with (a PT2E graph uses quantized_decomposed ops)
FX_QUANTIZERS = frozenset({torch.quantize_per_tensor, torch.quantize_per_tensor_dynamic, torch.quantize_per_channel})


def lower_pt2e(
    model: torch.fx.GraphModule,
    example_inputs: Sequence[Any] | None = None,
    *,
    pipeline: Pipeline | None = None,
    validate: bool = False,
) -> Lowering:
    """Lower what `convert_pt2e` returned. `model` is read, never changed; it is not
    re-exported, so `example_inputs` are needed only to validate (`validate=True`). A
    graph the quantizer left float lowers to itself; an FX graph mode reference model is
    refused (UnsupportedInput naming its first quantize)."""
    from fqlower.api import lower

    if not isinstance(model, torch.fx.GraphModule):
        raise UnsupportedInput(f"lower_pt2e expects the GraphModule convert_pt2e returns, got {type(model).__name__}")
    fx_quantizer = next((node for node in model.graph.nodes if node.op == "call_function" and node.target in FX_QUANTIZERS), None)
    if fx_quantizer is not None:
        raise UnsupportedInput(
            f"not a PT2E reference graph: %{fx_quantizer.name} calls {fx_quantizer.target.__name__}, as an FX graph mode "
            "reference model does (lower_pt2e takes what torchao's convert_pt2e returns; FX graph mode models go to fqlower.lower)",
            node=fx_quantizer.name,
        )
    return lower(model, pipeline=pipeline if pipeline is not None else pt2e_pipeline(), validate=validate, example_inputs=example_inputs)


__all__ = ["is_pt2e", "lower_pt2e", "pipeline_for", "pt2e_pipeline"]
