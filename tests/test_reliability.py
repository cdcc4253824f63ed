"""Bad input gets a precise FqlowerError or a correct lowering, never a crash from
deep inside, and the caller's model is never changed."""

from __future__ import annotations

import copy

import pytest
import torch
import zoo

import fqlower
from fqlower import UnsupportedInput
from fqlower.compare import ModelSnapshot, lowering_differences
from fqlower.explain import explain
from fqlower.reference import ReferenceModel, torch_lowering

CASE = "TwoLayerLinear-static_fbgemm"


@pytest.fixture(scope="module")
def reference():
    return zoo.case_by_id(CASE).build()


def test_a_float_model_that_was_never_quantized_lowers_to_itself():
    case = zoo.case_by_id("float-nested_sequential").build()
    result = fqlower.lower(case.module)
    assert result.log.changes == ()
    assert fqlower.fingerprint(result.program) == fqlower.fingerprint(fqlower.from_fx(case.module))
    text = explain(result, case.module).format()
    assert text.startswith("nothing to lower: the model has no quantize or dequantize node (was it quantized?")
    assert "coverage: 0 of" in text


def test_a_fully_lowered_model_is_not_called_never_quantized(reference):
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    assert not explain(lowering, reference.module).never_quantized


@pytest.mark.parametrize(
    "qconfig_map, scope, message",
    [
        ({"fc1": "fbgemm"}, None, r"qconfig_map\['fc1'\] is a str, not a QConfig or None"),
        (None, {"fc1": "fc1"}, r"node_name_to_scope\['fc1'\] must be a \(module path, module type\) pair"),
        (None, {3: ("fc1", torch.nn.Linear)}, "key 3 is not a node name"),
    ],
)
def test_maps_of_the_wrong_shape_are_refused_by_name(reference, qconfig_map, scope, message):
    with pytest.raises(UnsupportedInput, match=message):
        fqlower.lower(reference.module, qconfig_map, scope)


def test_map_entries_for_nodes_the_graph_lacks_are_harmless(reference):
    qconfig_map = {**reference.qconfig_map, "no_such_node": None}
    scope = {**reference.node_name_to_scope, "no_such_node": ("x", torch.nn.Linear)}
    lowered = fqlower.lower(reference.module, qconfig_map, scope).module
    assert torch.equal(lowered(*reference.example_inputs), torch_lowering(reference)(*reference.example_inputs))


def test_regression_a_model_on_the_meta_device_is_refused_naming_the_tensor(reference):
    model = copy.deepcopy(reference.module).to("meta")
    snapshot = ModelSnapshot.of(model)
    with pytest.raises(UnsupportedInput, match=r"tensor 'fc1\.weight' is on meta; torch's quantized kernels run on the CPU"):
        fqlower.lower(model, reference.qconfig_map, reference.node_name_to_scope)
    assert snapshot.differences(model) == []


class Traced(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x).relu()


def traced_with_stack_traces():
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    root = Traced()
    return torch.fx.GraphModule(root, tracer.trace(root))


def test_errors_name_the_source_line_fx_recorded_for_the_node():
    gm = traced_with_stack_traces()
    fc = next(n for n in gm.graph.nodes if n.op == "call_module")
    fc.target = "gone"
    with pytest.raises(UnsupportedInput) as raised:
        fqlower.lower(gm)
    text = str(raised.value)
    assert "%fc was traced from:" in text
    assert "return self.fc(x).relu()" in text  # the line of this file that made the node


def test_errors_raised_inside_a_pass_keep_the_node_source():
    gm = traced_with_stack_traces()
    program = fqlower.from_fx(gm)
    relu = next(node for node in program.nodes() if node.op == "call_method")
    error = fqlower.IRError("something is wrong here", node=relu.name, program=program)
    assert "return self.fc(x).relu()" in str(error)
    assert "something is wrong here" in str(error)
    # without a recorded trace there is no source section
    bare = fqlower.from_fx(torch.fx.symbolic_trace(Traced()))
    assert "traced from" not in str(fqlower.IRError("x", node="relu", program=bare))


