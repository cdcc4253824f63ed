"""The comparison helpers report every kind of difference, and none for equal models.

Differential and purity tests pass when these helpers find nothing, so each helper is
shown here to find each kind of difference it is responsible for, with the message
it gives: a helper that silently found nothing would make all those tests vacuous.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.fx
import torch.nn as nn
from torch.ao.quantization.fx._lower_to_native_backend import _save_packed_weight

from fqlower.compare import (
    ModelSnapshot,
    graph_differences,
    lowering_differences,
    module_type_differences,
    state_dict_differences,
    values_equal,
)

X = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))


def traced(forward, **modules) -> torch.fx.GraphModule:
    """symbolic_trace of a module with `modules` as submodules and `forward(self, x)`."""
    root = type("Traced", (nn.Module,), {"forward": forward})()
    for name, module in modules.items():
        root.add_module(name, module)
    return torch.fx.symbolic_trace(root)


def non_persistent(gm: torch.fx.GraphModule, name: str) -> torch.fx.GraphModule:
    """`gm` with its buffer `name` made non-persistent (torch 2.13's tracing registers
    every tensor a get_attr reads as a persistent buffer; 2.14's keeps the module's own)."""
    gm.register_buffer(name, getattr(gm, name), persistent=False)
    return gm


def qtensor(int_repr=(0, 1, 2, 3), scale=0.1, zero_point=3) -> torch.Tensor:
    """A quint8 tensor with exactly these integers, scale and zero point."""
    return torch._make_per_tensor_quantized_tensor(torch.tensor(int_repr, dtype=torch.uint8), scale, zero_point)


def qweight(shape=(3, 4), changed: tuple[int, ...] | None = None, steps: int = 1) -> torch.Tensor:
    """A seeded qint8 weight; with `changed`, the same weight with one value moved by `steps`."""
    values = torch.randint(-50, 50, shape, generator=torch.Generator().manual_seed(1), dtype=torch.int8)
    if changed is not None:
        values[changed] += steps
    return torch._make_per_tensor_quantized_tensor(values, 0.05, 0)


def linear_packed(weight=None, bias=None):
    return torch.ops.quantized.linear_prepack(qweight() if weight is None else weight, bias)


def conv_packed(weight=None, stride=(1, 1)):
    weight = qweight((2, 3, 3, 3)) if weight is None else weight
    return torch.ops.quantized.conv2d_prepack(weight, torch.zeros(2), list(stride), [0, 0], [1, 1], 1)


# --- graph_differences -------------------------------------------------------------------------


def test_graph_differences_is_empty_for_equal_graphs_and_for_graphs_differing_only_in_node_names():
    """Node names are not part of the comparison: torch and fqlower name new nodes differently."""
    gm = traced(lambda self, x: torch.relu(x) + 1)
    assert graph_differences(gm, traced(lambda self, x: torch.relu(x) + 1)) == []
    renamed = copy.deepcopy(gm)
    for node in renamed.graph.nodes:
        if node.op == "call_function":
            node.name = f"renamed_{node.name}"
    renamed.recompile()
    assert "renamed_relu" in renamed.code
    assert graph_differences(gm, renamed) == []


def test_graph_differences_reports_a_different_target():
    found = graph_differences(traced(lambda self, x: torch.relu(x) + 1), traced(lambda self, x: torch.sigmoid(x) + 1))
    assert len(found) == 1 and found[0].startswith("node #1: "), found
    assert "relu" in found[0] and "sigmoid" in found[0]


@pytest.mark.parametrize(
    "left, right",
    [
        (lambda self, x: x + 1, lambda self, x: x + 2),
        (lambda self, x: x + 1, lambda self, x: x + 1.0),  # equal in Python, not in a graph
        (lambda self, x: x + 1, lambda self, x: x + True),
        (lambda self, x: torch.add(x, x, alpha=1), lambda self, x: torch.add(x, x, alpha=True)),
        (lambda self, x: torch.sum(x, dim=0), lambda self, x: torch.sum(x, dim=1)),
        (lambda self, x: torch.sum(x, dim=0), lambda self, x: torch.sum(x, dim=0, keepdim=False)),
        (lambda self, x: torch.sub(x, torch.relu(x)), lambda self, x: torch.sub(torch.relu(x), x)),  # swapped edges
    ],
    ids=["int-constant", "int-vs-float", "int-vs-bool", "int-vs-bool-kwarg", "kwarg-value", "extra-kwarg", "swapped-inputs"],
)
def test_graph_differences_reports_different_args_or_kwargs(left, right):
    """One line for the one node whose arguments differ, including values Python
    calls equal (1, 1.0 and True) and the same inputs in another order."""
    a, b = traced(left), traced(right)
    last_call = len(a.graph.nodes) - 2  # the node before the output
    found = graph_differences(a, b)
    assert len(found) == 1 and found[0].startswith(f"node #{last_call}: "), found


def test_graph_differences_reports_a_different_node_count():
    found = graph_differences(traced(lambda self, x: torch.relu(x)), traced(lambda self, x: torch.relu(torch.relu(x))))
    assert found == ["graphs have 3 and 4 nodes"]


def test_graph_differences_reports_a_different_get_attr_or_module_target():
    a = traced(lambda self, x: self.one(x), one=nn.ReLU(), two=nn.ReLU())
    b = traced(lambda self, x: self.two(x), one=nn.ReLU(), two=nn.ReLU())
    found = graph_differences(a, b)
    assert len(found) == 1 and found[0].startswith("node #1: ") and "'one'" in found[0] and "'two'" in found[0], found


# --- module_type_differences -------------------------------------------------------------------


def test_module_type_differences_is_empty_for_the_same_module_types():
    a = traced(lambda self, x: self.act(self.fc(x)), fc=nn.Linear(4, 4), act=nn.ReLU())
    b = traced(lambda self, x: self.act(self.fc(x)), fc=nn.Linear(4, 4), act=nn.ReLU())
    assert module_type_differences(a, b) == []


def test_module_type_differences_reports_a_module_of_another_type_at_a_path():
    a = traced(lambda self, x: self.block(x), block=nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    b = traced(lambda self, x: self.block(x), block=nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()))
    found = module_type_differences(a, b)
    assert found == [f"module at 'block.1': {nn.ReLU} vs {nn.Sigmoid}"]


def test_module_type_differences_reports_a_missing_path_on_either_side():
    a = traced(lambda self, x: self.fc(x), fc=nn.Linear(4, 4))
    b = traced(lambda self, x: self.fc(x), fc=nn.Linear(4, 4))
    a.add_module("extra", nn.ReLU())
    b.add_module("other", nn.Sigmoid())
    found = module_type_differences(a, b)
    assert found == [f"module at 'extra': {nn.ReLU} vs None", f"module at 'other': None vs {nn.Sigmoid}"]


def test_module_type_differences_tells_a_float_module_from_its_quantized_counterpart():
    a, b = nn.Module(), nn.Module()
    a.fc, b.fc = nn.Linear(4, 3), nnq.Linear(4, 3)
    assert module_type_differences(a, b) == [
        f"module at 'fc': {nn.Linear} vs {nnq.Linear}",
        f"module at 'fc._packed_params': None vs {nnq.modules.linear.LinearPackedParams}",
    ]


# --- state_dict_differences --------------------------------------------------------------------


def with_state(**values) -> nn.Module:
    """A module whose state_dict is `values`, in this order (tensors as buffers)."""
    module = nn.Module()
    for name, value in values.items():
        module.register_buffer(name, value)
    return module


def test_state_dict_differences_is_empty_for_equal_state_in_distinct_objects():
    a = with_state(w=torch.randn(3), q=qtensor())
    b = with_state(w=a.w.clone(), q=qtensor())
    assert a.w is not b.w and state_dict_differences(a, b) == []


def test_state_dict_differences_reports_a_missing_and_an_extra_key():
    a = with_state(w=torch.zeros(2), only_left=torch.zeros(1))
    b = with_state(w=torch.zeros(2), only_right=torch.zeros(1))
    found = state_dict_differences(a, b)
    assert found == ["state_dict keys differ: only left ['only_left'], only right ['only_right']"]
    assert state_dict_differences(a, with_state(w=torch.zeros(2))) == ["state_dict keys differ: only left ['only_left'], only right []"]


def test_state_dict_differences_reports_a_different_key_order():
    found = state_dict_differences(with_state(a=torch.zeros(1), b=torch.ones(1)), with_state(b=torch.ones(1), a=torch.zeros(1)))
    assert found == ["state_dict key order differs"]


def test_state_dict_differences_reports_a_float_value_that_differs():
    a = traced(lambda self, x: self.fc(x), fc=nn.Linear(4, 4))
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.fc.weight[1, 2] += 1e-6
    assert state_dict_differences(a, b) == ["state_dict['fc.weight'] differs"]


@pytest.mark.parametrize(
    "other",
    [qtensor(scale=0.2), qtensor(zero_point=4), qtensor(int_repr=(0, 1, 2, 4))],
    ids=["scale", "zero_point", "int_repr"],
)
def test_state_dict_differences_reports_a_quantized_tensor_differing_in_one_parameter(other):
    """Quantized tensors are compared by representation and quantization parameters,
    each of which alone makes a difference."""
    assert state_dict_differences(with_state(q=qtensor()), with_state(q=other)) == ["state_dict['q'] differs"]


def quantized_linear(weight=None, bias=None) -> nn.Module:
    model = nn.Module()
    model.fc = nnq.Linear(4, 3)
    model.fc.set_weight_bias(qweight() if weight is None else weight, torch.zeros(3) if bias is None else bias)
    model.fc.scale, model.fc.zero_point = 0.05, 128
    return model


@pytest.mark.parametrize(
    "other",
    [lambda: quantized_linear(weight=qweight(changed=(2, 1))), lambda: quantized_linear(bias=torch.tensor([0.0, 0.0, 1e-3]))],
    ids=["one-weight-value", "bias"],
)
def test_state_dict_differences_reports_a_quantized_linear_whose_packed_params_differ(other):
    """nnq.Linear saves its packed weight and bias as one state_dict entry: one weight
    step, or the bias alone, shows there."""
    assert state_dict_differences(quantized_linear(), quantized_linear()) == []
    found = state_dict_differences(quantized_linear(), other())
    assert found == ["state_dict['fc._packed_params._packed_params'] differs"]


def holding(packed) -> nn.Module:
    """A module holding a packed weight as torch's lowering does: a ScriptObject
    attribute, put into the state_dict by torch's hook."""
    model = nn.Module()
    model._packed_weight_0 = packed
    model._register_state_dict_hook(_save_packed_weight)
    return model


