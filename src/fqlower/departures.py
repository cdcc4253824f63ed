"""Where fqlower's lowering departs from torch's on purpose, as data: what differential tests accept.

A departure is a change-log entry whose reason code is one of `fqlower.reasons.DEPARTURES`
(`torch-crashes`, `torch-model-crashes`, `torch-wrong-result`): a `Skip` that leaves a node
torch would lower wrongly, or a `Change` that rewrites a node otherwise than torch (a relu
kept). Nothing else excuses a difference from torch: no text of a reason is read.

`differences_outside(theirs, ours, departed)` is what the laws accept: the differences
between torch's lowered graph and fqlower's that lie outside the *regions* of the departed
nodes. A region is the departed node, the nodes next to it (its inputs and users), and
the quantization glue reachable from those through other glue nodes (get_attr,
dequantize, quantize, `.to`, prepack calls): exactly what torch would have rewritten
around the node. The two graphs are aligned by a longest-common-subsequence match of
their nodes' (op, target); every unaligned node of fqlower's must lie in a region (an
unaligned node of torch's must sit next to one), every aligned pair outside the regions
must read the aligned counterparts of what it reads, and module types and state_dict
entries may differ only at the modules and attributes the regions' nodes use.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from fqlower.log import Caution, ChangeLog, Skip
from fqlower.compare import module_types, values_equal
from fqlower.log.fingerprint import describe
from fqlower.reasons import is_departure

if TYPE_CHECKING:
    from fqlower.api import Lowering

GLUE_HOPS = 3  # how far a region extends through glue nodes from a departed node's neighbours
REGION = "<departed region>"


def departures(lowering: Lowering | ChangeLog) -> list[str]:
    """One line per departure entry of the lowering's log (empty when it follows torch everywhere)."""
    found = []
    for entry in _log(lowering).entries:
        if isinstance(entry, Caution) or not is_departure(entry.code):
            continue
        if isinstance(entry, Skip):
            found.append(f"[{entry.code}] skip {entry.rule} at {entry.node!r}: {entry.reason}")
        else:
            found.append(f"[{entry.code}] change {entry.rule} at {entry.anchor!r}: {entry.reason}")
    return found


def departed_nodes(lowering: Lowering | ChangeLog) -> set[str]:
    """The nodes the departure entries name (a skip's node; a change's anchor and bindings)."""
    names: set[str] = set()
    for entry in _log(lowering).entries:
        if isinstance(entry, Caution) or not is_departure(entry.code):
            continue
        if isinstance(entry, Skip):
            names.add(entry.node)
        else:
            names.add(entry.anchor)
            names.update(entry.bindings.values())
    return names


def _log(lowering: Lowering | ChangeLog) -> ChangeLog:
    return lowering if isinstance(lowering, ChangeLog) else lowering.log


def _is_glue(node: torch.fx.Node) -> bool:
    if node.op == "get_attr":
        return True
    if node.op == "call_method":
        return node.target in ("dequantize", "to")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
        return name.startswith("quantize_per_") or "prepack" in str(node.target)
    return False


def _neighbours(node: torch.fx.Node) -> list[torch.fx.Node]:
    return [*node.all_input_nodes, *node.users]


def region(gm: torch.fx.GraphModule, departed: set[str]) -> set[str]:
    """The departed nodes of `gm`, their neighbours, and the glue around those (see the module docstring)."""
    nodes = {node.name: node for node in gm.graph.nodes}
    inside = {name for name in departed if name in nodes}
    for name in list(inside):
        inside.update(neighbour.name for neighbour in _neighbours(nodes[name]))
    frontier = set(inside)
    for _ in range(GLUE_HOPS):
        frontier = {
            neighbour.name
            for name in frontier
            for neighbour in _neighbours(nodes[name])
            if neighbour.name not in inside and _is_glue(neighbour)
        }
        inside |= frontier
    return inside


def _label(node: torch.fx.Node) -> tuple[str, str]:
    return (node.op, "placeholder" if node.op == "placeholder" else repr(describe(node.target)))


