"""Round 4 of tests against mutmut's survivors in fqlower.log, fqlower.compare
and fqlower.passes.common (docs/mutation.md).

What they pin:

- a `$tensor` payload is read weights-only even when the environment tells torch to
  load pickles in full (`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` only overrides a
  `torch.load` that leaves `weights_only` out);
- the structural hashes a change log carries, to the digit: logs on disk are checked
  against them on replay, so they are part of schema 1 (16 hex digits, the tables a
  change writes tagged `module` / `constant`);
- `record_all` without hashes: changes that only remove nodes go in as one batch (all
  or nothing), and other changes still leave their provenance meta on the nodes;
- `record_into` without hashes describes no node (the hashing is what the switch saves);
- `produced_from_constants` reads each node once, so a weight computed through
  diamonds of shared constants costs linear, not exponential, time;
- `ModelSnapshot`: its state is the `state_dict` (detached tensors, so a buffer that is
  no graph leaf can be copied), its configuration lists a shared module at every path,
  and an unreadable packed weight is identified by its type and id.
"""

from __future__ import annotations

import base64
import hashlib
import collections
import io
import pickle

import pytest
import torch
import torch.fx
import torch.nn as nn
from helpers import call
from test_pass_functionals import dynamic_linear_over, unreadable_packed_weight

import fqlower
from fqlower.log.fingerprint import describe, node_line
from fqlower import Change, FrozenDict, IRError, Ref, RemoveNode, SetArgs, SetConstant
from fqlower.log import PROVENANCE, decode, record_all, record_change, record_into, without_change_hashes
from fqlower.compare import ModelSnapshot
from fqlower.engine.draft import Draft
from fqlower.passes.common import produced_from_constants

# --- decode: weights-only, whatever the environment says ----------------------------------------


class _Payload:
    """Pickles as a call of print: what a tampered `$tensor` could run on load."""

    def __reduce__(self):
        return (print, ("unpickled and ran code",))


def test_a_tensor_payload_stays_weights_only_when_the_environment_forces_full_pickle_loads(monkeypatch, capsys):
    # torch lets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD override only a torch.load that does not
    # pass weights_only itself: decode must pass it
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    buffer = io.BytesIO()
    torch.save(_Payload(), buffer)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        decode({"$tensor": base64.b64encode(buffer.getvalue()).decode("ascii")})
    assert capsys.readouterr().out == ""


# --- structural hashes, to the digit -------------------------------------------------------------


def sigmoid_of_x() -> fqlower.Program:
    """x -> a = sigmoid(x) -> output, with a buffer `table`."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.create_node("call_function", torch.sigmoid, (x,), name="a"))
    root = nn.Module()
    root.register_buffer("table", torch.zeros(2))
    return fqlower.from_fx(torch.fx.GraphModule(root, graph))


def test_the_hashes_a_change_log_carries_are_those_of_schema_1():
    # a log written earlier is replayed against these digits: changing how they are
    # computed (their length, the tag of a table) breaks every stored log of schema 1.
    # Schema 1: the first 16 hex digits of sha256 over the lines of the nodes in program
    # order, then one `module:PATH=...`/`constant:PATH=...` line per table entry written
    table = torch.ones(2)
    program = sigmoid_of_x()
    change = Change(0, "p", "r", "a", FrozenDict(), (SetArgs("a", (Ref("x"),)), SetConstant("table", table)))
    after, recorded = record_change(program, change)
    matched = hashlib.sha256(node_line(program.node("a"), program)).hexdigest()[:16]
    lines = node_line(after.node("a"), after) + f"constant:table={describe(table, after)!r}".encode()
    assert (recorded.matched, recorded.produced) == (matched, hashlib.sha256(lines).hexdigest()[:16])


# --- record_all / record_into without hashes -------------------------------------------------------


def dead_and_live() -> fqlower.Program:
    """x -> a = neg(x) -> b = relu(a) -> output(b); d = sigmoid(x) is used by nothing."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.create_node("call_function", torch.neg, (x,), name="a")
    graph.create_node("call_function", torch.sigmoid, (x,), name="d")
    graph.output(graph.create_node("call_function", torch.relu, (a,), name="b"))
    return fqlower.from_fx(torch.fx.GraphModule(nn.Module(), graph))


def removal(name: str) -> Change:
    return Change(0, "eliminate-dead-code", "dead-code", name, FrozenDict(), (RemoveNode(name),))


def test_without_hashes_removal_only_changes_go_in_as_one_batch_all_or_nothing():
    program = dead_and_live()
    draft = Draft(program)
    with without_change_hashes(), pytest.raises(IRError, match=r"cannot remove node 'a': still used by \['b'\]"):
        record_all(draft, (removal("d"), removal("a")))
    # the batch was rejected as a whole: the removal of `d` before it is undone too
    assert "d" in draft
    assert draft.freeze() is program


