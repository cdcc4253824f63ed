"""Functional linear/conv passes and weight folding: exact rewrites, and every place
where torch 2.13's lowering fails and fqlower does not."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, float16_dynamic_qconfig, get_default_qconfig_mapping

import fqlower
from fqlower import Build, Original
from fqlower.compare import lowering_differences, values_equal
from fqlower.log.fingerprint import describe
from fqlower.passes import FOLD_WEIGHTS, LOWER_DYNAMIC_FUNCTIONALS, LOWER_STATIC_FUNCTIONALS
from fqlower.reference import reference_model, torch_lowering


class FunctionalLinear(nn.Module):
    """F.linear with parameter weights, called in one of several argument styles."""

    def __init__(self, style="positional"):
        super().__init__()
        torch.manual_seed(0)
        self.style = style
        self.weight = nn.Parameter(torch.randn(4, 6))
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x):
        if self.style == "keywords":
            return F.linear(input=x, weight=self.weight, bias=self.bias)
        if self.style == "bias-keyword":
            return F.linear(x, self.weight, bias=self.bias)
        return F.linear(x, self.weight, self.bias)


class FunctionalConv(nn.Module):
    def __init__(self, style="explicit"):
        super().__init__()
        torch.manual_seed(0)
        self.style = style
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x):
        if self.style == "defaults":
            return F.conv2d(x, self.weight, self.bias)
        if self.style == "ints":
            return F.conv2d(x, self.weight, self.bias, 1, 0, 1, 1)
        if self.style == "keywords":
            return F.conv2d(x, self.weight, bias=self.bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
        return F.conv2d(x, self.weight, self.bias, (1, 1), (0, 0), (1, 1), 1)


def static(model, x):
    return reference_model(model, (x,), get_default_qconfig_mapping("fbgemm"))


def lowered(reference, **kwargs):
    return fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope, **kwargs)


LINEAR_X = torch.randn(5, 6)
CONV_X = torch.randn(2, 3, 6, 6)


def test_static_functional_rewrite_and_change():
    reference = static(FunctionalLinear(), LINEAR_X)
    program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    result = LOWER_STATIC_FUNCTIONALS.run(program)
    (change,) = result.changes
    assert change.anchor == change.bindings["quantize"] and change.bindings["function"] == "linear"
    assert [type(edit).__name__ for edit in change.edits] == ["AddNode", "SetTarget", "SetArgs", "MoveNode", "ReplaceUses", "RemoveNode"]
    prepack = change.edits[0].node
    assert prepack.target is torch.ops.quantized.linear_prepack
    assert change.edits[0].before == change.bindings["scale"]
    after = result.program
    linear = after.node("linear")
    assert linear.target is torch.ops.quantized.linear
    order = list(after.graph.order)
    assert order.index(prepack.name) < order.index(change.bindings["scale"]) < order.index(change.bindings["zero_point"]) < order.index("linear")
    folded = FOLD_WEIGHTS.run(after)
    (fold,) = folded.changes
    assert fold.rule == "fold-packed-weight"
    spec = folded.program.constants["_packed_weight_0"]
    assert isinstance(spec, Build) and spec.factory == "torch.ops.quantized.linear_prepack"
    assert spec.args[1] == Original("bias")


@pytest.mark.parametrize("style", ["positional", "bias-keyword"])
def test_functional_linear_equals_torch(style):
    reference = static(FunctionalLinear(style), LINEAR_X)
    assert lowering_differences(torch_lowering(reference), lowered(reference).module, (LINEAR_X,)) == []


def test_regression_functional_linear_with_keyword_inputs():
    # torch: AssertionError "Dequantize index 1 exceeded reference node's arg length 0"
    reference = static(FunctionalLinear("keywords"), LINEAR_X)
    with pytest.raises(AssertionError, match="exceeded reference node's arg length"):
        torch_lowering(reference)
    ours = lowered(reference).module
    expected = torch_lowering(static(FunctionalLinear("positional"), LINEAR_X))
    assert lowering_differences(expected, ours, (LINEAR_X,)) == []


@pytest.mark.parametrize("style", ["defaults", "ints"])
def test_regression_functional_conv_with_default_or_int_arguments(style):
    # torch: conv2d_prepack() is missing a value for 'stride', or gets an int where it wants a list
    reference = static(FunctionalConv(style), CONV_X)
    with pytest.raises(RuntimeError, match="stride"):
        torch_lowering(reference)
    ours = lowered(reference).module
    expected = torch_lowering(static(FunctionalConv("explicit"), CONV_X))
    assert lowering_differences(expected, ours, (CONV_X,)) == []


def test_functional_conv_with_keyword_arguments_equals_torch():
    reference = static(FunctionalConv("keywords"), CONV_X)
    assert lowering_differences(torch_lowering(reference), lowered(reference).module, (CONV_X,)) == []


def test_regression_missing_scope_entry_falls_back_to_the_op_name():
    # torch: KeyError in fold_weight
    reference = static(FunctionalLinear(), LINEAR_X)
    scope = {name: value for name, value in reference.node_name_to_scope.items() if name != "linear"}
    with pytest.raises(KeyError, match="linear"):
        from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

        _lower_to_native_backend(copy.deepcopy(reference.module), dict(reference.qconfig_map), scope)
    result = fqlower.lower(reference.module, reference.qconfig_map, scope)
    (fold,) = [change for change in result.log.changes if change.pass_name == "fold-weights"]
    assert fold.rule == "fold-packed-weight-unscoped"
    assert "linear_packed_weight_0" in result.module.state_dict()
    assert values_equal(result.module(LINEAR_X), torch_lowering(reference)(LINEAR_X))


def test_regression_weight_computed_from_an_input_is_left_with_a_reason():
    class InputWeight(nn.Module):
        def forward(self, x, w):
            return F.linear(x, w)

    reference = reference_model(InputWeight(), (LINEAR_X, torch.randn(4, 6)), get_default_qconfig_mapping("fbgemm"))
    result = lowered(reference)
    skips = [skip for skip in result.log.skips if skip.pass_name == "lower-static-functionals"]
    assert skips and "computed from the model's inputs" in skips[0].reason
    assert all(node.target is not torch.ops.quantized.linear for node in result.module.graph.nodes)
    inputs = reference.example_inputs
    assert values_equal(result.module(*inputs), reference.module(*inputs))


def test_dynamic_functional_linear_int8_and_fp16_equal_torch():
    for qconfig, op in ((default_dynamic_qconfig, torch.ops.quantized.linear_dynamic), (float16_dynamic_qconfig, torch.ops.quantized.linear_dynamic_fp16)):
        reference = reference_model(FunctionalLinear(), (LINEAR_X,), QConfigMapping().set_global(qconfig))
        program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
        (change,) = LOWER_DYNAMIC_FUNCTIONALS.run(program).changes
        assert change.anchor == "linear"
        ours = lowered(reference)
        assert any(node.target is op for node in ours.module.graph.nodes)
        assert lowering_differences(torch_lowering(reference), ours.module, (LINEAR_X,)) == []


def test_dynamic_functional_linear_relu_fuses():
    class LinearRelu(FunctionalLinear):
        def forward(self, x):
            return F.relu(F.linear(x, self.weight, self.bias))

    reference = reference_model(LinearRelu(), (LINEAR_X,), QConfigMapping().set_global(default_dynamic_qconfig))
    ours = lowered(reference).module
    assert [n.target for n in ours.graph.nodes if n.op == "call_function"] == [torch.ops.quantized.linear_relu_dynamic]
    assert lowering_differences(torch_lowering(reference), ours, (LINEAR_X,)) == []


def test_lowered_model_survives_save_load_and_state_dict_round_trip():
    reference = static(FunctionalConv(), CONV_X)
    ours = lowered(reference).module
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert values_equal(loaded(CONV_X), ours(CONV_X))

    other_weights = static(FunctionalConv(), CONV_X * 3)  # other calibration: other scales
    fresh = lowered(other_weights).module
    assert not values_equal(fresh(CONV_X), ours(CONV_X))
    fresh.load_state_dict(ours.state_dict())
    assert values_equal(fresh(CONV_X), ours(CONV_X))


def test_jit_trace_works_as_on_torch_result():
    reference = static(FunctionalConv(), CONV_X)
    ours = lowered(reference).module
    traced = torch.jit.trace(ours, (CONV_X,))
    assert values_equal(traced(CONV_X), ours(CONV_X))
    scripted_torch = torch.jit.script(torch_lowering(reference))
    assert values_equal(torch.jit.script(ours)(CONV_X), scripted_torch(CONV_X))


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = FunctionalLinear()

    def forward(self, x):
        return self.sub(x)


def test_regression_state_dict_loads_packed_weights_of_submodules():
    # torch's load hook only takes keys starting with "_packed_weight", so
    # "sub_packed_weight_0" is refused as an unexpected key.
    source, target = static(Outer(), LINEAR_X), static(Outer(), LINEAR_X * 3)
    torch_source, torch_target = torch_lowering(source), torch_lowering(target)
    assert "sub_packed_weight_0" in torch_source.state_dict()
    with pytest.raises(RuntimeError, match='Unexpected key.*"sub_packed_weight_0"'):
        torch_target.load_state_dict(torch_source.state_dict())
    ours_source, ours_target = lowered(source).module, lowered(target).module
    assert list(ours_source.state_dict()) == list(torch_source.state_dict())
    ours_target.load_state_dict(ours_source.state_dict())
    assert values_equal(ours_target(LINEAR_X), torch_source(LINEAR_X))


@pytest.mark.parametrize("model, x", [(FunctionalLinear(), LINEAR_X), (Outer(), LINEAR_X), (FunctionalConv(), CONV_X)], ids=["linear", "nested", "conv"])
def test_keep_original_weights_gives_torchs_lookup(model, x):
    from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

    reference = static(model, x)
    expected = _lower_to_native_backend(
        copy.deepcopy(reference.module), dict(reference.qconfig_map), dict(reference.node_name_to_scope), True
    ).original_weights_lookup
    ours = lowered(reference, keep_original_weights=True).module.original_weights_lookup
    assert list(ours) == list(expected)
    for key in expected:
        assert len(ours[key]) == len(expected[key])
        assert all(values_equal(a, b) for a, b in zip(ours[key], expected[key])), key
    assert not hasattr(lowered(reference).module, "original_weights_lookup")


def dynamic_conv_graph():
    """x -> quantize_per_tensor_dynamic -> dequantize ─┐
    w -> quantize_per_channel -> dequantize ───────────┴─> F.conv2d(·, ·, b, ...)
    (prepare_fx never makes this; torch 2.13's lowering skips it: it looks for a
    dynamic conv+relu op even when there is no relu)."""
    torch.manual_seed(0)
    root = nn.Module()
    weight = torch.randn(4, 3, 3, 3)
    root.weight, root.bias = weight, torch.randn(4)
    root.scales = weight.abs().amax(dim=(1, 2, 3)) / 127
    root.zero_points = torch.zeros(4, dtype=torch.int64)
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    dq_x = graph.call_method("dequantize", (graph.call_function(torch.quantize_per_tensor_dynamic, (x, torch.quint8, True)),))
    q_w = graph.call_function(
        torch.quantize_per_channel,
        (graph.get_attr("weight"), graph.get_attr("scales"), graph.get_attr("zero_points"), 0, torch.qint8),
    )
    conv = graph.call_function(F.conv2d, (dq_x, graph.call_method("dequantize", (q_w,)), graph.get_attr("bias"), (1, 1), (0, 0), (1, 1), 1))
    graph.output(conv)
    return torch.fx.GraphModule(root, graph)


def test_dynamic_functional_conv_stays_float_because_the_kernel_clamps():
    gm = dynamic_conv_graph()
    x = torch.randn(2, 3, 8, 8)
    expected = gm(x)
    # the kernel itself: conv2d_dynamic clamps outputs to the input's range
    q_weight = torch.quantize_per_channel(gm.weight, gm.scales, gm.zero_points, 0, torch.qint8)
    packed = torch.ops.quantized.conv2d_prepack(q_weight, gm.bias, [1, 1], [0, 0], [1, 1], 1)
    assert (torch.ops.quantized.conv2d_dynamic(x, packed, True) - expected).abs().max() > 0.3 * expected.abs().max()
    result = fqlower.lower(gm, {}, {"conv2d": ("", F.conv2d)})
    (skip,) = [s for s in result.log.skips if s.pass_name == "lower-dynamic-functionals"]
    assert "clamps its output" in skip.reason
    assert values_equal(result.module(x), expected)


def test_dynamic_functional_conv_with_relu_is_a_recorded_skip_without_stdout(capsys):
    gm = dynamic_conv_graph()
    conv = next(n for n in gm.graph.nodes if n.target is F.conv2d)
    with gm.graph.inserting_after(conv):
        relu = gm.graph.call_function(F.relu, (conv,))
    conv.replace_all_uses_with(relu, delete_user_cb=lambda user: user is not relu)
    gm.recompile()
    result = fqlower.lower(gm, {}, {})
    (skip,) = [s for s in result.log.skips if s.pass_name == "lower-dynamic-functionals"]
    assert "clamps its output" in skip.reason
    assert capsys.readouterr().out == ""
    x = torch.randn(2, 3, 8, 8)
    assert values_equal(result.module(x), gm(x))


def test_regression_dtype_pair_without_kernel_is_a_skip_not_stdout(capsys):
    from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

    reference = reference_model(FunctionalLinear(), (LINEAR_X,), QConfigMapping().set_global(default_dynamic_qconfig))
    gm = copy.deepcopy(reference.module)
    dynamic = next(n for n in gm.graph.nodes if n.target is torch.quantize_per_tensor_dynamic)
    dynamic.args = (dynamic.args[0], torch.qint8, dynamic.args[2])
    gm.recompile()
    _lower_to_native_backend(copy.deepcopy(gm), dict(reference.qconfig_map), dict(reference.node_name_to_scope))
    assert "Didn't find dtype combination" in capsys.readouterr().out  # torch prints
    result = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    assert capsys.readouterr().out == ""
    (skip,) = [s for s in result.log.skips if s.pass_name == "lower-dynamic-functionals"]
    assert skip.reason == "no dynamic linear for activation torch.qint8 and weight torch.qint8"


# --- how the weight is quantized ------------------------------------------------------------------


def with_weight_quantize(reference, change):
    """A copy of the reference model whose weight quantize_per_* node is changed by `change(node, gm)`."""
    gm = copy.deepcopy(reference.module)
    weight_quantize = next(n for n in gm.graph.nodes if n.target in (torch.quantize_per_tensor, torch.quantize_per_channel) and "weight" in str(n.args[0] if n.args else n.kwargs["input"]))
    change(weight_quantize, gm)
    gm.recompile()
    return gm


def all_by_keyword(node, gm):
    names = ("input", "scales", "zero_points", "axis", "dtype") if node.target is torch.quantize_per_channel else ("input", "scale", "zero_point", "dtype")
    node.kwargs, node.args = dict(zip(names, node.args)), ()


@pytest.mark.parametrize("pass_", ["static", "dynamic"])
def test_regression_weight_quantized_with_keyword_arguments_is_lowered(pass_):
    # Was an IndexError (the dtype read from args[-1]). torch raises the same for static;
    # for dynamic it reads a scale as the dtype and leaves the linear float (found by the fuzzer).
    qconfig = get_default_qconfig_mapping("fbgemm") if pass_ == "static" else QConfigMapping().set_global(default_dynamic_qconfig)
    reference = reference_model(FunctionalLinear(), (LINEAR_X,), qconfig)
    keywords = with_weight_quantize(reference, all_by_keyword)
    ours = fqlower.lower(keywords, reference.qconfig_map, reference.node_name_to_scope)
    assert not [skip.reason for skip in ours.log.skips if "linear" in skip.reason]
    expected = torch_lowering(reference)  # the same model with positional arguments
    assert lowering_differences(expected, ours.module, (LINEAR_X,)) == []


@pytest.mark.parametrize("pass_", ["static", "dynamic"])
def test_regression_weight_with_float_zero_points_is_left_with_a_reason(pass_):
    # torch packs such a weight: the packed weight cannot be unpacked, and the lowered
    # model computes different values on every run.
    qconfig = get_default_qconfig_mapping("fbgemm") if pass_ == "static" else QConfigMapping().set_global(default_dynamic_qconfig)
    reference = reference_model(FunctionalLinear(), (LINEAR_X,), qconfig)

    def float_zero_points(node, gm):
        zero_point = node.args[2]
        setattr(gm, zero_point.target, getattr(gm, zero_point.target).to(torch.float32) - 0.5)

    gm = with_weight_quantize(reference, float_zero_points)
    ours = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    reasons = [skip.reason for skip in ours.log.skips]
    assert any("floating-point zero points" in reason for reason in reasons), reasons
    # the linear stays a float linear on the dequantized weight, so the lowered model
    # computes exactly what the reference model computes (static and dynamic alike)
    assert "torch._C._nn.linear(" in ours.module.code and "quantized.linear" not in ours.module.code
    assert not any(isinstance(value, torch._C.ScriptObject) for value in vars(ours.module).values())
    with torch.no_grad():
        assert torch.equal(ours.module(LINEAR_X), gm(LINEAR_X))
        assert torch.equal(ours.module(LINEAR_X), ours.module(LINEAR_X))


def unreadable_packed_weight(zero_point=-0.5):
    """A packed weight torch cannot unpack (float zero points); the same values on every call."""
    values = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    weight = torch.quantize_per_channel(values, torch.full((4,), 0.01), torch.full((4,), zero_point), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(weight, None)


def dynamic_linear_over(packed):
    """A GraphModule that runs quantized.linear_dynamic with `packed` held as attribute 'packed'."""
    root = nn.Module()
    root.packed = packed
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(torch.ops.quantized.linear_dynamic, (x, graph.get_attr("packed"))))
    return torch.fx.GraphModule(root, graph)


def test_regression_unreadable_packed_weight_in_the_input_is_a_precise_error():
    gm = dynamic_linear_over(unreadable_packed_weight())
    with pytest.raises(fqlower.UnsupportedInput, match="'packed': .*cannot be read back"):
        fqlower.lower(gm)


def test_regression_values_equal_on_unreadable_packed_weights_does_not_raise():
    """An unreadable packed weight equals only itself: two packed from the same values
    cannot be read back to be compared, so they count as different (never equal by
    mistake), and so does a readable one packed from integer zero points."""
    packed, twin, readable = unreadable_packed_weight(), unreadable_packed_weight(), unreadable_packed_weight(zero_point=0)
    with pytest.raises(fqlower.UnsupportedInput):
        describe(twin)  # the premise: torch cannot read it back
    assert values_equal(readable, unreadable_packed_weight(zero_point=0))  # the same recipe, readable: equal
    assert values_equal(packed, packed)
    assert not values_equal(packed, twin) and not values_equal(twin, packed)
    assert not values_equal(packed, readable) and not values_equal(readable, packed)
    assert not values_equal((packed,), (twin,)) and not values_equal({"w": packed}, {"w": twin})


class ManyScopes(nn.Module):
    """Functional linears in scopes whose graph order is not alphabetical, and more
    than ten in one scope (`_packed_weight_10` sorts before `_packed_weight_2`)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.zeta, self.alpha = FunctionalLinear(), FunctionalLinear()
        self.up0, self.up1 = nn.Parameter(torch.randn(6, 4)), nn.Parameter(torch.randn(6, 4))
        self.weights = [f"w{index}" for index in range(11)]
        for name in self.weights:
            self.register_parameter(name, nn.Parameter(torch.randn(4, 4)))

    def forward(self, x):
        x = self.alpha(F.linear(self.zeta(F.linear(x, self.up0)), self.up1))
        for name in self.weights:
            x = F.linear(x, getattr(self, name))
        return x


