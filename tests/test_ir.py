"""Importing FX graphs: what the IR holds, what from_fx refuses, printing."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn as nn
from helpers import TinyNet, tiny_gm, tiny_program

import fqlower
from fqlower import FrozenDict, ListArg, Ref, UnsupportedInput
from fqlower.compare import ModelSnapshot


def test_nodes_hold_refs_and_immutable_containers():
    class Cat(nn.Module):
        def forward(self, x):
            y = torch.cat([x, x], dim=1)
            return y[:, 1:3], {"n": y.size(0)}

    program = fqlower.from_fx(torch.fx.symbolic_trace(Cat()))
    cat = program.node("cat")
    assert cat.args == (ListArg((Ref("x"), Ref("x"))),)
    assert cat.kwargs == FrozenDict({"dim": 1})
    getitem = program.node("getitem")
    assert getitem.args == (Ref("cat"), (slice(None, None, None), slice(1, 3, None)))
    output = program.node("output")
    assert isinstance(output.args[0][1], FrozenDict)
    assert program.users("cat") == ("getitem", "size")
    assert program.node("cat").refs() == ("x",)


def test_tables_hold_the_input_objects_by_reference():
    gm = tiny_gm()
    program = fqlower.from_fx(gm, {"fc": None}, {"fc": ("fc", nn.Linear)})
    assert program.modules["fc"] is gm.fc
    assert program.constants["offset"] is gm.offset
    assert program.originals["fc"] is gm.fc
    assert program.qconfig == {"fc": None}
    assert program.scope["fc"] == ("fc", nn.Linear)


def test_program_is_immutable():
    program = tiny_program()
    with pytest.raises(Exception):
        program.graph = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        program.modules["fc"] = None  # type: ignore[index]


def test_from_fx_rejects_a_module_that_is_not_a_graph_module():
    with pytest.raises(UnsupportedInput, match="expected a torch.fx.GraphModule, got TinyNet"):
        fqlower.from_fx(TinyNet())


def test_from_fx_rejects_maps_that_are_not_mappings():
    with pytest.raises(UnsupportedInput, match="qconfig_map must be a mapping"):
        fqlower.from_fx(tiny_gm(), qconfig_map=[("fc", None)])


def test_from_fx_names_a_missing_module():
    gm = tiny_gm()
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    node.target = "gone"
    gm.recompile()
    with pytest.raises(UnsupportedInput) as raised:
        fqlower.from_fx(gm)
    assert raised.value.node == "fc" and "'gone'" in raised.value.message


def test_from_fx_names_a_missing_attribute():
    gm = tiny_gm()
    node = next(n for n in gm.graph.nodes if n.op == "get_attr")
    node.target = "nothing.here"
    with pytest.raises(UnsupportedInput, match="reads attribute 'nothing.here'") as raised:
        fqlower.from_fx(gm)
    assert raised.value.node == "offset"


def test_from_fx_rejects_a_use_before_definition():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    late = graph.call_function(torch.neg, (x,))
    early = graph.call_function(torch.relu, (x,))
    late.args = (early,)  # now 'neg' reads 'relu', which comes after it
    graph.output(late)
    gm = torch.fx.GraphModule(nn.Module(), graph)
    with pytest.raises(UnsupportedInput, match="uses 'relu', which is not defined before it") as raised:
        fqlower.from_fx(gm)
    assert raised.value.node == "neg"


def test_from_fx_does_not_touch_the_model():
    gm = tiny_gm()
    snapshot = ModelSnapshot.of(gm)
    fqlower.to_fx(fqlower.from_fx(gm))
    assert snapshot.differences(gm) == []


def test_frozen_dict_keeps_order_and_compares_as_a_dict():
    d = FrozenDict([("b", 1), ("a", 2)])
    assert list(d) == ["b", "a"]
    assert d == {"a": 2, "b": 1} and hash(d) == hash(FrozenDict({"a": 2, "b": 1}))
    assert list(d.set("b", 5).items()) == [("b", 5), ("a", 2)]
    assert list(d.set("c", 3)) == ["b", "a", "c"]
    assert d.remove("b") == {"a": 2}
    assert d == FrozenDict([("b", 1), ("a", 2)])


def test_format_program_reads_like_the_model():
    text = fqlower.format_program(tiny_program())
    assert text.splitlines() == [
        "%x = placeholder x",
        "%fc = fc(%x)  # Linear",
        "%relu = torch.relu(%fc)",
        "%add = operator.add(%relu, %x)",
        "%offset = get_attr offset",
        "%add_1 = operator.add(%add, %offset)",
        "return %add_1",
    ]
    assert operator.add is tiny_program().node("add").target


class _Shadowing(torch.nn.Module):
    """A module whose class answers some names itself, before its tables would."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.ReLU()
        self.register_buffer("w", torch.zeros(2))

    @property
    def inner_alias(self) -> torch.nn.Module:  # a property resolves through the class
        return self.inner

    def __getattr__(self, name: str):  # overrides Module.__getattr__: 'w' is answered here
        if name == "w" and "w" in self._buffers:
            return self._buffers["w"] + 1
        return super().__getattr__(name)


def test_from_fx_looks_modules_and_attributes_up_as_getattr_does():
    root = torch.nn.Module()
    root.sub = _Shadowing()
    root.offset = torch.nn.Parameter(torch.ones(2))
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    w = graph.get_attr("sub.w")
    offset = graph.get_attr("offset")
    y = graph.call_module("sub.inner_alias", (x,))
    z = graph.call_module("sub.inner", (y,))
    graph.output(graph.call_function(torch.add, (graph.call_function(torch.add, (z, w)), offset)))
    gm = torch.fx.GraphModule(root, graph)
    gm.sub = root.sub  # GraphModule copied the targets into plain modules: put the class back
    program = fqlower.from_fx(gm)
    assert program.modules["sub.inner"] is gm.get_submodule("sub.inner")
    assert program.modules["sub.inner_alias"] is gm.get_submodule("sub.inner_alias")
    assert program.constants["offset"] is gm.offset
    # the class's own __getattr__ answered, as getattr(gm.sub, 'w') does: ones, not the zero buffer
    assert torch.equal(program.constants["sub.w"], torch.ones(2))
    assert torch.equal(fqlower.to_fx(program)(torch.zeros(2)), gm(torch.zeros(2)))
