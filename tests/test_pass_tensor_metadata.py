"""The tensor-metadata pass: shape and size reads skip the dequantize, as torch 2.13's
`_lower_getattr_tensor_metadta_op` and `_lower_get_tensor_info_op`; a recorded miss
where torch would crash."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.fx import _lower_to_native_backend as torch_lower

import fqlower
from fqlower import Change, FrozenDict, Ref, SetArgs, Skip
from fqlower.compare import graph_differences, lowering_differences
from fqlower.passes.binary_ops import LOWER_BINARY_OPS
from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE
from fqlower.passes.static_modules import LOWER_STATIC_MODULES
from fqlower.passes.tensor_metadata import LOWER_TENSOR_METADATA
from fqlower.reference import ReferenceModel, reference_model, torch_lowering

PIPELINE = fqlower.Pipeline(
    "tensor-metadata-test", (LOWER_STATIC_MODULES, LOWER_BINARY_OPS, LOWER_TENSOR_METADATA, ELIMINATE_DEAD_CODE)
)
PASS = "lower-tensor-metadata"
GETATTR_RULE, INFO_RULE = "getattr-tensor-metadata", "get-tensor-info"


def read_graph(kind, target, args, kwargs=None, *, on=None):
    """x -> quantize (qx) -> dequantize (dqx) -> reader; output (reader, dqx).

    `args` is the reader's args after its first, which is dqx (or `on`: "x" for the
    float placeholder, or a constant).
    """
    root = nn.Module()
    root.register_buffer("scale", torch.tensor(0.05))
    root.register_buffer("zero_point", torch.tensor(64))
    graph = torch.fx.Graph()
    x = graph.create_node("placeholder", "x", name="x")
    scale = graph.create_node("get_attr", "scale", name="scale")
    zero_point = graph.create_node("get_attr", "zero_point", name="zero_point")
    qx = graph.create_node("call_function", torch.quantize_per_tensor, (x, scale, zero_point, torch.quint8), name="qx")
    dqx = graph.create_node("call_method", "dequantize", (qx,), name="dqx")
    receiver = dqx if on is None else x if on == "x" else on
    reader = graph.create_node(kind, target, (receiver, *args), dict(kwargs or {}), name="reader")
    graph.output((reader, dqx))
    gm = torch.fx.GraphModule(root, graph)
    gm.graph.lint()
    return gm


X = torch.randn(2, 3, 5)


def reference(gm):
    return ReferenceModel(gm, {}, {}, (X,))


def run_pass(gm):
    program = fqlower.from_fx(gm)
    return program, LOWER_TENSOR_METADATA.run(program)


def assert_equals_torch(gm):
    ref = reference(gm)
    expected = torch_lowering(ref)
    lowered = fqlower.lower(ref.module, {}, {}, pipeline=PIPELINE).module
    for example in ((X,), (torch.randn(4, 1, 2),)):
        differences = lowering_differences(expected, lowered, example)
        assert differences == [], "\n".join(differences) + "\ntorch:\n" + expected.code + "\nfqlower:\n" + lowered.code


def the_change(result, rule):
    (entry,) = result.entries
    assert isinstance(entry, Change), entry
    assert (entry.pass_name, entry.rule, entry.anchor) == (PASS, rule, "reader")
    assert dict(entry.bindings) == {"reader": "reader", "dequantize": "dqx"}
    return entry


def the_skip(result, rule):
    (entry,) = result.entries
    assert isinstance(entry, Skip), entry
    assert (entry.pass_name, entry.rule, entry.node) == (PASS, rule, "reader")
    return entry


# --------------------------------------------------------------------------- the rewrites


def test_getattr_shape_reads_the_quantized_tensor():
    gm = read_graph("call_function", getattr, ("shape",))
    program, result = run_pass(gm)
    change = the_change(result, GETATTR_RULE)
    assert change.edits == (SetArgs("reader", (Ref("qx"), "shape"), FrozenDict()),)
    assert result.program.node("reader").args == (Ref("qx"), "shape")
    assert result.program.users("dqx") == ("output",)  # the dequantize stays for its other user
    assert_equals_torch(gm)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {}), ((), {"dim": -1})],
    ids=["size()", "size(1)", "size(dim=-1)"],
)
def test_size_reads_the_quantized_tensor_and_keeps_its_other_arguments(args, kwargs):
    gm = read_graph("call_method", "size", args, kwargs)
    program, result = run_pass(gm)
    change = the_change(result, INFO_RULE)
    assert change.edits == (SetArgs("reader", (Ref("qx"), *args), FrozenDict(kwargs)),)
    node = result.program.node("reader")
    assert (node.args, dict(node.kwargs)) == ((Ref("qx"), *args), kwargs)
    assert_equals_torch(gm)


def test_shape_method_is_rewritten_as_torch_does():
    # `x.shape()` does not run (a Size is not callable), but torch rewrites it: compare graphs
    gm = read_graph("call_method", "shape", ())
    program, result = run_pass(gm)
    change = the_change(result, INFO_RULE)
    assert change.edits == (SetArgs("reader", (Ref("qx"),), FrozenDict()),)
    by_torch = copy.deepcopy(gm)
    torch_lower._lower_get_tensor_info_op(by_torch)
    by_torch.recompile()
    assert graph_differences(by_torch, fqlower.to_fx(result.program)) == []


# --------------------------------------------------------------------------- not this pattern


@pytest.mark.parametrize(
    ("kind", "target", "args", "on"),
    [
        ("call_function", getattr, ("dtype",), None),
        ("call_function", getattr, ("shape",), "x"),
        ("call_method", "size", (0,), "x"),
        ("call_method", "numel", (), None),
        ("call_method", "dim", (), None),
    ],
    ids=["getattr-dtype", "float-shape", "float-size", "numel", "dim"],
)
def test_other_reads_are_not_candidates(kind, target, args, on):
    gm = read_graph(kind, target, args, on=on)
    program, result = run_pass(gm)
    assert result.entries == () and result.program == program
    assert_equals_torch(gm)


# --------------------------------------------------------------------------- torch's failures


def without_args(gm, args):
    """The program of `gm` and a copy of `gm`'s graph (not recompiled: FX's code
    generator itself rejects such nodes) with the reader's args replaced."""
    program = fqlower.apply(fqlower.from_fx(gm), [SetArgs("reader", args, FrozenDict())])
    broken = copy.deepcopy(gm)
    next(node for node in broken.graph.nodes if node.name == "reader").args = args
    return program, broken