def test_without_hashes_changes_that_remove_nothing_still_leave_their_provenance():
    program = dead_and_live()
    draft = Draft(program)
    change = Change(0, "p", "r", "a", FrozenDict(), (SetArgs("a", (Ref("x"),)),))
    with without_change_hashes():
        assert record_all(draft, (change,)) == (change,)
    assert dict(draft.node("a").meta[PROVENANCE]) == {"pass": "p", "rule": "r", "anchor": "a", "from": ("a",)}


class _Described:
    """A node argument that counts how often it is described (repr) for a hash."""

    def __init__(self):
        self.reprs = 0

    def __repr__(self):
        self.reprs += 1
        return "described"


def test_without_hashes_recording_a_change_describes_no_node():
    probe = _Described()
    results = []
    for hashing in (False, True):
        draft = Draft(dead_and_live())
        draft.apply((fqlower.AddNode(call("probe", torch.add, Ref("x"), probe), after="x"),))
        before = probe.reprs
        change = Change(0, "p", "r", "probe", FrozenDict(), (SetArgs("probe", (Ref("x"), 2)),))
        if hashing:
            recorded = record_into(draft, change)
        else:
            with without_change_hashes():
                recorded = record_into(draft, change)
        results.append((probe.reprs - before, recorded.matched, recorded.produced))
    off, on = results
    assert off == (0, "", "")
    assert on[0] == 1 and on[1] and on[2]  # with hashes, the matched hash reads the probe's arguments


# --- produced_from_constants: each node read once ----------------------------------------------------


class _CountingView:
    """A program view that counts the nodes read from it."""

    def __init__(self, program):
        self.program = program
        self.reads = collections.Counter()

    def node(self, name):
        self.reads[name] += 1
        return self.program.node(name)


def diamonds(levels: int, *, from_input: bool = False) -> tuple[fqlower.Program, str]:
    """c (a constant, or the input x) -> per level: l = neg(prev), r = abs(prev), prev = add(l, r)."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    root = nn.Module()
    root.register_buffer("c", torch.ones(2))
    prev = x if from_input else graph.get_attr("c")
    for level in range(levels):
        left = graph.create_node("call_function", torch.neg, (prev,), name=f"l{level}")
        right = graph.create_node("call_function", torch.abs, (prev,), name=f"r{level}")
        prev = graph.create_node("call_function", torch.add, (left, right), name=f"m{level}")
    graph.output((prev, x))
    return fqlower.from_fx(torch.fx.GraphModule(root, graph)), prev.name


def test_produced_from_constants_reads_each_node_once_through_shared_inputs():
    program, top = diamonds(10)
    view = _CountingView(program)
    assert produced_from_constants(view, top) is True
    assert set(view.reads) == {f"{kind}{level}" for kind in "lrm" for level in range(10)} | {"c"}
    assert max(view.reads.values()) == 1  # 2**10 paths lead to `c`: one read, not 1024
    program, top = diamonds(3, from_input=True)
    assert produced_from_constants(program, top) is False


# --- ModelSnapshot -----------------------------------------------------------------------------------


def test_a_snapshot_state_holds_the_state_dict_tensors_detached():
    root = nn.Module()
    root.fc = nn.Linear(2, 2)
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_module("fc", (x,)))
    gm = torch.fx.GraphModule(root, graph)
    gm.register_buffer("scaled", gm.fc.weight * 2)  # computed from a parameter: no graph leaf
    snapshot = ModelSnapshot.of(gm)
    weight = snapshot.state["fc.weight"]
    assert type(weight) is torch.Tensor and not weight.requires_grad
    assert torch.equal(weight, gm.fc.weight.detach()) and weight is not gm.fc.weight
    assert not snapshot.state["scaled"].requires_grad
    assert snapshot.differences(gm) == []


def test_a_snapshot_configuration_lists_a_shared_module_at_every_path():
    root = nn.Module()
    root.a = root.b = nn.ReLU()
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_module("b", (graph.call_module("a", (x,)),)))
    gm = torch.fx.GraphModule(root, graph)
    snapshot = ModelSnapshot.of(gm)
    assert [path for path, _, _ in snapshot.configuration] == ["", "a", "b"]
    gm.b = nn.ReLU()  # the same configuration at both paths, no longer shared
    assert snapshot.differences(gm) == []


def test_a_snapshot_identifies_an_unreadable_packed_weight_by_its_type_and_id():
    packed = unreadable_packed_weight()
    snapshot = ModelSnapshot.of(dynamic_linear_over(packed))
    (root_attributes,) = [attributes for path, _, attributes in snapshot.configuration if path == ""]
    assert ("packed", f"ScriptObject@{id(packed)}") in root_attributes