def test_state_dict_differences_reports_a_packed_weight_attribute_that_differs():
    assert list(holding(linear_packed()).state_dict()) == ["_packed_weight_0"]
    assert state_dict_differences(holding(linear_packed()), holding(linear_packed())) == []
    found = state_dict_differences(holding(linear_packed()), holding(linear_packed(qweight(changed=(0, 0)))))
    assert found == ["state_dict['_packed_weight_0'] differs"]


# --- values_equal ------------------------------------------------------------------------------


def test_values_equal_on_linear_packed_weights():
    """Packed weights are compared by what they unpack to, not by identity."""
    assert values_equal(linear_packed(), linear_packed())  # distinct objects, same contents
    assert not values_equal(linear_packed(), linear_packed(qweight(changed=(1, 3))))
    assert not values_equal(linear_packed(), linear_packed(bias=torch.zeros(3)))
    assert not values_equal(linear_packed(bias=torch.zeros(3)), linear_packed(bias=torch.tensor([0.0, 0.5, 0.0])))


def test_values_equal_on_conv_packed_weights():
    """A conv's packed weight also holds its stride: that is part of the comparison."""
    assert values_equal(conv_packed(), conv_packed())
    assert not values_equal(conv_packed(), conv_packed(qweight((2, 3, 3, 3), changed=(1, 2, 0, 1))))
    assert not values_equal(conv_packed(), conv_packed(stride=(2, 2)))