def _reads(node: torch.fx.Node, rename: Any) -> str:
    args = torch.fx.node.map_arg((node.args, dict(node.kwargs)), rename)
    return repr(describe(args))


def differences_outside(theirs: torch.fx.GraphModule, ours: torch.fx.GraphModule, departed: set[str]) -> list[str]:
    """The differences between torch's lowering and fqlower's outside the departed nodes' regions."""
    ours_region = region(ours, departed)
    a_nodes, b_nodes = list(theirs.graph.nodes), list(ours.graph.nodes)
    matcher = difflib.SequenceMatcher(None, [_label(n) for n in a_nodes], [_label(n) for n in b_nodes], autojunk=False)
    aligned: dict[str, str] = {}  # torch's node name -> fqlower's
    theirs_region: set[str] = set()
    found = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            aligned.update((a.name, b.name) for a, b in zip(a_nodes[i1:i2], b_nodes[j1:j2]))
            continue
        outside = [b.name for b in b_nodes[j1:j2] if b.name not in ours_region]
        near = {b_nodes[j].name for j in (j1 - 1, j2) if 0 <= j < len(b_nodes)}
        if outside or (j1 == j2 and not near & ours_region):
            found.append(
                f"torch has {[a.format_node() for a in a_nodes[i1:i2]]} where fqlower has "
                f"{[b.format_node() for b in b_nodes[j1:j2]]}, outside the departed nodes' regions"
            )
        theirs_region.update(a.name for a in a_nodes[i1:i2])
    theirs_region.update(a for a, b in aligned.items() if b in ours_region)
    by_name = {node.name: node for node in b_nodes}
    for a in a_nodes:
        b_name = aligned.get(a.name)
        if b_name is None or b_name in ours_region:
            continue
        b = by_name[b_name]
        # what a node reads inside a region stands as one placeholder on both sides: the
        # region was rewritten otherwise, but every read outside it must match
        theirs_reads = _reads(a, lambda n: REGION if n.name in theirs_region else aligned.get(n.name, f"?{n.name}"))
        if theirs_reads != _reads(b, lambda n: REGION if n.name in ours_region else n.name):
            found.append(f"{b.format_node()} reads otherwise than torch's {a.format_node()}")
    paths = _used_paths(theirs, theirs_region) | _used_paths(ours, ours_region)
    found += _module_differences(theirs, ours, paths) + _state_differences(theirs, ours, paths)
    return found


def _used_paths(gm: torch.fx.GraphModule, names: set[str]) -> set[str]:
    return {str(node.target) for node in gm.graph.nodes if node.name in names and node.op in ("call_module", "get_attr")}


def _covered(key: str, paths: set[str]) -> bool:
    return any(key == path or key.startswith(path + ".") for path in paths)


def _module_differences(theirs: torch.nn.Module, ours: torch.nn.Module, paths: set[str]) -> list[str]:
    ta, tb = module_types(theirs), module_types(ours)
    return [
        f"module at {path!r}: {ta.get(path)} vs {tb.get(path)}, outside the departed nodes' regions"
        for path in sorted(ta.keys() | tb.keys())
        if ta.get(path) is not tb.get(path) and not _covered(path, paths)
    ]


def _state_differences(theirs: torch.nn.Module, ours: torch.nn.Module, paths: set[str]) -> list[str]:
    sa, sb = theirs.state_dict(), ours.state_dict()
    found = []
    for key in sorted(sa.keys() | sb.keys()):
        if _covered(key, paths):
            continue
        if key not in sa or key not in sb:
            found.append(f"state_dict[{key!r}] only in {'fqlower' if key in sb else 'torch'}'s, outside the departed nodes' regions")
        elif not values_equal(sa[key], sb[key]):
            found.append(f"state_dict[{key!r}] differs, outside the departed nodes' regions")
    return found


def quantized_calls(gm: torch.fx.GraphModule) -> int:
    """How many nodes run natively (a quantized op or a non-reference quantized module)."""
    from fqlower.explain import native_kind
    from fqlower.ir import from_fx

    program = from_fx(gm)
    return sum(native_kind(program, node) is not None for node in program.nodes())
