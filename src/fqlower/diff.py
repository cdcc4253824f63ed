"""What a lowering changed, as text and as a picture.

    steps = snapshots(reference_gm, qconfig_map, node_name_to_scope)
    text = diff_text(steps[0][1], steps[-1][1])         # unified diff of the printed programs
    dot = diff_dot(*around(steps, "lower-binary-ops"))  # Graphviz DOT, rewritten nodes coloured
    svg = render_svg(dot)                               # needs Graphviz's `dot` program

`snapshots` runs a pipeline with the `Snapshots` instrument: the input program and
the program after every pass. Programs share structure, so keeping all of them is
cheap. Nodes are matched by name, which passes keep for the nodes they do not
remove.

The DOT source is built with the `graphviz` package, which quotes and escapes
names and labels; `render_svg` runs the `dot` program (Debian package `graphviz`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch.fx

from fqlower.errors import FqlowerError
from fqlower.ir import Build, Node, Program, format_node, format_program, from_fx
from fqlower.engine.pipeline import Pipeline, Snapshots

__all__ = ["NodeChanges", "around", "diff_dot", "diff_text", "node_changes", "render_svg", "snapshots"]

INPUT = "input"
"""The name `snapshots` gives the program before the first pass."""

# colours of the picture (fill, border)
ADDED = ("#c7f0c2", "#2e7d32")
CHANGED = ("#ffe39a", "#b26a00")
REMOVED = ("#f2f2f2", "#9e9e9e")
LABEL_WIDTH = 72


def snapshots(
    model: torch.fx.GraphModule,
    qconfig_map: Mapping[str, Any] | None = None,
    node_name_to_scope: Mapping[str, tuple[str, type]] | None = None,
    pipeline: Pipeline | None = None,
) -> list[tuple[str, Program]]:
    """`[("input", program), (pass name, program after it), ...]` for `pipeline`
    (default: fqlower's default pipeline) run on `model`, which is only read."""
    from fqlower.passes import default_pipeline

    pipeline = pipeline if pipeline is not None else default_pipeline()
    program = from_fx(model, qconfig_map, node_name_to_scope)
    recorder = Snapshots()
    pipeline.run(program, (recorder,))
    return [(INPUT, program), *recorder.programs]


def around(steps: Sequence[tuple[str, Program]], which: str | int) -> tuple[Program, Program]:
    """The programs before and after one pass of `snapshots`' result: the first pass
    named `which`, or the pass at step `which` (0-based, as change logs count steps;
    a pipeline may run a pass twice)."""
    passes = [name for name, _ in steps[1:]]
    if isinstance(which, int):
        if not 0 <= which < len(passes):
            raise FqlowerError(f"no pass at step {which}; the pipeline has steps 0 to {len(passes) - 1}")
        return steps[which][1], steps[which + 1][1]
    if which not in passes:
        listing = ", ".join(f"{step}:{name}" for step, name in enumerate(passes))
        raise FqlowerError(f"no pass named {which!r}; the pipeline's steps are {listing}")
    step = passes.index(which)
    return steps[step][1], steps[step + 1][1]


@attrs.frozen
class NodeChanges:
    """Node names, in program order: only in `after`, in both but different, only in `before`."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def _differs(name: str, before: Program, after: Program) -> bool:
    old, new = before.node(name), after.node(name)
    if format_node(old, before) != format_node(new, after):
        return True
    if new.op == "call_module":
        return before.modules.get(old.target) is not after.modules.get(new.target)
    if new.op == "get_attr":
        return before.constants.get(old.target) is not after.constants.get(new.target)
    return False


def node_changes(before: Program, after: Program) -> NodeChanges:
    """Which nodes `after` added, changed (target, arguments, module or constant) or removed."""
    return NodeChanges(
        added=tuple(name for name in after.graph.order if name not in before),
        changed=tuple(name for name in after.graph.order if name in before and _differs(name, before, after)),
        removed=tuple(name for name in before.graph.order if name not in after),
    )


def diff_text(before: Program, after: Program, *, before_name: str = "before", after_name: str = "after", context: int = 3) -> str:
    """A unified diff of the printed programs; empty when they print the same."""
    lines = difflib.unified_diff(
        format_program(before).splitlines(),
        format_program(after).splitlines(),
        fromfile=before_name,
        tofile=after_name,
        n=context,
        lineterm="",
    )
    text = "\n".join(lines)
    return text + "\n" if text else ""


# --- the picture -------------------------------------------------------------------------------


def _kind(node: Node, program: Program) -> str:
    module = program.modules.get(node.target)
    if isinstance(module, Build):
        return ".".join(module.factory.split(".")[-2:])  # e.g. Linear.from_reference
    return type(module).__name__


def _label(node: Node, program: Program) -> tuple[str, str]:
    """(label, tooltip): the node's printed line, shortened, and with its module kind below."""
    line = format_node(node, program)
    call = line.split("  # ", 1)[0]
    lines = [call if len(call) <= LABEL_WIDTH else call[: LABEL_WIDTH - 1] + "…"]
    if node.op == "call_module":
        lines.append(_kind(node, program))
    return "\n".join(lines), line


def _visible(before: Program, after: Program, changes: NodeChanges, context: int | None) -> set[str]:
    everything = set(after.graph.nodes) | set(changes.removed)
    if context is None:
        return everything
    neighbours: dict[str, set[str]] = {name: set() for name in everything}
    for program in (before, after):
        for node in program.nodes():
            for used in node.refs():
                neighbours[node.name].add(used)
                neighbours[used].add(node.name)
    seen = set(changes.added) | set(changes.changed) | set(changes.removed)
    frontier = set(seen)
    for _ in range(max(context, 0)):
        frontier = {other for name in frontier for other in neighbours[name]} - seen
        seen |= frontier
    return seen


def diff_dot(before: Program, after: Program, *, context: int | None = None, title: str | None = None) -> str:
    """Graphviz DOT source of `after` with the rewrite highlighted: added nodes green,
    changed nodes orange, removed nodes (drawn from `before`, with their old edges)
    grey and dashed. With `context`, only highlighted nodes and those within
    `context` edges of them are drawn. Each node's tooltip is its full printed line."""
    import graphviz

    changes = node_changes(before, after)
    visible = _visible(before, after, changes, context)
    hidden = len(set(after.graph.nodes) | set(changes.removed)) - len(visible)
    caption = [title or "fqlower diff"]
    caption.append(f"{len(changes.added)} added (green), {len(changes.changed)} changed (orange), {len(changes.removed)} removed (grey, dashed)")
    if hidden:
        caption.append(f"{hidden} nodes farther than {context} edge(s) from a change not shown")
    dot = graphviz.Digraph(
        "fqlower_diff",
        graph_attr={"rankdir": "TB", "labelloc": "t", "fontname": "Helvetica", "label": _text("\n".join(caption))},
        node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white", "fontname": "Courier", "fontsize": "10"},
        edge_attr={"arrowsize": "0.6"},
    )
    added, changed = set(changes.added), set(changes.changed)
    for node in after.nodes():
        if node.name not in visible:
            continue
        label, tooltip = _label(node, after)
        attributes: dict[str, str] = {}
        if node.name in added or node.name in changed:
            fill, border = ADDED if node.name in added else CHANGED
            attributes = {"fillcolor": fill, "color": border, "penwidth": "2"}
        dot.node(node.name, _text(label), tooltip=_text(tooltip), **attributes)
        for used in node.refs():
            if used in visible:
                dot.edge(used, node.name)
    fill, border = REMOVED
    for name in changes.removed:
        if name not in visible:
            continue
        node = before.node(name)
        label, tooltip = _label(node, before)
        dot.node(name, _text(label), tooltip=_text(f"removed: {tooltip}"), style="rounded,filled,dashed", fillcolor=fill, color=border, fontcolor=border)
        for used in node.refs():
            if used in visible:
                dot.edge(used, name, style="dashed", color=border)
        for user in before.users(name):
            if user in visible and user in after and user not in changes.removed:
                dot.edge(name, user, style="dashed", color=border)
    return dot.source


def _text(value: str) -> str:
    """A DOT label: backslashes and `<...>` literal, newlines as line breaks."""
    import graphviz

    return graphviz.nohtml("\\n".join(graphviz.escape(line) for line in value.split("\n")))


def render_svg(dot_source: str) -> bytes:
    """The SVG Graphviz's `dot` program draws for `dot_source`."""
    import graphviz

    try:
        return graphviz.pipe("dot", "svg", dot_source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound:
        raise FqlowerError(
            "rendering SVG needs Graphviz's `dot` program, which is not on PATH; install Graphviz "
            "(Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`, conda: "
            "`conda install graphviz`) or write the DOT source and render it elsewhere"
        ) from None
    except graphviz.CalledProcessError as error:
        detail = (error.stderr or b"").decode("utf-8", "replace").strip() if isinstance(error.stderr, bytes) else str(error.stderr or "")
        raise FqlowerError(f"dot could not render the graph: {detail or error}") from None