def test_regression_packed_weights_come_in_torchs_state_dict_order():
    x = torch.randn(5, 4)
    reference = static(ManyScopes(), x)
    theirs = torch_lowering(reference)
    ours = lowered(reference).module
    assert len([key for key in theirs.state_dict() if "packed" in key]) >= 13
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert lowering_differences(theirs, ours, (x,)) == []


class FunctionalConvTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.weight = nn.Parameter(torch.randn(3, 4, 3, 3))
        self.bias = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, 1, 0, 0, 1, 1)


def per_channel_conv_transpose():
    from torch.ao.quantization import QConfig, default_observer, default_per_channel_weight_observer

    qconfig = QConfig(activation=default_observer, weight=default_per_channel_weight_observer)
    return reference_model(FunctionalConvTranspose(), (CONV_X,), QConfigMapping().set_global(qconfig))


@pytest.fixture
def engine():
    saved = torch.backends.quantized.engine
    yield lambda name: setattr(torch.backends.quantized, "engine", name)
    torch.backends.quantized.engine = saved


def test_regression_per_channel_transposed_conv_is_a_skip_where_the_engine_cannot_pack_it(engine):
    # Was an EmitError at emit ("Per Channel Quantization is currently disabled for
    # transposed conv"); fbgemm, x86 and onednn cannot pack it, qnnpack can.
    reference = per_channel_conv_transpose()
    engine("x86")
    ours = lowered(reference)
    assert [skip.reason for skip in ours.log.skips] == [
        "%quantize_per_channel quantizes a transposed conv's weight per channel, which the x86 engine cannot pack "
        "(only qnnpack can): torch would fail packing it"
    ]
    assert torch.equal(ours.module(CONV_X), reference.module(CONV_X))
    engine("qnnpack")
    packed = lowered(reference)
    assert packed.log.skips == () and "quantized.conv_transpose2d" in packed.module.code
