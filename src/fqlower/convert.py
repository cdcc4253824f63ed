"""`convert_fx`: torch's `convert_fx`, with fqlower doing the lowering.

torch's ``torch.ao.quantization.quantize_fx.convert_fx`` converts a prepared,
calibrated model to a reference model, lowers it with ``lower_to_fbgemm`` (a
module global of ``torch.ao.quantization.fx.convert``), then finishes: removes
qconfig attributes, deletes unused submodules, pops the observed-module meta, and
re-attaches the user's preserved attributes.

`convert_fx` here runs that same torch code on a deep copy of the caller's model
(torch converts its input in place), with ``lower_to_fbgemm`` answered by
`fqlower.lower` for the duration of the call. So everything before and after the
lowering is torch's own code, not a re-implementation that could drift.

`lowering_hook` is the interception: while a thread is inside it, that thread's
calls to ``lower_to_fbgemm`` go to the given function; other threads' calls go to
torch's. Entries are serialised by a lock and the module global is always restored.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch.fx

from fqlower.errors import FqlowerError, UnsupportedInput

__all__ = ["convert_fx", "lowering_hook"]

# ``torch.ao.quantization.fx.convert`` as an attribute is the function ``convert``
# (re-exported by the package), which shadows the submodule.
_CONVERT_MODULE: Any = importlib.import_module("torch.ao.quantization.fx.convert")  # lower_to_fbgemm is set on it

Lowerer = Callable[[torch.fx.GraphModule, Mapping[str, Any], Mapping[str, tuple[str, type]], bool], torch.fx.GraphModule]

_LOCK = threading.RLock()
_local = threading.local()
_replaced: list[Any] = []  # the lower_to_fbgemm that was there while the hook is installed
_TORCH_LOWER_TO_FBGEMM = _CONVERT_MODULE.lower_to_fbgemm


def _dispatch(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any],
    node_name_to_scope: Mapping[str, tuple[str, type]],
    keep_original_weights: bool = False,
) -> torch.fx.GraphModule:
    """Installed as ``lower_to_fbgemm``: this thread's hook if it has one, else torch's."""
    lowerers = getattr(_local, "lowerers", None)
    if lowerers:
        return lowerers[-1](model, qconfig_map, node_name_to_scope, keep_original_weights)
    replaced = _replaced[:1] or [_TORCH_LOWER_TO_FBGEMM]  # the hook may be leaving right now
    return replaced[0](model, qconfig_map, node_name_to_scope, keep_original_weights)


@contextlib.contextmanager
def lowering_hook(lowerer: Lowerer) -> Iterator[None]:
    """Within the block, this thread's calls to torch's ``lower_to_fbgemm`` (made by
    ``convert``) call ``lowerer(model, qconfig_map, node_name_to_scope,
    keep_original_weights)`` instead. One thread at a time holds the hook (nesting in
    the same thread is fine); torch's function is put back on exit, whatever happens."""
    with _LOCK:
        outermost = not _replaced
        if outermost:
            _replaced.append(_CONVERT_MODULE.lower_to_fbgemm)
            _CONVERT_MODULE.lower_to_fbgemm = _dispatch
        lowerers = _local.__dict__.setdefault("lowerers", [])
        lowerers.append(lowerer)
        try:
            yield
        finally:
            lowerers.pop()
            if outermost:
                previous = _replaced.pop()
                if _CONVERT_MODULE.lower_to_fbgemm is _dispatch:
                    _CONVERT_MODULE.lower_to_fbgemm = previous


def convert_fx(
    graph_module: torch.fx.GraphModule,
    convert_custom_config: Any = None,
    _remove_qconfig: bool = True,
    qconfig_mapping: Any = None,
    backend_config: Any = None,
    keep_original_weights: bool = False,
    *,
    validate: bool = False,
    example_inputs: Any = None,
) -> torch.fx.GraphModule:
    """Drop-in for ``torch.ao.quantization.quantize_fx.convert_fx``: same arguments, same
    result (graph up to node names, module types, state_dict, outputs), lowered by
    fqlower (so with fqlower's fixes of torch's lowering). Unlike torch's, it leaves
    `graph_module` (the prepared model) as it was.

    With `validate=True` (and `example_inputs`, the model's positional inputs) each
    rewrite of the lowering is checked on its own subgraph (fqlower.validation): a
    refuted one is left float and logged as a warning on the `fqlower` logger."""
    from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
    from torch.ao.quantization.quantize_fx import attach_preserved_attrs_to_model

    from fqlower.api import log_refusals, lower

    if not isinstance(graph_module, torch.fx.GraphModule):
        raise UnsupportedInput(
            f"convert_fx expects the GraphModule prepare_fx returned, got {type(graph_module).__name__}"
        )
    if validate and example_inputs is None:
        raise UnsupportedInput("convert_fx(validate=True) needs example_inputs: the model's positional inputs, to check each rewrite on")
    if convert_custom_config is None:
        convert_custom_config = ConvertCustomConfig()
    if isinstance(convert_custom_config, dict):
        warnings.warn(
            "Passing a convert_custom_config_dict to convert is deprecated and will not be supported "
            "in a future version. Please pass in a ConvertCustomConfig instead.",
            FutureWarning,
            stacklevel=2,
        )
        convert_custom_config = ConvertCustomConfig.from_dict(convert_custom_config)
    # as torch: the caller's own attribute objects, read before converting
    preserved_attrs = {
        attr: getattr(graph_module, attr)
        for attr in convert_custom_config.preserved_attributes
        if hasattr(graph_module, attr)
    }
    # torch converts its input in place; the deep copy is what torch's tests convert too
    working = copy.deepcopy(graph_module)
    lowered: list[Any] = []

    def lower_with_fqlower(model, qconfig_map, node_name_to_scope, keep_original_weights=False):
        lowering = lower(
            model, qconfig_map, node_name_to_scope, keep_original_weights=keep_original_weights, validate=validate, example_inputs=example_inputs
        )
        log_refusals(lowering)
        lowered.append(lowering)
        return lowering.module

    with lowering_hook(lower_with_fqlower):
        quantized = _CONVERT_MODULE.convert(
            working,
            is_reference=False,
            convert_custom_config=convert_custom_config,
            is_standalone_module=False,
            _remove_qconfig_flag=_remove_qconfig,
            qconfig_mapping=qconfig_mapping,
            backend_config=backend_config,
            is_decomposed=False,
            keep_original_weights=keep_original_weights,
        )
    if not lowered:
        raise FqlowerError(
            "torch's convert finished without calling lower_to_fbgemm, so fqlower did not lower the "
            "model; was torch.ao.quantization.fx.convert.lower_to_fbgemm replaced by another thread?"
        )
    attach_preserved_attrs_to_model(quantized, preserved_attrs)
    return quantized
