"""fqlower.diff: snapshots of every pass, text diffs, Graphviz pictures."""

from __future__ import annotations

import operator
import shutil
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.fx

import fqlower
from fqlower.compare import ModelSnapshot
from fqlower.diff import (
    ADDED,
    CHANGED,
    REMOVED,
    around,
    diff_dot,
    diff_text,
    node_changes,
    render_svg,
    snapshots,
)
from fqlower.errors import FqlowerError
from fqlower.examples import demo_reference_model
from fqlower.ir import format_node

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not installed (apt-get install graphviz; `make test` installs it when run as root)",
)
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def demo():
    return demo_reference_model()


@pytest.fixture(scope="module")
def steps(demo):
    return snapshots(demo.module, demo.qconfig_map, demo.node_name_to_scope)


def test_snapshots_are_the_input_then_the_program_after_every_pass(demo, steps):
    snapshot = ModelSnapshot.of(demo.module)
    again = snapshots(demo.module, demo.qconfig_map, demo.node_name_to_scope)
    assert [name for name, _ in again] == ["input", *fqlower.default_pipeline().names]
    first, last = again[0][1], again[-1][1]
    assert fqlower.fingerprint(first) == fqlower.fingerprint(fqlower.from_fx(demo.module, demo.qconfig_map, demo.node_name_to_scope))
    lowering = fqlower.lower(demo.module, demo.qconfig_map, demo.node_name_to_scope)
    assert fqlower.fingerprint(last) == lowering.log.header.output
    # each program is the one the log fingerprinted after its pass
    assert [fqlower.fingerprint(program) for _, program in again[1:]] == [record.fingerprint for record in lowering.log.header.passes]
    assert not snapshot.differences(demo.module)


def test_snapshots_share_structure(steps):
    # a pass that changes nothing hands on the same program; untouched nodes are the same objects
    before, after = around(steps, "lower-dynamic-modules")
    assert before is after
    before, after = around(steps, "lower-binary-ops")
    assert before.graph.nodes["x"] is after.graph.nodes["x"]


def test_snapshots_take_a_pipeline(demo):
    pipeline = fqlower.default_pipeline().only("lower-static-modules")
    found = snapshots(demo.module, demo.qconfig_map, demo.node_name_to_scope, pipeline=pipeline)
    assert [name for name, _ in found] == ["input", "lower-static-modules"]


def test_around_by_name_step_and_errors(steps):
    assert around(steps, "eliminate-dead-code") == (steps[9][1], steps[10][1])  # first of two
    assert around(steps, 11) == (steps[11][1], steps[12][1])
    with pytest.raises(FqlowerError, match=r"no pass named 'nope'; the pipeline's steps are 0:lower-static-modules, "):
        around(steps, "nope")
    with pytest.raises(FqlowerError, match="no pass at step 12; the pipeline has steps 0 to 11"):
        around(steps, 12)


def test_diff_text_of_a_pass_is_a_readable_unified_diff(steps):
    before, after = around(steps, "lower-binary-ops")
    text = diff_text(before, after, before_name="before lower-binary-ops", after_name="after")
    lines = text.splitlines()
    assert lines[:2] == ["--- before lower-binary-ops", "+++ after"]
    assert lines[2].startswith("@@ ")
    assert [line for line in lines[3:] if line[:1] in "+-"] == [
        "-%add = operator.add(%dequantize_2, %dequantize_1)",
        "-%relu = torch.nn.functional.relu(%add, inplace=False)",
        "-%quantize_per_tensor_3 = torch.quantize_per_tensor(%relu, %_scale_0, %_zero_point_0, torch.quint8)",
        "+%quantize_per_tensor_3 = torch.ops.quantized.add_relu(%block_0, %stem_0, %_scale_0, %_zero_point_0)",
    ]
    assert " %_scale_0 = get_attr _scale_0" in lines  # context lines
    assert text.endswith("\n")


def test_diff_text_context_and_no_difference(steps):
    before, after = around(steps, "lower-binary-ops")
    assert not any(line.startswith(" ") for line in diff_text(before, after, context=0).splitlines())
    same = around(steps, "lower-dynamic-modules")
    assert diff_text(*same) == ""


