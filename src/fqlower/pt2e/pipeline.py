"""The PT2E passes as a pipeline, and which pipeline a model gets."""

from __future__ import annotations

import torch.fx

from fqlower.engine.pipeline import Pipeline
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