def edited(reference, edit):
    gm = copy.deepcopy(reference.module)
    edit(gm, {node.name: node for node in gm.graph.nodes})
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def inline_output_scale(gm, nodes):
    quantize = nodes["quantize_per_tensor_1"]
    quantize.args = (quantize.args[0], float(gm.fc1_scale_0), *quantize.args[2:])


def computed_output_scale(gm, nodes):
    quantize = nodes["quantize_per_tensor_1"]
    with gm.graph.inserting_before(quantize):
        doubled = gm.graph.call_function(torch.mul, (quantize.args[1], 2.0))
    quantize.args = (quantize.args[0], doubled, *quantize.args[2:])


@pytest.mark.parametrize("edit", [inline_output_scale, computed_output_scale], ids=["literal", "computed"])
def test_a_quantize_whose_scale_is_not_a_constant_is_left_with_a_reason(reference, edit):
    gm = edited(reference, edit)
    snapshot = ModelSnapshot.of(gm)
    lowering = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    assert snapshot.differences(gm) == []
    assert "the output scale of 'quantize_per_tensor_1' is not read from a constant" in [skip.reason for skip in lowering.log.skips]
    (x,) = reference.example_inputs
    expected = gm(x)
    assert (lowering.module(x) - expected).abs().max() <= 0.05 * expected.abs().max()


def test_a_quantize_with_several_users_lowers_for_each_of_them(reference):
    # the first layer's output quantize also feeds a second dequantize that is returned
    def second_reader(gm, nodes):
        quantize, output = nodes["quantize_per_tensor_1"], nodes["output"]
        with gm.graph.inserting_before(output):
            again = gm.graph.call_method("dequantize", (quantize,))
        output.args = ((output.args[0], again),)

    gm = edited(reference, second_reader)
    lowering = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    theirs = torch_lowering(ReferenceModel(gm, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs))
    assert lowering_differences(theirs, lowering.module, reference.example_inputs) == []
    assert type(lowering.module.fc1).__module__.startswith("torch.ao.nn.quantized")


def test_regression_a_dequantize_of_a_constant_is_no_dequantized_input(reference):
    # found by the 10,000-input fuzz run: `(0.0).dequantize()` feeding a module made the
    # static module pass read `.name` of the float (AttributeError)
    def dequantize_a_constant(gm, nodes):
        nodes["dequantize"].args = (0.0,)

    gm = edited(reference, dequantize_a_constant)
    lowering = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    assert "the input of 'fc1' is not dequantized" in [skip.reason for skip in lowering.log.skips]


class StringPadded(torch.nn.Module):
    def __init__(self, padding: str, fused: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=padding)
        self.relu = torch.nn.ReLU() if fused else torch.nn.Identity()
        self.tail = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.relu(self.conv(x)))


@pytest.mark.parametrize("fused", [False, True], ids=["conv", "conv-relu"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_regression_a_conv_padded_by_name_stays_float_with_a_reason(padding, fused):
    # quantized convolutions take numeric padding only: torch's lowering crashes in
    # from_reference (conv2d_prepack gets the letters of 'same'); fqlower raised EmitError
    from torch.ao.quantization import get_default_qconfig_mapping

    from fqlower.reference import reference_model

    x = (torch.randn(1, 2, 6, 6),)
    ref = reference_model(StringPadded(padding, fused).eval(), x, get_default_qconfig_mapping())
    with pytest.raises(RuntimeError):
        torch_lowering(ref)
    lowering = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    reasons = [skip.reason for skip in lowering.log.skips]
    assert any(f"pads {padding!r}" in reason for reason in reasons), reasons
    assert type(lowering.module.tail).__module__.startswith("torch.ao.nn.quantized")  # the rest still lowers
    expected = ref.module(*x)
    assert torch.equal(lowering.module(*x), expected)
