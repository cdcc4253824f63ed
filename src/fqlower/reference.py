"""Build quantized reference models exactly as torch's lowering sees them.

``torch.ao.quantization.quantize_fx.convert_fx`` first converts an observed
(prepared and calibrated) model to a *quantized reference model* and then hands
that model, together with two maps it computed along the way, to
``lower_to_fbgemm`` -- a thin wrapper around
``torch.ao.quantization.fx._lower_to_native_backend._lower_to_native_backend``::

    lower_to_fbgemm(model, node_name_to_qconfig, node_name_to_scope, keep_original_weights)

The maps are not reachable through any public API, and
``convert_to_reference_fx`` returns a model that already differs slightly from
the lowering input (qconfig attributes removed, unused submodules deleted).
:func:`reference_model` therefore runs ``convert_fx`` with ``lower_to_fbgemm``
temporarily replaced by an interceptor that deep-copies its three arguments
and aborts the conversion, so the captured values are byte-for-byte the
inputs of torch's own lowering.

:func:`torch_lowering` runs torch's lowering on such a capture; it is the
oracle that fqlower's lowering is compared against.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import attrs
import torch
import torch.fx
from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

__all__ = ["ReferenceModel", "reference_model", "torch_lowering"]

# ``torch.ao.quantization.fx.convert`` as an *attribute* is the function
# ``convert`` (re-exported by the package ``__init__``), which shadows the
# submodule; the module object has to come from the import system.
_CONVERT_MODULE: Any = importlib.import_module("torch.ao.quantization.fx.convert")  # lower_to_fbgemm is set on it


@attrs.frozen
class ReferenceModel:
    """The exact inputs torch's native-backend lowering receives, plus inputs to run them.

    Attributes:
        module: The quantized reference model (quantize/dequantize nodes around
            reference quantized modules/ops), as passed to ``lower_to_fbgemm``.
        qconfig_map: Node name -> ``QConfigAny`` (``None`` means "do not quantize").
        node_name_to_scope: Node name -> ``(module path, module type)`` of the
            module the node was traced in.
        example_inputs: Positional inputs on which ``module`` runs.
    """

    module: torch.fx.GraphModule
    qconfig_map: Mapping[str, Any]
    node_name_to_scope: Mapping[str, tuple[str, type]]
    example_inputs: tuple[Any, ...]


@contextlib.contextmanager
def quiet_torch_quantization() -> Iterator[None]:
    """Silence the deprecation notices torch's FX quantization emits on every use.

    Covers ``DeprecationWarning``/``FutureWarning``, two deprecation notices
    torch raises as ``UserWarning`` (observers' ``reduce_range``; quantized
    tensor creation functions) and the ``torch.tensor(tensor)`` copy warning
    raised inside torch's reference RNN modules.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        for message in (
            r"Please use quant_min and quant_max",
            r".*quantized tensor creation functions",
            r"To copy construct from a tensor",
        ):
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


@contextlib.contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """Run the block with torch's quantized engine set to `name`, then restore the previous one."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class _LoweringIntercepted(Exception):
    """Private sentinel raised by the interceptor to stop ``convert_fx`` before lowering."""

    def __init__(self, captured: tuple[Any, Any, Any]) -> None:
        super().__init__("lower_to_fbgemm intercepted")
        self.captured = captured


def _intercept_lowering(
    model: torch.fx.GraphModule,
    qconfig_map: dict[str, Any],
    node_name_to_scope: dict[str, tuple[str, type]],
    keep_original_weights: bool = False,
) -> NoReturn:
    """Stand-in for ``lower_to_fbgemm``: capture copies of its inputs, then abort."""
    # One deepcopy call with a shared memo keeps any sharing between the model
    # and the maps (e.g. QConfig objects) consistent in the copy.
    raise _LoweringIntercepted(copy.deepcopy((model, qconfig_map, node_name_to_scope)))


def reference_model(
    float_model: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    qconfig_mapping: Any,
    *,
    backend_config: Any = None,
    calibrate: bool = True,
    prepare_custom_config: Any = None,
) -> ReferenceModel:
    """Quantize ``float_model`` to a reference model and capture torch's lowering inputs.

    Steps: deep-copy ``float_model`` (the caller's model is never mutated), put
    the copy in eval mode, ``prepare_fx`` it, optionally calibrate by running it
    once on ``example_inputs``, then run ``convert_fx`` with ``lower_to_fbgemm``
    intercepted. The interception swaps a module global of torch for the
    duration of ``convert_fx`` (restored in all cases), so concurrent calls
    from several threads are not supported.

    Args:
        float_model: The floating point model to quantize.
        example_inputs: Positional inputs; used for ``prepare_fx``, calibration,
            and stored on the result.
        qconfig_mapping: A ``QConfigMapping`` (or legacy qconfig dict) for ``prepare_fx``.
        backend_config: Optional ``BackendConfig`` for ``prepare_fx``/``convert_fx``.
        calibrate: Run the observed model on ``example_inputs`` before converting.
        prepare_custom_config: Optional ``PrepareCustomConfig`` (or dict) for ``prepare_fx``.

    Returns:
        The captured :class:`ReferenceModel`.

    Raises:
        RuntimeError: If ``convert_fx`` finished without calling ``lower_to_fbgemm``.
    """
    example_inputs = tuple(example_inputs)
    model = copy.deepcopy(float_model).eval()
    with quiet_torch_quantization():
        prepared = prepare_fx(
            model,
            qconfig_mapping,
            example_inputs,
            prepare_custom_config=prepare_custom_config,
            backend_config=backend_config,
        )
        if calibrate:
            with torch.no_grad():
                prepared(*example_inputs)

        original = _CONVERT_MODULE.lower_to_fbgemm
        _CONVERT_MODULE.lower_to_fbgemm = _intercept_lowering
        try:
            convert_fx(prepared, backend_config=backend_config)
        except _LoweringIntercepted as stop:
            module, qconfig_map, node_name_to_scope = stop.captured
        else:
            raise RuntimeError("convert_fx returned without calling lower_to_fbgemm")
        finally:
            _CONVERT_MODULE.lower_to_fbgemm = original

    return ReferenceModel(
        module=module,
        qconfig_map=qconfig_map,
        node_name_to_scope=node_name_to_scope,
        example_inputs=example_inputs,
    )


def torch_lowering(
    ref: ReferenceModel, *, keep_original_weights: bool = False
) -> torch.fx.GraphModule:
    """Lower ``ref`` with torch's own ``_lower_to_native_backend``.

    torch rewrites its input in place, so it is given deep copies of
    ``ref.module`` and of both maps; ``ref`` is left untouched.

    Unlike ``convert_fx``, this does not run the post-lowering cleanup
    (``_remove_qconfig`` and ``delete_all_unused_submodules``): the result is
    exactly what the lowering function returns.

    Args:
        ref: A capture produced by :func:`reference_model`.
        keep_original_weights: Passed through to torch's lowering.

    Returns:
        The lowered ``GraphModule``.
    """
    module, qconfig_map, node_name_to_scope = copy.deepcopy(
        (ref.module, dict(ref.qconfig_map), dict(ref.node_name_to_scope))
    )
    with quiet_torch_quantization():
        return _lower_to_native_backend(
            module, qconfig_map, node_name_to_scope, keep_original_weights
        )
