"""Where fqlower may differ from torch's lowering: the region of a departed node (the
node, its neighbours and the q/dq/get_attr glue around it), and `differences_outside`,
which reports every graph, module and state difference from torch outside such regions.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn

from fqlower.departures import differences_outside, region

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torch.*", "ignore::DeprecationWarning", "ignore::FutureWarning")


class Graph:
    """A hand-built FX graph whose nodes get the names given, over `root`."""

    def __init__(self, root: nn.Module | None = None) -> None:
        self.graph = torch.fx.Graph()
        self.root = root if root is not None else nn.Module()

    def add(self, name, op, target, *args, **kwargs):
        node = self.graph.create_node(op, target, args, kwargs, name=name)
        assert node.name == name
        return node

    def done(self, value) -> torch.fx.GraphModule:
        self.graph.output(value)
        return torch.fx.GraphModule(self.root, self.graph)


CHAIN = (("a1", torch.neg), ("a2", torch.abs), ("a3", torch.sin), ("a4", torch.cos), ("a5", torch.exp), ("a6", torch.tanh), ("a7", torch.sigmoid))


def chain(targets=None, reads=None, drop=(), prefix=""):
    """x -> a1 -> ... -> a7 -> output (each node reads the one before); `targets`
    replaces some nodes' targets, `reads` makes a node read another, `drop` leaves
    nodes out, `prefix` renames every node."""
    g = Graph()
    nodes = {"x": g.add(f"{prefix}x", "placeholder", "x")}
    last = nodes["x"]
    for name, target in CHAIN:
        if name in drop:
            continue
        source = nodes[reads[name]] if reads and name in reads else last
        last = nodes[name] = g.add(f"{prefix}{name}", "call_function", (targets or {}).get(name, target), source)
    return g.done(last)


def test_region_is_the_departed_node_its_neighbours_and_glue():
    gm = chain()
    assert region(gm, {"a4"}) == {"a3", "a4", "a5"}
    assert region(gm, {"a1"}) == {"x", "a1", "a2"}
    assert region(gm, {"a7"}) == {"a6", "a7", "output"}
    assert region(gm, {"not-a-node"}) == set() and region(gm, set()) == set()


def test_identical_graphs_have_no_differences():
    assert differences_outside(chain(), chain(), set()) == []
    assert differences_outside(chain(), chain(), {"a4"}) == []
    # node names do not matter: the graphs are aligned by what the nodes do
    assert differences_outside(chain(), chain(prefix="o_"), set()) == []


@pytest.mark.parametrize(
    ("departed", "excused"),
    [
        (set(), False),
        ({"a1"}, False),  # far away
        ({"a3"}, False),  # two nodes away: a4, its neighbour, is no glue to extend through
        ({"not-a-node"}, False),
        ({"a5"}, True),  # the node itself
        ({"a4"}, True),  # a neighbour
        ({"a6"}, True),
    ],
)
def test_a_node_of_another_target_is_excused_only_in_a_region(departed, excused):
    theirs, ours = chain(), chain(targets={"a5": torch.log})
    found = differences_outside(theirs, ours, departed)
    if excused:
        assert found == []
    else:
        assert found and "torch.log" in found[0] and "outside the departed nodes' regions" in found[0], found


@pytest.mark.parametrize(("departed", "excused"), [(set(), False), ({"a1"}, False), ({"a3"}, True), ({"a5"}, True)])
def test_a_node_only_torch_has_is_excused_only_next_to_a_region(departed, excused):
    theirs, ours = chain(), chain(drop=("a4",))  # ours: a3 -> a5
    found = differences_outside(theirs, ours, departed)
    assert (found == []) is excused, found
    if not excused:
        assert "torch.cos" in found[0] and "fqlower has []" in found[0]


def quantized_op_graphs():
    """torch's lowering of a clamp between quantize/dequantize, and the float clamp
    fqlower leaves: fqlower has the dequantize before it and the quantize after it."""
    def root():
        module = nn.Module()
        for name, value in (("s_in", 0.02), ("z_in", 128), ("s_out", 0.01), ("z_out", 0)):
            module.register_buffer(name, torch.tensor(value))
        return module

    t = Graph(root())
    x = t.add("x", "placeholder", "x")
    q_in = t.add("q_in", "call_function", torch.quantize_per_tensor, x, t.add("s_in", "get_attr", "s_in"), t.add("z_in", "get_attr", "z_in"), torch.quint8)
    clamp = t.add("clamp", "call_function", torch.clamp, q_in, min=0.0)
    tail = t.add("tail", "call_function", torch.neg, t.add("dq_out", "call_method", "dequantize", clamp))
    theirs = t.done(tail)

    o = Graph(root())
    x = o.add("x", "placeholder", "x")
    q_in = o.add("q_in", "call_function", torch.quantize_per_tensor, x, o.add("s_in", "get_attr", "s_in"), o.add("z_in", "get_attr", "z_in"), torch.quint8)
    clamp = o.add("clamp", "call_function", torch.clamp, o.add("dq", "call_method", "dequantize", q_in), min=0.0)
    q = o.add("q", "call_function", torch.quantize_per_tensor, clamp, o.add("s_out", "get_attr", "s_out"), o.add("z_out", "get_attr", "z_out"), torch.quint8)
    tail = o.add("tail", "call_function", torch.neg, o.add("dq_out", "call_method", "dequantize", q))
    return theirs, o.done(tail)


def test_the_glue_around_a_departed_op_is_excused():
    theirs, ours = quantized_op_graphs()
    x = torch.randn(2, 3)
    with torch.no_grad():  # both run; torch's computes on the quantized tensor
        assert torch.allclose(theirs(x), ours(x), atol=0.02)
    assert region(ours, {"q"}) == {"q", "clamp", "s_out", "z_out", "dq_out", "dq", "q_in", "s_in", "z_in"}
    # the skip's node (the quantize after the op) or the op itself
    assert differences_outside(theirs, ours, {"q"}) == []
    assert differences_outside(theirs, ours, {"clamp"}) == []
    found = differences_outside(theirs, ours, set())
    assert any("%dq " in line for line in found) and any("%q " in line for line in found), found
    assert any("state_dict['s_out'] only in fqlower's" in line for line in found), found
    # the region stops at the op: departed after it, the dequantize before it is not excused
    found = differences_outside(theirs, ours, {"tail"})
    assert any("%dq " in line for line in found) and not any("%q " in line for line in found), found


@pytest.mark.parametrize(("departed", "excused"), [(set(), False), ({"a1"}, False), ({"a2"}, False), ({"a6"}, True), ({"a7"}, True)])
def test_a_rewired_arg_is_excused_only_in_a_region(departed, excused):
    theirs, ours = chain(), chain(reads={"a6": "a4"})  # ours' a6 reads a4, not a5
    found = differences_outside(theirs, ours, departed)
    if excused:
        assert found == []
    else:
        assert found == [f"{next(n for n in ours.graph.nodes if n.name == 'a6').format_node()} reads otherwise than torch's "
                         f"{next(n for n in theirs.graph.nodes if n.name == 'a6').format_node()}"]


def bypass_graph(second: str) -> torch.fx.GraphModule:
    g = Graph()
    x, y, z = (g.add(name, "placeholder", name) for name in ("x", "y", "z"))
    e = g.add("e", "call_function", torch.abs, g.add("d", "call_function", torch.neg, x))
    return g.done(g.add("u", "call_function", torch.add, e, y if second == "y" else z))


def test_a_node_reading_a_region_still_reads_its_other_args_as_torch():
    """Regression: a node reading a region node had every other argument unchecked."""
    theirs, ours = bypass_graph("y"), bypass_graph("z")
    assert region(ours, {"d"}) == {"x", "d", "e"}  # u reads e, in the region, and z, outside it
    assert differences_outside(theirs, ours, set()) != []
    assert differences_outside(theirs, ours, {"d"}) != []


def test_a_node_rewired_into_a_region_is_reported():
    """Regression: a node rewired to read a region node went unreported."""
    theirs, ours = chain(), chain(reads={"a6": "a4"})  # ours' a6 reads a4, torch's reads a5
    assert region(ours, {"a3"}) == {"a2", "a3", "a4"}  # a4 is in the region; a5 and a6 are not
    assert differences_outside(theirs, ours, {"a3"}) != []


def module_graph(act: nn.Module, weight_offset: float = 0.0, k: float = 1.0) -> torch.fx.GraphModule:
    """x + k -> m1 -> a -> b -> c -> m2 -> output, `act` at m1, a Linear at m2."""
    torch.manual_seed(0)
    root = nn.Module()
    root.m1 = act
    root.m2 = nn.Linear(4, 4)
    with torch.no_grad():
        root.m2.weight += weight_offset
    root.register_buffer("k", torch.tensor(k))
    g = Graph(root)
    h = g.add("h", "call_function", torch.add, g.add("x", "placeholder", "x"), g.add("k", "get_attr", "k"))
    c = g.add("c", "call_function", torch.sin, g.add("b", "call_function", torch.abs, g.add("a", "call_function", torch.neg, g.add("m1", "call_module", "m1", h))))
    return g.done(g.add("m2", "call_module", "m2", c))


@pytest.mark.parametrize(
    ("ours", "departed", "reported"),
    [
        # a module of another type: only where a region's node calls it
        (lambda: module_graph(nn.Hardtanh()), set(), "module at 'm1'"),
        (lambda: module_graph(nn.Hardtanh()), {"m2"}, "module at 'm1'"),
        (lambda: module_graph(nn.Hardtanh()), {"m1"}, None),
        (lambda: module_graph(nn.Hardtanh()), {"a"}, None),  # m1 is a's input, in a's region
        # another parameter value: only in a module a region's node calls
        (lambda: module_graph(nn.ReLU(), weight_offset=1.0), {"m1"}, "state_dict['m2.weight'] differs"),
        (lambda: module_graph(nn.ReLU(), weight_offset=1.0), {"m2"}, None),
        (lambda: module_graph(nn.ReLU(), weight_offset=1.0), {"c"}, None),
        # another buffer value: only where a region's get_attr reads it
        (lambda: module_graph(nn.ReLU(), k=2.0), {"m2"}, "state_dict['k'] differs"),
        (lambda: module_graph(nn.ReLU(), k=2.0), {"h"}, None),
    ],
)
def test_module_types_and_state_may_differ_only_at_paths_a_region_uses(ours, departed, reported):
    theirs = module_graph(nn.ReLU())
    found = differences_outside(theirs, ours(), departed)
    if reported is None:
        assert found == []
    else:
        assert len(found) == 1 and reported in found[0] and "outside the departed nodes' regions" in found[0], found


def test_a_state_entry_only_one_side_has_is_reported_outside_a_region():
    theirs, ours = module_graph(nn.ReLU()), module_graph(nn.ReLU())
    ours.register_buffer("extra", torch.tensor(1.0))
    assert differences_outside(theirs, ours, {"a"}) == ["state_dict['extra'] only in fqlower's, outside the departed nodes' regions"]
    assert differences_outside(ours, theirs, {"a"}) == ["state_dict['extra'] only in torch's, outside the departed nodes' regions"]
