"""The match/rewrite driver, pipelines, instruments and logged runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy_passes import CANCEL_DOUBLE_NEG, RELU_TO_CLAMP, TOY_PIPELINE, ToyNet, toy_program

import fqlower
from fqlower import Change, FqlowerError, IRError, Pipeline, RemoveNode, Skip, Snapshots, Timing, apply_log, rule_pass
from fqlower.compare import values_equal

X = torch.randn(3, 4)


def test_rule_pass_rewrites_and_records_change_with_bindings_and_edits():
    program = toy_program()
    result = CANCEL_DOUBLE_NEG.run(program)
    (change,) = result.changes
    assert change.pass_name == "cancel-double-neg" and change.anchor == "neg_1"
    assert dict(change.bindings) == {"inner": "neg", "source": "fc"}
    assert [type(edit).__name__ for edit in change.edits] == ["ReplaceUses", "RemoveNode", "RemoveNode"]
    assert "neg" not in result.program and result.program.node("relu").args == (fqlower.Ref("fc"),)
    assert values_equal(fqlower.to_fx(result.program)(X), ToyNet()(X))


def test_misses_are_recorded_as_skips_with_reasons():
    result = RELU_TO_CLAMP.run(toy_program())
    assert [change.anchor for change in result.changes] == ["relu"]
    (skip,) = [entry for entry in result.entries if isinstance(entry, Skip)]
    assert (skip.node, skip.reason) == ("relu_1", "relu 'relu_1' has 2 users")


def test_passes_are_pure():
    program = toy_program()
    before = fqlower.fingerprint(program)
    first, second = TOY_PIPELINE.run(program), TOY_PIPELINE.run(program)
    assert fqlower.fingerprint(program) == before
    assert first == second


def test_pipeline_equals_its_passes_run_one_by_one():
    program = toy_program()
    whole = TOY_PIPELINE.run(program)
    step1 = CANCEL_DOUBLE_NEG.run(program)
    step2 = RELU_TO_CLAMP.run(step1.program)
    assert fqlower.fingerprint(whole.program) == fqlower.fingerprint(step2.program)
    assert [entry.step for entry in whole.entries] == [0] + [1] * len(step2.entries)
    assert [(e.pass_name, type(e)) for e in whole.entries] == [(e.pass_name, type(e)) for e in step1.entries + step2.entries]


def test_nested_pipelines_flatten():
    nested = Pipeline("outer", (Pipeline("inner", (CANCEL_DOUBLE_NEG,)), RELU_TO_CLAMP))
    assert nested.names == ("cancel-double-neg", "relu-to-clamp")
    program = toy_program()
    assert nested.run(program) == TOY_PIPELINE.run(program)


def test_passes_can_be_disabled_or_selected_by_name():
    assert TOY_PIPELINE.without("relu-to-clamp").names == ("cancel-double-neg",)
    assert TOY_PIPELINE.only("relu-to-clamp").names == ("relu-to-clamp",)
    result = TOY_PIPELINE.without("relu-to-clamp").run(toy_program())
    assert result.program.node("relu").target is torch.relu
    with pytest.raises(FqlowerError, match=r"no pass named \['typo'\]"):
        TOY_PIPELINE.without("typo")


def test_instruments_observe_every_pass():
    timing, snapshots = Timing(), Snapshots()
    program = toy_program()
    result = TOY_PIPELINE.run(program, (timing, snapshots))
    assert [name for name, _ in timing.seconds] == list(TOY_PIPELINE.names)
    assert all(seconds >= 0 for _, seconds in timing.seconds)
    assert [name for name, _ in snapshots.programs] == list(TOY_PIPELINE.names)
    assert snapshots.programs[-1][1] is result.program
    assert "neg" not in snapshots.programs[0][1] and snapshots.programs[0][1].node("relu").target is torch.relu
    assert result == TOY_PIPELINE.run(program)


def test_every_prefix_of_the_pipeline_emits_a_runnable_module():
    snapshots = Snapshots()
    TOY_PIPELINE.run(toy_program(), (snapshots,))
    for name, program in snapshots.programs:
        assert values_equal(fqlower.to_fx(program)(X), ToyNet()(X)), name


def test_a_bad_rewrite_is_reported_with_pass_rule_and_node():
    broken = rule_pass("broken", lambda program, node: fqlower.Match(node.name) if node.name == "fc" else None,
                       lambda program, match: (RemoveNode(match.anchor),))
    with pytest.raises(IRError, match=r"pass broken, rule broken: cannot remove node 'fc': still used") as raised:
        broken.run(toy_program())
    assert raised.value.node == "fc"
    assert "--> %fc = fc(%x)" in str(raised.value)


def test_logged_run_replays_to_the_same_fingerprint():
    program = toy_program()
    result, log = TOY_PIPELINE.run_logged(program)
    assert log.header.input == fqlower.fingerprint(program)
    assert log.header.output == fqlower.fingerprint(result.program)
    assert [record.name for record in log.header.passes] == list(TOY_PIPELINE.names)
    replayed = apply_log(program, fqlower.ChangeLog.loads(log.dumps()), trusted=True)
    assert fqlower.fingerprint(replayed) == log.header.output
    assert isinstance(log.entries[0], Change)


def test_logs_are_byte_identical_across_runs_and_processes():
    _, first = TOY_PIPELINE.run_logged(toy_program())
    _, second = TOY_PIPELINE.run_logged(toy_program())
    assert first.dumps() == second.dumps()
    script = (
        "import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1]);"
        "from toy_passes import TOY_PIPELINE, toy_program;"
        "sys.stdout.write(TOY_PIPELINE.run_logged(toy_program())[1].dumps())"
    )
    tests_dir = str(Path(__file__).parent)
    outputs = {
        subprocess.run([sys.executable, "-c", script, tests_dir], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    }
    assert outputs == {first.dumps()}


@pytest.mark.parametrize("case_id", ["TwoLayerLinear-static_fbgemm", "ConvBnAddRelu-static_fbgemm", "FunctionalConvLinear-static_fbgemm", "LSTMwithHidden-dynamic_int8"])
def test_every_snapshot_keeps_nodes_in_position_order(case_id):
    """Graphs that only removed nodes reuse an earlier order instead of sorting: every
    program a pass produces still lists its nodes in position order."""
    import zoo

    from fqlower.passes import default_pipeline
    from fqlower.engine.pipeline import Snapshots

    ref = zoo.case_by_id(case_id).build()
    snapshots = Snapshots()
    program = fqlower.from_fx(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    program.graph.order  # noqa: B018 - computed, so the first pass's graphs get a hint
    default_pipeline().run(program, (snapshots,))
    hinted = 0
    for _, snapshot in snapshots.programs:
        graph = snapshot.graph
        hinted += graph.order_hint is not None
        by_position = tuple(name for name, _ in sorted(graph.positions.items(), key=lambda item: item[1]))
        assert graph.order == by_position
    assert hinted, "no pass produced a hinted graph: the test checks nothing new"