def test_values_equal_tells_packed_weights_of_different_kinds_and_other_values_apart():
    assert not values_equal(linear_packed(), conv_packed())
    assert not values_equal(linear_packed(), qweight())
    assert not values_equal(qweight(), linear_packed())
    assert not values_equal(linear_packed(), None)


def test_values_equal_treats_nan_at_the_same_place_as_equal_and_nowhere_else():
    """A NaN both kernels produce is the same result; a NaN on one side only is not."""
    nan = float("nan")
    assert values_equal(torch.tensor([nan, 1.0]), torch.tensor([nan, 1.0]))
    assert not values_equal(torch.tensor([nan, 1.0]), torch.tensor([1.0, nan]))
    assert not values_equal(torch.tensor([nan, 1.0]), torch.tensor([0.0, 1.0]))
    assert not values_equal(torch.tensor([0.0, 1.0]), torch.tensor([nan, 1.0]))


def test_values_equal_is_exact_on_floats():
    a = torch.randn(5, generator=torch.Generator().manual_seed(2))
    assert values_equal(a, a.clone())
    one_ulp = a.clone()
    one_ulp[2] = torch.nextafter(a[2], torch.tensor(float("inf")))
    assert not values_equal(a, one_ulp)


@pytest.mark.parametrize(
    "a, b",
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.float64)),
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64)),
        (torch.zeros(4), torch.zeros(1, 4)),
        (torch.zeros(4), torch.zeros(0)),
        (torch.zeros(4, dtype=torch.uint8), qtensor(int_repr=(0, 0, 0, 0))),
        (torch.zeros(4), [0.0, 0.0, 0.0, 0.0]),
        (torch.tensor(1.0), 1.0),
        (torch.zeros(4, device="meta"), torch.zeros(4)),
    ],
    ids=["float32-float64", "float-int", "shape", "empty", "plain-quantized", "tensor-list", "tensor-scalar", "meta-cpu"],
)
def test_values_equal_rejects_a_dtype_shape_or_kind_mismatch(a, b):
    """Equal numbers in another dtype, shape or kind of value are a difference, both ways round."""
    assert not values_equal(a, b) and not values_equal(b, a)


