"""The entry points: `lower`, `replay`, and `lower_to_native_backend`, a drop-in for torch's."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.fx

from fqlower.cautions import recipe_engine_cautions
from fqlower.passes.module_options import check_inplace_activations
from fqlower.log import PROVENANCE, Change, ChangeLog, apply_log, without_change_hashes
from fqlower.engine.edits import SetConstant
from fqlower.emit import to_fx
from fqlower.errors import UnsupportedInput
from fqlower.ir import Build, Program, from_fx, gc_paused
from fqlower.emit.original_weights import ORIGINAL_WEIGHTS_LOOKUP, original_weights_lookup
from fqlower.engine.pipeline import Pipeline, Timing, checking
from fqlower.validation import DEFAULT_SAMPLES, Validation, Validator


LOGGER = logging.getLogger(__name__)


@attrs.frozen
class Lowering:
    """What `lower` made: the module, the program it was emitted from, the log, and
    seconds per pass."""

    module: torch.fx.GraphModule
    program: Program
    log: ChangeLog
    timings: tuple[tuple[str, float], ...]
    validation: Validation | None = None  # the verdict on every change, when lowered with validate=True


def lower(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    *,
    keep_original_weights: bool = False,
    pipeline: Pipeline | None = None,
    validate: bool = False,
    example_inputs: Sequence[Any] | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Lowering:
    """Lower a quantized reference model. `model` is read, never changed.

    With `validate=True`, every change is checked on its own subgraph as it is made
    (fqlower.validation), on the values the nodes have when `model` runs on
    `example_inputs` and on `samples` draws from `seed`: a refuted rewrite is not
    applied, and a `Skip` naming the native op, the error, the bound and the input
    takes its place in the log. Without `pipeline`, a PT2E graph (what torchao's
    convert_pt2e returns) gets the PT2E passes (fqlower.pt2e), any other torch's."""
    from fqlower.pt2e.pipeline import pipeline_for

    pipeline = pipeline if pipeline is not None else pipeline_for(model)
    with gc_paused():
        program = from_fx(model, qconfig_map, node_name_to_scope)
        check_input(program)
        timing = Timing()
        validator = _validator(model, program, validate, example_inputs, samples, seed, pipeline)
        with checking(validator) if validator is not None else contextlib.nullcontext():
            result, log = pipeline.run_logged(program, (timing,))
        cautions = recipe_engine_cautions(program, log.changes, torch.backends.quantized.engine)
        log = attrs.evolve(log, entries=log.entries + cautions) if cautions else log
        module = _emit(result.program, log.changes, keep_original_weights, validator.built if validator is not None else None)
    validation = validator.validation(log) if validator is not None else None
    return Lowering(module, result.program, log, tuple(timing.seconds), validation)


def _validator(
    model: torch.fx.GraphModule,
    program: Program,
    validate: bool,
    example_inputs: Sequence[Any] | None,
    samples: int,
    seed: int,
    pipeline: Pipeline,
) -> Validator | None:
    """The checker of a lowering with `validate=True` (None without)."""
    if not validate:
        return None
    if example_inputs is None:
        raise UnsupportedInput(
            "validate=True needs example_inputs: each rewrite is checked on the values its nodes "
            "have when the reference model runs on them (and on draws shaped like them)"
        )
    return Validator.of(model, program, tuple(example_inputs), samples, seed, pipeline)


def check_input(program: Program) -> None:
    """Refuse (UnsupportedInput) what no lowering can run or get right: tensors off the
    CPU, in-place activations whose input another node reads."""
    check_on_cpu(program)
    check_inplace_activations(program)


def check_on_cpu(program: Program) -> None:
    """Quantized kernels are CPU kernels: name the first tensor that is elsewhere."""
    if not _all_on_cpu(program):
        _name_first_off_cpu(program)


# tensor types whose `is_cpu` is `device.type == "cpu"` (a subclass may redefine `device`);
# `device.type` costs several times `is_cpu`, and every parameter, buffer and constant is asked
_PLAIN_TENSORS = frozenset({torch.Tensor, torch.nn.Parameter})


def _all_on_cpu(program: Program) -> bool:
    """The quick answer: every module's own parameters and buffers, and every tensor constant.

    Walks the modules through their `_modules` tables as `Module.modules()` does, but
    without a generator per module and seeing a shared module once."""
    plain = _PLAIN_TENSORS
    pending: list[Any] = []
    for value in program.constants.values():
        if isinstance(value, torch.nn.Module):
            pending.append(value)
        elif isinstance(value, torch.Tensor) and not (
            value.is_cpu if type(value) in plain else value.device.type == "cpu"
        ):
            return False
    pending.extend(value for value in program.modules.values() if isinstance(value, torch.nn.Module))
    seen: set[int] = set()
    while pending:
        module = pending.pop()
        if module is None or id(module) in seen:  # None: a child slot set to None
            continue
        seen.add(id(module))
        for table in (module._parameters, module._buffers):
            for tensor in table.values():
                if tensor is not None and not (tensor.is_cpu if type(tensor) in plain else tensor.device.type == "cpu"):
                    return False
        if module._modules:
            pending.extend(module._modules.values())
    return True


