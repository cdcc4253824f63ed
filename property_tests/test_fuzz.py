"""Fuzzing fqlower with damaged reference models, maps and change logs.

Each example starts from one of a few valid reference models of the zoo (built once
per module, in `_BASES`) and applies one to three drawn mutations to deep copies of
the GraphModule and of its two maps: rewire an edge, drop a node (its users read one
of its inputs), erase a node while its users still read it (they then read a node of
another graph), move a node before its own input (the graph fails `lint()`), swap a
call_function / call_method / call_module / get_attr target, corrupt a constant
(scale, zero point or weight: negative, zero, NaN, inf, wrong shape or dtype, None, a
Python number), inline a Python number where a get_attr was read, delete an attribute
or submodule the graph reads, replace a submodule (by Identity, ReLU, ..., by its
float base class, by the module at another path), move arguments to keywords or drop
trailing ones, and damage the maps (qconfig None or removed or of the wrong type,
scope removed or of the wrong shape or at another path, keys that are no strings, a
whole map that is None, a list or a string). Logs of the undamaged models are damaged
by truncation, flipped characters, dropped / duplicated / swapped / blank lines, CRLF
and trailing or leading whitespace, another schema number, or an unknown or other
qualified name. Every drawn mutation prints as one readable line.

The laws:

- `test_lowering_never_raises_anything_but_fqlower_errors`: `fqlower.lower` returns or
  raises an `FqlowerError`; any other exception fails the test. When it returns, the
  mutated model runs on the example inputs (otherwise it is no model to lower
  correctly) and torch's lowering of a copy returns too, the two results are equal:
  `lowering_differences` (graph up to node names, module types, state_dict,
  bit-identical outputs), with outputs computed on separate copies of the inputs and
  two results that both fail to run counting as equal outputs. Where they differ, the
  log must hold departures (entries with a `torch-*` reason code, `fqlower.departures`),
  the graph, module types and state_dict must equal torch's outside the departed nodes'
  regions, and fqlower's result must run and be near the mutated reference model's
  outputs: |ours - ref| <= 0.25 * max|ref| + 1e-3 elementwise, over the positions where
  both are finite. The bound is loose on purpose: the reference model simulates
  quantization in float, the lowering runs integer kernels. It is not checked when a
  mutation changed a constant or which constant a node reads: a reroute drops its
  quantize in torch's lowering and fqlower's alike, so a corrupted scale there is
  applied by the reference model only. When torch's lowering raises, or both lowered
  models fail to run with the same error, nothing beyond "no other exception" is
  asserted: the mutated inputs include garbage (a dequantize of a float tensor, a zero
  scale) on which torch's lowering would build the same failing model. Half the
  examples draw only gentle mutations (`draw_gentle`: arguments to keywords, a qconfig
  set to None), which keep the model lowerable, and at least 30 % of all examples
  must get as far as a comparison with torch (property_tests/reach.py).
- `test_lowering_never_mutates_its_input`: the model (code, graph, node names and
  meta keys, module types, state, attributes) and both maps (keys, order, value
  identity) are the same after `lower`, whatever it returned or raised.
- `test_replay_refuses_damaged_logs_precisely`: a damaged log that `ChangeLog.loads`
  refuses is refused by `replay` with a `ChangeLogError`; one it reads is either
  refused with a `ReplayMismatch` or replays to the undamaged output fingerprint and
  code (whitespace-only damage must replay). Never another exception; the model and
  the maps are unchanged.
- `test_replay_refuses_logs_with_retyped_values_precisely`: the same law for logs that
  stay valid JSON lines but hold a value of another type or form somewhere (a list
  where a node name belongs, an object where a fingerprint belongs, an unknown device,
  a broken tensor).

Example counts come from the hypothesis profiles in conftest.py (`ci`: 40,
`fuzz-thorough`: 10,000 per property).

The code: `fuzz_subject.py` (the zoo cases and FX helpers), `fuzz_graph.py` and
`fuzz_state.py` (mutations of a model's graph, and of its state and maps),
`fuzz_inputs.py` (drawing and running fuzzed inputs), `fuzz_logs.py` (damaged logs);
this file holds the properties.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from hypothesis import event, given, note
from reach import run_law
from fuzz_inputs import Failed, Fuzzed, _unexpected, differences_from_torch, far_from, fuzzed_inputs, lower_with_torch, reference_outputs, run
from fuzz_logs import DamagedLog, damaged_logs, retyped_logs
from fuzz_subject import base, undamaged_log

import fqlower
from fqlower import ChangeLog, ChangeLogError, FqlowerError, ReplayMismatch
from fqlower.compare import ModelSnapshot, values_equal
from fqlower.departures import departed_nodes, departures, differences_outside

# --- properties --------------------------------------------------------------------------------


def test_lowering_never_raises_anything_but_fqlower_errors() -> None:
    """lower() returns or raises an FqlowerError (see `check_fuzzed`); at least 30 % of the
    examples get as far as a comparison with torch's lowering."""
    run_law("fuzzer", fuzzed_inputs(), check_fuzzed, share=0.3)