def test_values_equal_on_nested_containers():
    def nested(last=1.0):
        return {"out": (torch.ones(2), [qtensor(), torch.tensor([last])]), "extra": None}

    assert values_equal(nested(), nested())
    assert not values_equal(nested(), nested(last=2.0))
    changed = nested()
    changed["out"] = (torch.ones(2), (qtensor(), torch.tensor([1.0])))  # the list became a tuple
    assert not values_equal(nested(), changed)
    shorter = nested()
    shorter["out"] = (torch.ones(2),)
    assert not values_equal(nested(), shorter)
    assert not values_equal(nested(), {"out": nested()["out"]})
    assert not values_equal(nested(), {**nested(), "more": 1})
    assert values_equal([linear_packed(), (conv_packed(),)], [linear_packed(), (conv_packed(),)])
    assert not values_equal([linear_packed(), (conv_packed(),)], [linear_packed(), (conv_packed(stride=(2, 2)),)])


# --- lowering_differences ----------------------------------------------------------------------


def traced_quantized_linear(weight=None) -> torch.fx.GraphModule:
    fc = quantized_linear(weight=weight).fc
    return traced(lambda self, x: self.fc(torch.quantize_per_tensor(x, 0.1, 128, torch.quint8)).dequantize(), fc=fc)


def test_lowering_differences_is_empty_for_a_deep_copy_of_a_quantized_model():
    gm = traced_quantized_linear()
    assert [node.op for node in gm.graph.nodes].count("call_module") == 1
    assert lowering_differences(gm, copy.deepcopy(gm), (X,)) == []