def _name_first_off_cpu(program: Program) -> None:
    tables = [("module", path, value) for path, value in program.modules.items()]
    tables += [("attribute", path, value) for path, value in program.constants.items()]
    for kind, path, value in sorted(tables, key=lambda entry: entry[1]):
        if isinstance(value, torch.nn.Module):
            tensors = [*value.named_parameters(), *value.named_buffers()]
        elif isinstance(value, torch.Tensor):
            tensors = [("", value)]
        else:
            continue
        for name, tensor in tensors:
            if tensor.device.type != "cpu":
                where = f"{path}.{name}" if name else path
                raise UnsupportedInput(
                    f"{kind} tensor {where!r} is on {tensor.device}; torch's quantized kernels run on the CPU: "
                    "move the model there first (model.to('cpu'))"
                )


def replay(
    model: torch.fx.GraphModule,
    log: ChangeLog | str,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    *,
    keep_original_weights: bool = False,
    trusted: bool = False,
) -> Lowering:
    """Re-derive a lowering from its change log, without matching. Refuses (ReplayMismatch)
    a log of another model, one whose changes, hashes or fingerprints do not fit, and,
    unless `trusted`, one naming a callable that no lowering pass writes and the model
    does not call (see `fqlower.apply_log`)."""
    if isinstance(log, str):
        log = ChangeLog.loads(log)
    started = time.perf_counter()
    with gc_paused():
        program = apply_log(from_fx(model, qconfig_map, node_name_to_scope), log, trusted=trusted)
        module = _emit(program, log.changes, keep_original_weights)
    return Lowering(module, program, log, (("replay", time.perf_counter() - started),))


def _emit(program: Program, changes: Sequence[Change], keep_original_weights: bool, built: dict[Build, Any] | None = None) -> torch.fx.GraphModule:
    module = to_fx(program, built)
    for node in module.graph.nodes:
        # nodes no change touched came from the reference node of the same name
        node.meta.setdefault(PROVENANCE, {"pass": None, "rule": None, "anchor": None, "from": (node.name,)})
    if keep_original_weights:
        packed = [edit.attr for change in changes if change.pass_name == "fold-weights" for edit in change.edits[:1] if isinstance(edit, SetConstant)]
        setattr(module, ORIGINAL_WEIGHTS_LOOKUP, original_weights_lookup(program, packed))
    return module


def lower_to_native_backend(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any],
    node_name_to_scope: Mapping[str, tuple[str, type]],
    keep_original_weights: bool = False,
    *,
    validate: bool = False,
    example_inputs: Sequence[Any] | None = None,
) -> torch.fx.GraphModule:
    """Same signature and result as torch's `_lower_to_native_backend`; leaves `model` as it was.

    Runs the default pipeline as `lower` does, but without the change log's fingerprints
    and structural hashes: only the module is returned, so nobody could read them. A
    caution (fqlower.cautions) goes to the `fqlower` logger as a warning instead. With
    `validate=True` it lowers as `lower(..., validate=True)` does and logs each refuted
    rewrite (left float) as a warning."""
    if validate:
        lowering = lower(model, qconfig_map, node_name_to_scope, keep_original_weights=keep_original_weights, validate=True, example_inputs=example_inputs)
        log_refusals(lowering)
        return lowering.module
    with gc_paused():
        return _lower_module(model, qconfig_map, node_name_to_scope, keep_original_weights)


def log_refusals(lowering: Lowering) -> None:
    """Each rewrite validation refuted, as a warning on the `fqlower` logger."""
    for verdict in lowering.validation.refuted if lowering.validation is not None else ():
        LOGGER.warning("not lowered: %s at %r refuted by translation validation: %s", verdict.change.rule, verdict.change.anchor, verdict.reason)


def _lower_module(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any],
    node_name_to_scope: Mapping[str, tuple[str, type]],
    keep_original_weights: bool,
) -> torch.fx.GraphModule:
    # A function of its own so that the programs are freed before the collector is back
    # on: its first young collection then scans the module alone, not every IR object.
    from fqlower.passes import default_pipeline

    program = from_fx(model, qconfig_map, node_name_to_scope)
    check_input(program)
    with without_change_hashes():
        result = default_pipeline().run(program)
    for caution in recipe_engine_cautions(program, result.changes, torch.backends.quantized.engine):
        LOGGER.warning("caution [%s] %s", caution.check, caution.message)  # no log to hold it
    return _emit(result.program, result.changes, keep_original_weights)