def test_node_changes(steps):
    before, after = around(steps, "lower-binary-ops")
    assert node_changes(before, after) == fqlower.diff.NodeChanges(added=(), changed=("quantize_per_tensor_3",), removed=("add", "relu"))
    folded = node_changes(*around(steps, "fold-weights"))
    assert folded.added == ("_packed_weight_0",) and "linear" in folded.changed
    assert not node_changes(steps[0][1], steps[0][1])
    # a module swapped behind an unchanged line counts as changed
    whole = node_changes(steps[0][1], steps[-1][1])
    assert {"stem_0", "block_0", "head"} <= set(whole.changed)


def test_diff_dot_highlights_added_changed_and_removed(steps):
    before, after = around(steps, "lower-binary-ops")
    dot = diff_dot(before, after, title="lower-binary-ops")
    fill, border = CHANGED
    changed = next(line for line in dot.splitlines() if line.strip().startswith("quantize_per_tensor_3 ["))
    assert f'fillcolor="{fill}"' in changed and f'color="{border}"' in changed
    assert 'label="%quantize_per_tensor_3 = torch.ops.quantized.add_relu(%block_0, %stem_0' in changed
    removed = next(line for line in dot.splitlines() if line.strip().startswith("add ["))
    assert "dashed" in removed and f'fillcolor="{REMOVED[0]}"' in removed
    # removed nodes keep their old edges, dashed; live edges are plain
    assert f'dequantize_2 -> add [color="{REMOVED[1]}" style=dashed]' in dot
    assert f'relu -> quantize_per_tensor_3 [color="{REMOVED[1]}" style=dashed]' in dot
    assert "\tblock_0 -> quantize_per_tensor_3\n" in dot
    assert "0 added (green), 1 changed (orange), 2 removed (grey, dashed)" in dot
    added = diff_dot(*around(steps, "fold-weights"))
    assert f'fillcolor="{ADDED[0]}"' in next(line for line in added.splitlines() if line.strip().startswith("_packed_weight_0 ["))


def test_diff_dot_context_shows_only_the_neighbourhood(steps):
    before, after = around(steps, "lower-binary-ops")
    near = diff_dot(before, after, context=1)
    assert "\thead [" not in near and "\tx [" not in near
    assert "\tblock_0 [" in near and "\tdequantize_2 [" in near  # one edge from a change
    assert "nodes farther than 1 edge(s) from a change not shown" in near
    assert "\thead [" in diff_dot(before, after)


def _awkward_program() -> fqlower.Program:
    """Labels with quotes, backslashes, braces and <html-like> text."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    y = graph.call_function(operator.getitem, (x, 0))
    weird = graph.call_function(torch.einsum, ('i"j\\<k>{l}->i', y))
    graph.output(weird)
    return fqlower.from_fx(torch.fx.GraphModule(torch.nn.Module(), graph))


def test_diff_dot_is_escaped_by_the_graphviz_package():
    program = _awkward_program()
    dot = diff_dot(program, program, title='a "quoted" <title>')
    # the line printed is torch.einsum('i"j\\<k>{l}->i', %getitem): in DOT the quote is
    # escaped and each backslash doubled, so that dot draws them as they are
    assert """torch.einsum('i\\"j\\\\\\\\<k>{l}->i', %getitem)""" in dot
    assert 'label="a \\"quoted\\" <title>' in dot


@needs_dot
def test_render_svg_parses_and_names_the_highlighted_nodes(steps):
    before, after = around(steps, "lower-binary-ops")
    svg = render_svg(diff_dot(before, after))
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    titles = {element.text for element in root.iter(f"{SVG}title")}
    assert {"quantize_per_tensor_3", "add", "relu"} <= titles
    texts = " ".join(element.text or "" for element in root.iter(f"{SVG}text"))
    assert "torch.ops.quantized.add_relu" in texts


@needs_dot
def test_render_svg_keeps_awkward_labels_literal():
    program = _awkward_program()
    root = ET.fromstring(render_svg(diff_dot(program, program)))
    texts = [element.text or "" for element in root.iter(f"{SVG}text")]
    assert format_node(program.node("einsum"), program) in texts


@needs_dot
def test_render_svg_reports_bad_dot():
    with pytest.raises(FqlowerError, match="dot could not render the graph"):
        render_svg("digraph { a -> }")


def test_render_svg_without_dot_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    with pytest.raises(FqlowerError, match=r"needs Graphviz's `dot` program.*apt-get install graphviz"):
        render_svg("digraph { a -> b }")