def slope(value):
    return traced(lambda self, x: self.act(x), act=nn.LeakyReLU(value))


def shift(value):
    root = type("Shift", (nn.Module,), {"forward": lambda self, x: x + self.shift})()
    root.register_buffer("shift", torch.full((4,), value))
    return non_persistent(torch.fx.symbolic_trace(root), "shift")


@pytest.mark.parametrize(
    "make",
    [slope, shift],
    ids=["module-attribute-outside-the-state_dict", "non-persistent-buffer"],
)
def test_lowering_differences_reports_outputs_that_differ_when_nothing_else_does(make):
    """Two models alike in graph, module types and state_dict that compute different
    values (a LeakyReLU's slope; a non-persistent buffer): only running them tells,
    and lowering_differences does."""
    a, b = make(0.1), make(0.2)
    assert graph_differences(a, b) == module_type_differences(a, b) == state_dict_differences(a, b) == []
    assert lowering_differences(a, a, (X,)) == []
    assert lowering_differences(a, b, (X,)) == ["outputs differ"]


def test_lowering_differences_reports_a_different_graph_and_its_outputs():
    found = lowering_differences(traced(lambda self, x: x + 1), traced(lambda self, x: x + 2), (X,))
    assert len(found) == 2 and found[0].startswith("node #1: ") and found[1] == "outputs differ", found


def test_lowering_differences_reports_module_types_and_state():
    a = traced(lambda self, x: self.act(self.fc(x)), fc=nn.Linear(4, 4), act=nn.ReLU())
    b = copy.deepcopy(a)
    b.act = nn.Sigmoid()
    with torch.no_grad():
        b.fc.bias[0] += 1
    found = lowering_differences(a, b, (X,))
    assert found == [f"module at 'act': {nn.ReLU} vs {nn.Sigmoid}", "state_dict['fc.bias'] differs", "outputs differ"]


def test_lowering_differences_reports_a_quantized_model_whose_packed_weight_differs():
    found = lowering_differences(traced_quantized_linear(), traced_quantized_linear(qweight(changed=(0, 0), steps=20)), (X,))
    assert found == ["state_dict['fc._packed_params._packed_params'] differs", "outputs differ"]


# --- ModelSnapshot -----------------------------------------------------------------------------


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.register_buffer("shift", torch.zeros(4), persistent=False)

    def forward(self, x):
        return self.act(self.fc(x)) + self.shift


def small() -> torch.fx.GraphModule:
    return non_persistent(torch.fx.symbolic_trace(Small()), "shift")


def test_snapshot_of_an_unchanged_model_has_no_differences():
    """Running or copying a model is not a change."""
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    gm(X)
    copy.deepcopy(gm)
    assert snapshot.differences(gm) == []


def test_snapshot_reports_a_changed_graph_and_code():
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    (add,) = [node for node in gm.graph.nodes if node.op == "call_function"]
    add.target = torch.sub
    gm.recompile()
    assert snapshot.differences(gm) == ["code changed", "graph changed"]


def test_snapshot_reports_a_renamed_node():
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    next(node for node in gm.graph.nodes if node.op == "call_function").name = "renamed"
    gm.recompile()
    assert snapshot.differences(gm) == ["code changed", "graph changed"]


def test_snapshot_reports_a_changed_graph_not_yet_recompiled():
    """The graph is recorded apart from the code: an edit without recompile() shows too."""
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    (add,) = [node for node in gm.graph.nodes if node.op == "call_function"]
    add.target = torch.sub
    assert snapshot.differences(gm) == ["graph changed"]


def test_snapshot_reports_a_changed_module_type():
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    gm.act = nn.Sigmoid()
    assert snapshot.differences(gm) == ["types changed", "configuration changed"]


