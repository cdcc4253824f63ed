"""Replay of change logs: same result as lowering, refusal of every kind of tampering,
provenance on every node."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import zoo

import fqlower
from fqlower import ChangeLog, ReplayMismatch
from fqlower.log import PROVENANCE
from fqlower.compare import state_dict_differences, values_equal

CASE = "ResidualBlock-static_fbgemm"


@pytest.fixture(scope="module")
def lowered():
    reference = zoo.case_by_id(CASE).build()
    return reference, fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)


def maps(reference):
    return reference.qconfig_map, reference.node_name_to_scope


def state_bytes(module):
    buffer = io.BytesIO()
    torch.save({key: value for key, value in module.state_dict().items() if isinstance(value, torch.Tensor)}, buffer)
    return buffer.getvalue()


def test_replay_equals_lowering(lowered):
    reference, lowering = lowered
    replayed = fqlower.replay(reference.module, lowering.log.dumps(), *maps(reference))
    assert fqlower.fingerprint(replayed.program) == fqlower.fingerprint(lowering.program) == lowering.log.header.output
    assert state_dict_differences(lowering.module, replayed.module) == []
    assert state_bytes(lowering.module) == state_bytes(replayed.module)
    assert replayed.module.code == lowering.module.code
    x = reference.example_inputs
    assert values_equal(replayed.module(*x), lowering.module(*x))


def test_every_change_carries_structural_hashes(lowered):
    _, lowering = lowered
    for change in lowering.log.changes:
        assert len(change.matched) == 16 and len(change.produced) == 16


def test_replay_in_a_fresh_process_reproduces_the_fingerprint(lowered, tmp_path):
    reference, lowering = lowered
    log_path = tmp_path / "changes.jsonl"
    log_path.write_text(lowering.log.dumps())
    script = (
        "import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1]);"
        "import zoo, fqlower;"
        f"r = zoo.case_by_id({CASE!r}).build();"
        "out = fqlower.replay(r.module, open(sys.argv[2]).read(), r.qconfig_map, r.node_name_to_scope);"
        "sys.stdout.write(fqlower.fingerprint(out.program))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(log_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout == lowering.log.header.output


def lines_of(log):
    header, *entries = log.dumps().splitlines()
    return header, entries


def test_replay_refuses_a_model_with_an_edited_weight(lowered):
    reference, lowering = lowered
    import copy

    edited = copy.deepcopy(reference.module)
    with torch.no_grad():
        next(p for p in edited.parameters()).view(-1)[0] += 0.5
    with pytest.raises(ReplayMismatch, match="recorded on a different program"):
        fqlower.replay(edited, lowering.log, *maps(reference))


def test_replay_refuses_a_log_with_a_removed_change(lowered):
    reference, lowering = lowered
    header, entries = lines_of(lowering.log)
    changes = [i for i, line in enumerate(entries) if json.loads(line)["kind"] == "change"]
    del entries[changes[0]]
    with pytest.raises(ReplayMismatch, match=r"change 1 .*(hashes to|does not apply)|after pass 0"):
        fqlower.replay(reference.module, "\n".join([header, *entries]), *maps(reference))


def test_replay_refuses_a_log_with_reordered_changes(lowered):
    reference, lowering = lowered
    header, entries = lines_of(lowering.log)
    changes = [i for i, line in enumerate(entries) if json.loads(line)["kind"] == "change"]
    first, second = changes[0], changes[1]
    entries[first], entries[second] = entries[second], entries[first]
    with pytest.raises(ReplayMismatch, match=r"change 1 \(.*\): the subgraph it matched hashes to"):
        fqlower.replay(reference.module, "\n".join([header, *entries]), *maps(reference))


def test_replay_refuses_a_log_with_an_edited_scale(lowered):
    reference, lowering = lowered
    header, entries = lines_of(lowering.log)
    scales = [n.target for n in reference.module.graph.nodes if n.op == "get_attr" and "scale" in n.target]
    # make a module spec read another scale constant: what it produces no longer fits the log
    target = next(i for i, line in enumerate(entries) if "from_reference" in line)
    original = next(scale for scale in scales if f'{{"$original":"{scale}"}}' in entries[target])
    other = next(scale for scale in scales if scale != original)
    entries[target] = entries[target].replace(f'{{"$original":"{original}"}}', f'{{"$original":"{other}"}}')
    with pytest.raises(ReplayMismatch, match="the subgraph it produced hashes to"):
        fqlower.replay(reference.module, "\n".join([header, *entries]), *maps(reference))


def test_replay_refuses_the_log_of_another_model(lowered):
    reference, lowering = lowered
    other = zoo.case_by_id("ConvBnReLU-static_fbgemm").build()
    with pytest.raises(ReplayMismatch, match="recorded on a different program"):
        fqlower.replay(other.module, lowering.log, other.qconfig_map, other.node_name_to_scope)


def test_every_lowered_node_knows_where_it_came_from(lowered):
    reference, lowering = lowered
    reference_names = {node.name for node in reference.module.graph.nodes}
    changed = 0
    for node in lowering.module.graph.nodes:
        provenance = node.meta[PROVENANCE]
        assert set(provenance["from"]) <= reference_names, node.name
        if provenance["pass"] is not None:
            changed += 1
            change = next(c for c in lowering.log.changes if c.anchor == provenance["anchor"] and c.pass_name == provenance["pass"])
            assert change.rule == provenance["rule"]
    assert changed > 0
    conv = next(node for node in lowering.module.graph.nodes if node.op == "call_module" and "conv" in node.name)
    assert conv.meta[PROVENANCE]["pass"] == "lower-static-modules"
    assert len(conv.meta[PROVENANCE]["from"]) >= 3  # quantize, module, dequantize, scale, zero point
