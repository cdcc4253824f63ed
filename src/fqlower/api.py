"""The entry points: `lower`, and `lower_to_native_backend`, a drop-in for torch's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.changelog import ChangeLog
from fqlower.emit import to_fx
from fqlower.ir import Program, from_fx
from fqlower.original_weights import ORIGINAL_WEIGHTS_LOOKUP, original_weights_lookup
from fqlower.pipeline import Pipeline, Timing


@attrs.frozen
class Lowering:
    """What `lower` made: the module, the program it was emitted from, the log, and
    seconds per pass."""

    module: torch.fx.GraphModule
    program: Program
    log: ChangeLog
    timings: tuple[tuple[str, float], ...]


def lower(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    *,
    keep_original_weights: bool = False,
    pipeline: Pipeline | None = None,
) -> Lowering:
    """Lower a quantized reference model. `model` is read, never changed."""
    from fqlower.passes import default_pipeline

    pipeline = pipeline if pipeline is not None else default_pipeline()
    program = from_fx(model, qconfig_map, node_name_to_scope)
    timing = Timing()
    result, log = pipeline.run_logged(program, (timing,))
    module = to_fx(result.program)
    if keep_original_weights:
        packed = [change.edits[0].attr for change in log.changes if change.pass_name == "fold-weights"]
        setattr(module, ORIGINAL_WEIGHTS_LOOKUP, original_weights_lookup(result.program, packed))
    return Lowering(module, result.program, log, tuple(timing.seconds))


def lower_to_native_backend(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any],
    node_name_to_scope: Mapping[str, tuple[str, type]],
    keep_original_weights: bool = False,
) -> torch.fx.GraphModule:
    """Same signature and result as torch's `_lower_to_native_backend`; leaves `model` as it was."""
    return lower(model, qconfig_map, node_name_to_scope, keep_original_weights=keep_original_weights).module