@pytest.mark.parametrize("how", ["indexing", "data"])
def test_snapshot_reports_an_in_place_change_of_a_parameter(how):
    """The snapshot holds copies of the values, so an in-place write shows."""
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    if how == "indexing":
        with torch.no_grad():
            gm.fc.weight[0, 0] += 1e-6
    else:  # bumps no version counter
        gm.fc.bias.data[3] = 7.0
    key = "fc.weight" if how == "indexing" else "fc.bias"
    assert snapshot.differences(gm) == [f"state_dict[{key!r}] changed"]


def test_snapshot_reports_a_changed_non_persistent_buffer():
    """forward reads non-persistent buffers, which the state_dict leaves out."""
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    assert "shift" not in gm.state_dict()
    gm.shift.add_(1)
    assert snapshot.differences(gm) == ["state_dict['~shift'] changed"]


def test_snapshot_reports_an_added_attribute_and_an_added_buffer():
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    gm.note = "added"
    assert snapshot.differences(gm) == ["attributes changed", "configuration changed"]
    gm = small()
    snapshot = ModelSnapshot.of(gm)
    gm.register_buffer("added", torch.zeros(1))
    assert snapshot.differences(gm) == ["state_dict keys changed"]


def test_snapshot_reports_a_replaced_packed_weight():
    """A lowered model's packed weight is an attribute, not a tensor: replacing it
    with another of different contents is a change (one of the same contents is not)."""
    graph = torch.fx.Graph()
    graph.output(graph.call_function(torch.ops.quantized.linear_dynamic, (graph.placeholder("x"), graph.get_attr("_packed_weight_0"))))
    model = torch.fx.GraphModule(holding(linear_packed()), graph)
    model._register_state_dict_hook(_save_packed_weight)
    snapshot = ModelSnapshot.of(model)
    model._packed_weight_0 = linear_packed()  # another object, same contents
    assert snapshot.differences(model) == []
    model._packed_weight_0 = linear_packed(qweight(changed=(2, 2)))
    assert snapshot.differences(model) == ["configuration changed", "state_dict['_packed_weight_0'] changed"]


def test_snapshot_reports_a_changed_module_attribute_outside_the_state():
    """A change the caller can see (the outputs change) outside the state_dict: a module's
    configuration (regression: ModelSnapshot recorded attribute names only)."""
    gm = slope(0.1)
    snapshot = ModelSnapshot.of(gm)
    before = gm(X)
    gm.act.negative_slope = 0.2
    assert not values_equal(before, gm(X))
    assert snapshot.differences(gm) != []


@pytest.mark.parametrize("dtype", [torch.complex32, torch.float4_e2m1fn_x2, torch.float16, torch.complex64])
def test_regression_tensors_of_dtypes_torch_equal_cannot_compare_on_cpu_are_compared(dtype):
    # found by mutation testing: torch.equal has no CPU kernel for complex32 and
    # float4_e2m1fn_x2, and values_equal raised instead of answering
    zeros = torch.zeros(4, dtype=torch.uint8).view(dtype) if dtype.itemsize == 1 else torch.zeros(4, dtype=dtype)
    assert values_equal(zeros, zeros.clone())
    if dtype is not torch.float4_e2m1fn_x2:  # (no arithmetic for it: only the equal case)
        assert not values_equal(zeros, zeros + 1)
    root = nn.Module()
    root.register_buffer("z", zeros)
    graph = torch.fx.Graph()
    graph.output((graph.placeholder("x"), graph.get_attr("z")))
    gm = torch.fx.GraphModule(root, graph)
    assert ModelSnapshot.of(gm).differences(gm) == []


def test_values_equal_takes_a_nan_as_itself_and_signed_zeros_as_equal_but_not_one_ulp_apart():
    nan = torch.tensor([float("nan"), -0.0, 1.0])
    assert values_equal(nan, nan.clone()) and values_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not values_equal(torch.tensor([1.0]), torch.tensor([1.0 + 2**-23]))
