"""`fqlower.explain`: why quantize/dequantize nodes are left, and how much runs natively.

Leftovers are checked on zoo models with a `None` qconfig and on graphs where a
pass records a near miss (a weight computed from an input, floor division, a
dtype pair without kernel) or where a dequantize is shared; coverage counts are
checked against counts made independently from the float model.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import zoo
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    get_default_qconfig_mapping,
)

import fqlower
from fqlower.errors import UnsupportedInput
from fqlower.explain import DEQUANTIZE, QUANTIZE, explain
from fqlower.reference import reference_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


def lower(reference, gm=None):
    return fqlower.lower(gm if gm is not None else reference.module, reference.qconfig_map, reference.node_name_to_scope)


def numel(*modules):
    return sum(parameter.numel() for module in modules for parameter in module.parameters())


def around(program, op):
    """The quantize/dequantize nodes next to node `op`, found independently of explain."""
    found = set()
    for node in program.nodes():
        if node.op == "call_method" and node.target == "dequantize" and op in program.users(node.name):
            found.add(node.name)
        if node.op == "call_function" and node.target is torch.quantize_per_tensor and node.args[0] == fqlower.Ref(op):
            found.add(node.name)
    return found


# --- None qconfigs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case_id", "skipped"),
    [("TwoLayerLinear-none_fc2", ["fc2"]), ("ResidualBlock-none_conv2", ["conv2"]), ("NestedModel-none_sub2", ["sub2_fc1", "sub2_fc2"])],
)
def test_leftovers_around_a_module_with_none_qconfig_say_so(case_id, skipped):
    reference = zoo.case_by_id(case_id).build()
    lowering = lower(reference)
    explanation = explain(lowering, reference.module)

    expected = set().union(*(around(lowering.program, op) for op in skipped))
    assert expected and {leftover.node for leftover in explanation.problems} == expected
    for leftover in explanation.problems:
        assert leftover.pattern is None  # no rule looks at a plain float module
        assert any(leftover.reasons == (f"qconfig of {op!r} is None",) for op in skipped), leftover
    # what is left is the model input's quantize and (where the output is quantized) the output's dequantize
    for leftover in explanation.leftovers:
        if leftover.boundary:
            assert leftover.reasons in (("quantizes the model input %x",), ("dequantizes a model output",))
    text = explanation.format()
    assert f"qconfig of {skipped[0]!r} is None" in text and "expected conversions:" in text


def test_coverage_of_a_model_with_one_module_left_float():
    reference = zoo.case_by_id("TwoLayerLinear-none_fc2").build()
    coverage = explain(lower(reference), reference.module).coverage
    assert (coverage.ops_native, coverage.ops_total) == (1, 2)
    fc1, fc2 = reference.module.fc1, reference.module.fc2
    assert (coverage.params_native, coverage.params_total) == (numel(fc1), numel(fc1, fc2))
    assert coverage.ops_percent == 50.0
    assert coverage.params_percent == pytest.approx(100 * numel(fc1) / numel(fc1, fc2))
    assert [(op.node, op.is_native) for op in coverage.ops] == [("fc1", True), ("fc2", False)]


# --- coverage --------------------------------------------------------------------------------


class ThreeLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.fc2 = nn.Linear(10, 7)
        self.fc3 = nn.Linear(7, 3)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def test_coverage_two_of_three_linear_layers():
    torch.manual_seed(0)
    model = ThreeLinear()
    reference = reference_model(model, (torch.randn(8, 6),), get_default_qconfig_mapping("fbgemm").set_module_name("fc3", None))
    explanation = explain(lower(reference), reference.module)
    coverage = explanation.coverage
    native, everything = numel(model.fc1, model.fc2), numel(model)  # counted on the float model
    assert (coverage.ops_native, coverage.ops_total) == (2, 3)
    assert (coverage.params_native, coverage.params_total) == (native, everything)
    assert coverage.ops_percent == pytest.approx(200 / 3)
    assert coverage.params_percent == pytest.approx(100 * native / everything)
    assert {op.node: op.kind for op in coverage.ops} == {"fc1": "LinearReLU", "fc2": "LinearReLU", "fc3": "Linear"}
    assert f"2 of 3 weighted ops (66.7%) and {native:,} of {everything:,} parameters" in explanation.format()


@pytest.mark.parametrize("case_id", ["FunctionalConvLinear-static_fbgemm", "FunctionalConvLinear-dynamic_int8"])
def test_coverage_of_functional_ops_counts_their_weights(case_id):
    reference = zoo.case_by_id(case_id).build()
    lowering = lower(reference)
    coverage = explain(lowering, reference.module).coverage
    module = reference.module
    # the float weights and biases the functionals read, found by name in the reference model
    expected = sum(getattr(module, name).numel() for name in ("w1", "b1", "w2", "b2"))
    assert coverage.params_total == expected
    native = {op.node for op in coverage.ops if op.is_native}
    if case_id.endswith("static_fbgemm"):
        assert (coverage.ops_native, coverage.ops_total, coverage.params_native) == (2, 2, expected)
    else:  # dynamic conv stays float (its kernel clamps), dynamic linear lowers
        assert native == {"linear"} and coverage.ops_total == 2
        assert coverage.params_native == module.w2.numel() + module.b2.numel()


class SharedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.fc(self.fc(x)))


def test_coverage_counts_a_module_called_twice_once_for_parameters():
    torch.manual_seed(0)
    model = SharedLinear()
    reference = reference_model(model, (torch.randn(8, 5),), QConfigMapping().set_global(default_dynamic_qconfig))
    coverage = explain(lower(reference), reference.module).coverage
    assert coverage.ops_total == 3 and coverage.ops_native == 3
    assert coverage.params_total == coverage.params_native == numel(model)


def test_coverage_needs_the_reference_the_lowering_was_made_from():
    reference = zoo.case_by_id("TwoLayerLinear-none_fc2").build()
    lowering = lower(reference)
    assert explain(lowering).coverage is None
    assert "coverage: not computed" in explain(lowering).format()
    other = zoo.case_by_id("TwoLayerLinear-static_fbgemm").build()
    with pytest.raises(UnsupportedInput, match="not the one this lowering was made from"):
        explain(lowering, other.module)


# --- near misses from the log ----------------------------------------------------------------


def test_dequantize_shared_with_a_float_user():
    # hand-built: the input's dequantize feeds the reference Linear and a float sigmoid
    reference = zoo.case_by_id("SingleLayerLinear-static_fbgemm").build()
    gm = copy.deepcopy(reference.module)
    graph = gm.graph
    dequantize = next(node for node in graph.nodes if node.op == "call_method" and node.target == "dequantize")
    output = next(node for node in graph.nodes if node.op == "output")
    with graph.inserting_before(output):
        sigmoid = graph.call_function(torch.sigmoid, (dequantize,))
    output.args = ((output.args[0], sigmoid),)
    gm.recompile()
    lowering = lower(reference, gm)

    for given in (gm, None):  # the log's bindings say who was lowered; the reference need not be given
        explanation = explain(lowering, given)
        leftover = explanation.leftover(dequantize.name)
        assert leftover.op == DEQUANTIZE and not leftover.boundary and leftover.pattern is None
        shared = (
            f"%{dequantize.name} is shared by several users: %fc1 was lowered to read the quantized value, "
            f"%{sigmoid.name} still reads it in float"
        )
        assert leftover.reasons == (shared, f"no lowering pattern covers torch.sigmoid at %{sigmoid.name}")
        # the input's quantize feeds both the native fc1 and, through the dequantize, the sigmoid
        quantize = explanation.leftover(dequantize.args[0].name)
        assert quantize.op == QUANTIZE and quantize.reasons == (f"no lowering pattern covers torch.sigmoid at %{sigmoid.name}",)


def test_functional_linear_whose_weight_is_computed_from_an_input():
    class InputWeight(nn.Module):
        def forward(self, x, w):
            return F.linear(x, w)

    reference = reference_model(InputWeight(), (torch.randn(5, 6), torch.randn(4, 6)), get_default_qconfig_mapping("fbgemm"))
    lowering = lower(reference)
    explanation = explain(lowering, reference.module)
    reason = "the weight of 'linear' is computed from the model's inputs, so it cannot be prepacked"
    assert explanation.leftovers and not any(leftover.boundary for leftover in explanation.leftovers)
    for leftover in explanation.leftovers:  # input q/dq, the weight's dequantize, the output q/dq
        assert leftover.pattern == "lower-static-functionals"
        assert leftover.reasons == (reason,)
        assert [skip.node for skip in leftover.skips] == [s.node for s in lowering.log.skips if s.pass_name == "lower-static-functionals"]
    coverage = explanation.coverage
    assert (coverage.ops_native, coverage.ops_total, coverage.params_total) == (0, 1, 0)  # the weight is no parameter


def test_floor_division_has_no_quantized_kernel():
    class FloorDiv(nn.Module):
        def forward(self, x):
            return x // 2

    reference = reference_model(FloorDiv(), (torch.randn(4, 8),), get_default_qconfig_mapping("fbgemm"))
    explanation = explain(lower(reference), reference.module)
    assert len(explanation.leftovers) == 4  # x's q/dq and the floordiv's q/dq
    for leftover in explanation.leftovers:
        assert leftover.pattern == "lower-special-patterns/reroute"
        assert len(leftover.reasons) == 1 and "%floordiv (floordiv) has no quantized kernel" in leftover.reasons[0]
    assert explanation.coverage.ops_total == 0
    assert "the reference model has no weighted ops" in explanation.format()


def test_dynamic_quantize_to_a_dtype_without_kernel():
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 6))

        def forward(self, x):
            return F.linear(x, self.weight)

    reference = reference_model(Linear(), (torch.randn(5, 6),), QConfigMapping().set_global(default_dynamic_qconfig))
    gm = copy.deepcopy(reference.module)
    dynamic = next(node for node in gm.graph.nodes if node.target is torch.quantize_per_tensor_dynamic)
    dynamic.args = (dynamic.args[0], torch.qint8, dynamic.args[2])
    gm.recompile()
    explanation = explain(lower(reference, gm), gm)
    leftover = explanation.leftover(dynamic.name)
    assert leftover.op == "quantize_per_tensor_dynamic" and leftover.pattern == "lower-dynamic-functionals"
    assert leftover.reasons == ("no dynamic linear for activation torch.qint8 and weight torch.qint8",)
    assert (explanation.coverage.ops_native, explanation.coverage.ops_total) == (0, 1)


def test_a_pattern_no_pass_covers_names_the_op():
    # static fp16 (to(float16) / dequantize around modules) has no native lowering, in torch neither
    reference = zoo.case_by_id("SingleLayerLinear-static_fp16").build()
    explanation = explain(lower(reference), reference.module)
    first = explanation.leftovers[0]
    assert first.pattern is None and first.reasons == ("no lowering pattern covers module fc1 (Linear) at %fc1",)
    assert explanation.coverage.ops_native == 0


def test_a_fully_lowered_model_has_only_boundaries():
    reference = zoo.case_by_id("ResidualBlock-static_fbgemm").build()
    explanation = explain(lower(reference), reference.module)
    assert explanation.problems == ()
    assert [leftover.reasons for leftover in explanation.leftovers] == [("quantizes the model input %x",), ("dequantizes a model output",)]
    assert (explanation.coverage.ops_native, explanation.coverage.ops_total) == (2, 2)
    assert explanation.coverage.params_percent == 100.0


def test_coverage_counts_a_quantized_module_installed_as_an_object():
    # a pass may put a built module at a path instead of a spec
    import attrs

    from fqlower.emit import materialize

    reference = zoo.case_by_id("TwoLayerLinear-static_fbgemm").build()
    lowering = lower(reference)
    program = fqlower.apply(lowering.program, [fqlower.SetModule("fc1", materialize(lowering.program, lowering.program.modules["fc1"]))])
    coverage = explain(attrs.evolve(lowering, program=program), reference.module).coverage
    assert (coverage.ops_native, coverage.ops_total) == (2, 2)