def check_fuzzed(fuzzed: Fuzzed) -> tuple[str, bool]:
    outcome, reached = check_fuzzed_law(fuzzed)
    return f"{'gentle' if fuzzed.gentle else 'harsh'}: {outcome}", reached


def check_fuzzed_law(fuzzed: Fuzzed) -> tuple[str, bool]:
    """lower() returns or raises an FqlowerError. A lowering of a model that runs equals
    torch's (when torch's lowering returns), except where fqlower differs on purpose
    (README, "Where fqlower does better than torch 2.13"); there its result must run and
    stay within 0.25 * max|ref| + 1e-3 of the mutated reference model's outputs (a loose
    tolerance: the reference simulates quantization in float, the lowering runs integer
    kernels), unless a mutation changed a constant or which constant a node reads."""
    note(f"mutated model:\n{fuzzed.module.code}")
    try:
        lowering = fqlower.lower(fuzzed.module, fuzzed.qconfig_map, fuzzed.scope)
    except FqlowerError as error:
        return f"fqlower raises {type(error).__name__}", False
    except Exception as error:
        raise _unexpected("fqlower.lower", fuzzed, error) from error

    expected = reference_outputs(fuzzed)
    if isinstance(expected, Failed):
        return "fqlower lowers; the mutated model does not run", False  # not a model: nothing to lower correctly
    theirs = lower_with_torch(fuzzed)
    if isinstance(theirs, Failed):
        return "fqlower lowers; torch raises", False
    ours, theirs_out = run(lowering.module, fuzzed.inputs), run(theirs, fuzzed.inputs)
    try:
        differences = differences_from_torch(theirs, lowering.module, theirs_out, ours)
    except Exception as error:
        raise _unexpected("comparing the lowerings with fqlower.compare", fuzzed, error) from error
    if not differences:
        return "fqlower lowers; equal to torch" + (" (neither result runs)" if isinstance(ours, Failed) else ""), True
    deliberate = departures(lowering)
    note(f"differences from torch: {differences}\ndeparts: {deliberate}")
    assert deliberate, (
        f"fqlower's lowering differs from torch's, and not where fqlower differs on purpose: {differences}\n"
        f"torch ({'does not run: ' + repr(theirs_out) if isinstance(theirs_out, Failed) else 'runs'}):\n{theirs.code}\n"
        f"fqlower ({'does not run: ' + repr(ours) if isinstance(ours, Failed) else 'runs'}):\n{lowering.module.code}"
    )
    outside = differences_outside(theirs, lowering.module, departed_nodes(lowering))
    assert not outside, f"differences outside the departures {deliberate}: {outside}"
    if isinstance(ours, Failed) and isinstance(theirs_out, Failed) and repr(ours) == repr(theirs_out):
        # garbage in (e.g. a dequantize of a float model input feeding a quantized module):
        # both lowerings build a model that fails the same way, as when torch's lowering raises
        return "fqlower lowers; differs from torch on purpose, and both fail the same way", True
    assert not isinstance(ours, Failed), f"fqlower's lowering does not run: {ours!r}\n{lowering.module.code}"
    if fuzzed.touches_qparams:
        # a reroute drops its quantize (torch's lowering and fqlower's alike), so a corrupted
        # scale or zero point there is applied by the reference model and by neither lowering
        return "fqlower lowers; differs from torch on purpose (qparams touched: outputs not bounded)", True
    problem = far_from(ours, expected)
    assert problem is None, f"fqlower's lowering computes something else than the mutated model: {problem}\n{lowering.module.code}"
    return "fqlower lowers; differs from torch on purpose, near the mutated model", True


def _maps_record(value: Any) -> Any:
    if isinstance(value, dict):
        return [(key, id(item)) for key, item in value.items()]
    if isinstance(value, list):
        return ("list", [(id(item), item) for item in value])
    return ("other", id(value))