def test_getattr_without_attribute_name_is_a_miss_where_torch_raises_index_error():
    program, broken = without_args(read_graph("call_function", getattr, ("shape",)), (Ref("dqx"),))
    result = LOWER_TENSOR_METADATA.run(program)
    assert "args[1]" in the_skip(result, GETATTR_RULE).reason
    assert result.program == program
    with pytest.raises(IndexError):
        torch_lower._lower_getattr_tensor_metadta_op(broken)


def test_shape_of_a_constant_is_a_miss_where_torch_raises_attribute_error():
    gm = read_graph("call_function", getattr, ("shape",), on=2.5)
    program, result = run_pass(gm)
    assert "not a node" in the_skip(result, GETATTR_RULE).reason
    assert result.program == program
    with pytest.raises(AttributeError, match="'op'"):
        torch_lowering(reference(gm))


def test_size_without_receiver_is_a_miss_where_torch_raises_index_error():
    program, broken = without_args(read_graph("call_method", "size", ()), ())
    result = LOWER_TENSOR_METADATA.run(program)
    assert "no positional arguments" in the_skip(result, INFO_RULE).reason
    assert result.program == program
    with pytest.raises(IndexError):
        torch_lower._lower_get_tensor_info_op(broken)


# --------------------------------------------------------------------------- reference models


class ShapeReads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y, y.shape, y.size(), y.size(1), y.size(dim=0), getattr(y, "shape"), y.shape[2], x.shape


class OnlyShape(ShapeReads):
    """The dequantize becomes dead once the reads skip it."""

    def forward(self, x):
        y = self.conv(x)
        return y.size(1), y.shape


@pytest.mark.parametrize("model_class", [ShapeReads, OnlyShape])
def test_lowering_reference_models_equals_torch(model_class):
    torch.manual_seed(0)
    ref = reference_model(model_class(), (torch.randn(16, 3, 4, 4),), get_default_qconfig_mapping("fbgemm"))
    lowered = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope, pipeline=PIPELINE)
    rules = {entry.rule for entry in lowered.log.entries if isinstance(entry, Change) and entry.pass_name == PASS}
    assert rules == {GETATTR_RULE, INFO_RULE}, "the model must exercise both rules"
    expected = torch_lowering(ref)
    for example in (ref.example_inputs, (torch.randn(2, 3, 5, 5),)):
        differences = lowering_differences(expected, lowered.module, example)
        assert differences == [], "\n".join(differences) + "\ntorch:\n" + expected.code + "\nfqlower:\n" + lowered.module.code
    dequantizes = [node for node in lowered.module.graph.nodes if node.target == "dequantize"]
    assert all(user.target not in ("size", getattr) for node in dequantizes for user in node.users)