def _graph_record(gm: torch.fx.GraphModule) -> list[tuple[Any, ...]]:
    """Every node as names, works for graphs ModelSnapshot cannot walk (dangling references)."""
    def name_of(value: Any) -> Any:
        return torch.fx.node.map_arg(value, lambda node: f"%{node.name}")

    return [
        (node.name, node.op, repr(node.target), repr(name_of(node.args)), repr(name_of(node.kwargs)), tuple(sorted(node.meta)))
        for node in gm.graph.nodes
    ]


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by path, read without `state_dict` (which a damaged
    reference module may fail, e.g. without its `weight_scale`)."""
    found = dict(module.named_parameters(remove_duplicate=False))
    found.update(module.named_buffers(remove_duplicate=False))
    return {name: value.detach().clone() for name, value in found.items()}


class InputSnapshot:
    def __init__(self, fuzzed: Fuzzed):
        try:
            self.model: ModelSnapshot | None = ModelSnapshot.of(fuzzed.module)
        except (KeyError, AttributeError):
            # KeyError: a node reads a node of another graph (graph_shape cannot number it);
            # AttributeError: a reference module lost an attribute its state_dict reads
            self.model = None
            self.state = _tensors(fuzzed.module)
        self.graph = _graph_record(fuzzed.module)
        self.code = fuzzed.module.code
        self.maps = (_maps_record(fuzzed.qconfig_map), _maps_record(fuzzed.scope))

    def differences(self, fuzzed: Fuzzed) -> list[str]:
        found = self.model.differences(fuzzed.module) if self.model is not None else []
        if self.model is None:
            state = _tensors(fuzzed.module)
            if state.keys() != self.state.keys() or not all(values_equal(state[k], self.state[k]) for k in state):
                found.append("parameters or buffers changed")
        if _graph_record(fuzzed.module) != self.graph:
            found.append("nodes (names, targets, arguments or meta keys) changed")
        if fuzzed.module.code != self.code:
            found.append("code changed")
        if (_maps_record(fuzzed.qconfig_map), _maps_record(fuzzed.scope)) != self.maps:
            found.append("maps changed")
        return found


@given(fuzzed_inputs())
def test_lowering_never_mutates_its_input(fuzzed: Fuzzed) -> None:
    snapshot = InputSnapshot(fuzzed)
    try:
        fqlower.lower(fuzzed.module, fuzzed.qconfig_map, fuzzed.scope)
        outcome = "returned"
    except Exception as error:  # the other property judges the exception; this one judges purity
        outcome = f"raised {type(error).__name__}"
    changed = snapshot.differences(fuzzed)
    assert changed == [], f"fqlower.lower {outcome} and changed its input: {changed}"


def check_replay(damaged: DamagedLog) -> None:
    """The replay law: refused precisely (unreadable: ChangeLogError; readable but not
    fitting: ReplayMismatch) or replayed to the undamaged output; the model unchanged."""
    ref = base(damaged.case)
    _, output, code = undamaged_log(damaged.case)
    model = copy.deepcopy(ref.module)
    qconfig_map, scope = dict(ref.qconfig_map), dict(ref.node_name_to_scope)
    snapshot = ModelSnapshot.of(model)
    maps = (_maps_record(qconfig_map), _maps_record(scope))

    try:
        ChangeLog.loads(damaged.text)
        readable: BaseException | None = None
    except ChangeLogError as error:
        readable = error
    except Exception as error:
        raise AssertionError(
            f"ChangeLog.loads raised {type(error).__name__} (not a ChangeLogError): {error}\non {damaged!r}"
        ) from error

    try:
        replayed = fqlower.replay(model, damaged.text, qconfig_map, scope)
    except ChangeLogError as error:
        event("ChangeLogError")
        assert readable is not None, f"ChangeLog.loads reads the log, replay calls it unreadable: {error}"
    except ReplayMismatch as error:
        event("ReplayMismatch")
        assert readable is None, f"replay reports a mismatch for a log ChangeLog.loads refuses ({readable}): {error}"
        assert not damaged.null, f"whitespace-only damage was refused: {error}"
    except Exception as error:
        raise AssertionError(
            f"replay raised {type(error).__name__} (not ChangeLogError or ReplayMismatch): {error}\non {damaged!r}"
        ) from error
    else:
        event("replayed" + (" (whitespace-only damage)" if damaged.null else ""))
        assert readable is None, f"replay accepted a log ChangeLog.loads refuses: {readable}"
        found = fqlower.fingerprint(replayed.program)
        assert found == output, f"a damaged log replayed to another program: {found[:12]} != {output[:12]}"
        assert replayed.module.code == code
    assert snapshot.differences(model) == [], "replay changed the model"
    assert (_maps_record(qconfig_map), _maps_record(scope)) == maps, "replay changed the maps"


@given(damaged_logs())
def test_replay_refuses_damaged_logs_precisely(damaged: DamagedLog) -> None:
    check_replay(damaged)


@given(retyped_logs())
def test_replay_refuses_logs_with_retyped_values_precisely(damaged: DamagedLog) -> None:
    """As above, for logs that stay valid JSON but hold a value of another type or form
    somewhere (a list where a node name belongs, an unknown device, a broken tensor)."""
    check_replay(damaged)
