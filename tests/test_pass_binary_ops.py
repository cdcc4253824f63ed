"""The binary-op pass: quantized add/mul/matmul (with relu) as torch 2.13 lowers them,
and a recorded miss wherever torch would crash or change the result."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, get_default_qconfig, get_default_qconfig_mapping

import fqlower
from fqlower import Change, FrozenDict, Node, Ref, RemoveNode, SetArgs, SetTarget, Skip
from fqlower.compare import lowering_differences, values_equal
from fqlower.passes.binary_ops import LOWER_BINARY_OPS
from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE
from fqlower.passes.static_modules import LOWER_STATIC_MODULES
from fqlower.passes.tensor_metadata import LOWER_TENSOR_METADATA
from fqlower.reference import ReferenceModel, reference_model, torch_lowering

PIPELINE = fqlower.Pipeline(
    "binary-ops-test", (LOWER_STATIC_MODULES, LOWER_BINARY_OPS, LOWER_TENSOR_METADATA, ELIMINATE_DEAD_CODE)
)
PASS = "lower-binary-ops"

q = torch.ops.quantized

# --------------------------------------------------------------------------- hand-built graphs

QPARAMS = {"a": (0.05, 60), "b": (0.04, 70), "out": (0.1, 50)}
DEQUANTIZED = "dequantized"  # `second` operand: y through quantize/dequantize
FLOAT = "float"  # `second` operand: the float placeholder y itself


def chain(
    op,
    *,
    second=DEQUANTIZED,
    first=DEQUANTIZED,
    swap=False,
    relu=None,
    op_kwargs=None,
    inputs_by_keyword=False,
    dtype_by_keyword=False,
    also_output=None,
):
    """x, y -> quantize -> dequantize -> op -> [relu] -> quantize -> dequantize -> output.

    Names: x, y, {a,b,out}_scale, {a,b,out}_zero_point, qa, dqa, qb, dqb, op, relu,
    qout, dqout. `second`/`first`: DEQUANTIZED, FLOAT or a scalar; `swap` puts the
    second operand first; `also_output` names a node the output returns as well.
    """
    root = nn.Module()
    for tag, (scale, zero_point) in QPARAMS.items():
        root.register_buffer(f"{tag}_scale", torch.tensor(scale))
        root.register_buffer(f"{tag}_zero_point", torch.tensor(zero_point))
    if relu == "module":
        root.relu = nn.ReLU()
    graph = torch.fx.Graph()
    nodes = {}

    def node(name, kind, target, args=(), kwargs=None):
        created = graph.create_node(kind, target, tuple(args), dict(kwargs or {}), name=name)
        assert created.name == name
        nodes[name] = created
        return created

    def quantize(value, tag, name, dtype_kw=False):
        scale = node(f"{tag}_scale", "get_attr", f"{tag}_scale")
        zero_point = node(f"{tag}_zero_point", "get_attr", f"{tag}_zero_point")
        if dtype_kw:
            return node(name, "call_function", torch.quantize_per_tensor, (value, scale, zero_point), {"dtype": torch.quint8})
        return node(name, "call_function", torch.quantize_per_tensor, (value, scale, zero_point, torch.quint8))

    x, y = node("x", "placeholder", "x"), node("y", "placeholder", "y")

    def operand(kind, value, tag):
        if kind == DEQUANTIZED:
            return node(f"dq{tag}", "call_method", "dequantize", (quantize(value, tag, f"q{tag}"),))
        return value if kind == FLOAT else kind

    lhs, rhs = operand(first, x, "a"), operand(second, y, "b")
    args = (rhs, lhs) if swap else (lhs, rhs)
    if inputs_by_keyword:
        binop = node("op", "call_function", op, (), {"input": args[0], "other": args[1]})
    else:
        binop = node("op", "call_function", op, args, op_kwargs)
    out = binop
    if relu == "module":
        out = node("relu", "call_module", "relu", (binop,))
    elif relu is F.relu:
        out = node("relu", "call_function", F.relu, (binop,), {"inplace": False})
    elif relu is not None:
        out = node("relu", "call_function", relu, (binop,))
    qout = quantize(out, "out", "qout", dtype_kw=dtype_by_keyword)
    dqout = node("dqout", "call_method", "dequantize", (qout,))
    graph.output((dqout, nodes[also_output]) if also_output else dqout)
    gm = torch.fx.GraphModule(root, graph)
    gm.graph.lint()
    return gm


def inputs(shape=(4, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator) * 2 for _ in range(2))


def reference(gm, qconfig_map=None, example=None):
    return ReferenceModel(gm, dict(qconfig_map or {}), {}, example or inputs())


def lower(ref):
    return fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope, pipeline=PIPELINE)


def run_pass(gm, qconfig_map=None):
    program = fqlower.from_fx(gm, qconfig_map or {})
    return program, LOWER_BINARY_OPS.run(program)


def assert_equals_torch(ref):
    expected, lowered = torch_lowering(ref), lower(ref).module
    for example in (ref.example_inputs, inputs(seed=7)):
        differences = lowering_differences(expected, lowered, example)
        assert differences == [], "\n".join(differences) + "\ntorch:\n" + expected.code + "\nfqlower:\n" + lowered.code


def the_skip(result):
    (entry,) = result.entries
    assert isinstance(entry, Skip), entry
    assert (entry.pass_name, entry.rule, entry.node) == (PASS, PASS, "qout")
    return entry


# --------------------------------------------------------------------------- the rewrite

TENSOR_TENSOR = [
    (operator.add, q.add),
    (torch.add, q.add),
    (operator.mul, q.mul),
    (torch.mul, q.mul),
    (torch.matmul, q.matmul),
]


@pytest.mark.parametrize(("op", "qop"), TENSOR_TENSOR, ids=lambda v: getattr(v, "__name__", str(v)))
def test_tensor_tensor_op_becomes_the_quantized_op_with_output_qparams(op, qop):
    gm = chain(op)
    program, result = run_pass(gm)
    (change,) = result.entries
    assert isinstance(change, Change)
    assert (change.pass_name, change.rule, change.anchor) == (PASS, PASS, "qout")
    assert dict(change.bindings) == {
        "quantize": "qout",
        "binop": "op",
        "lhs": "dqa",
        "rhs": "dqb",
        "scale": "out_scale",
        "zero_point": "out_zero_point",
    }
    new_args = (Ref("qa"), Ref("qb"), Ref("out_scale"), Ref("out_zero_point"))
    assert change.edits == (
        SetTarget("qout", "call_function", qop),
        SetArgs("qout", new_args, FrozenDict()),
        RemoveNode("op"),
    )
    after = result.program
    assert after.node("qout") == Node("qout", "call_function", qop, new_args)
    assert "op" not in after
    assert after.users("qout") == ("dqout",)
    # the dequantize nodes are left for dead-code elimination, as torch does
    assert "dqa" in after and "dqb" in after and after.users("dqa") == ()
    assert_equals_torch(reference(gm))


RELUS = [F.relu, torch.relu, "module"]
FUSED = [(operator.add, q.add_relu), (torch.add, q.add_relu), (operator.mul, q.mul_relu), (torch.mul, q.mul_relu)]


@pytest.mark.parametrize("relu", RELUS, ids=["F.relu", "torch.relu", "nn.ReLU"])
@pytest.mark.parametrize(("op", "qop"), FUSED, ids=lambda v: getattr(v, "__name__", str(v)))
def test_op_then_relu_becomes_the_fused_quantized_op(op, qop, relu):
    gm = chain(op, relu=relu)
    program, result = run_pass(gm)
    (change,) = result.changes
    assert change.bindings["relu"] == "relu" and change.bindings["binop"] == "op"
    assert change.edits[0] == SetTarget("qout", "call_function", qop)
    assert change.edits[2:] == (RemoveNode("relu"), RemoveNode("op"))
    assert result.program.node("qout").args == (Ref("qa"), Ref("qb"), Ref("out_scale"), Ref("out_zero_point"))
    assert "relu" not in result.program and "op" not in result.program
    assert_equals_torch(reference(gm))


SCALAR_CASES = [
    pytest.param(operator.add, 1.5, False, None, q.add, id="x+1.5"),
    pytest.param(operator.add, 1.5, True, None, q.add, id="1.5+x"),
    pytest.param(torch.add, -0.5, False, None, q.add, id="torch.add(x,-0.5)"),
    pytest.param(operator.mul, 0.5, False, None, q.mul, id="x*0.5"),
    pytest.param(operator.mul, 3.0, True, None, q.mul, id="3*x"),
    pytest.param(torch.mul, 2.0, False, torch.relu, q.mul_relu, id="relu(torch.mul(x,2))"),
    pytest.param(operator.add, 0.25, False, "module", q.add_relu, id="ReLU(x+0.25)"),
]


@pytest.mark.parametrize(("op", "scalar", "swap", "relu", "qop"), SCALAR_CASES)
def test_tensor_scalar_op_takes_no_output_qparams(op, scalar, swap, relu, qop):
    gm = chain(op, second=scalar, swap=swap, relu=relu)
    program, result = run_pass(gm)
    (change,) = result.changes
    side = "rhs" if swap else "lhs"
    expected_bindings = {"quantize": "qout", "binop": "op", side: "dqa"}
    if relu is not None:
        expected_bindings["relu"] = "relu"
    assert dict(change.bindings) == expected_bindings
    new_args = (scalar, Ref("qa")) if swap else (Ref("qa"), scalar)
    assert change.edits[:2] == (SetTarget("qout", "call_function", qop), SetArgs("qout", new_args, FrozenDict()))
    # the output scale and zero point are unused now; dead-code elimination removes them
    assert result.program.users("out_scale") == () and result.program.users("out_zero_point") == ()
    lowered = lower(reference(gm))
    assert "out_scale" not in lowered.program and "out_zero_point" not in lowered.program
    assert_equals_torch(reference(gm))


def test_one_dequantize_on_both_sides_counts_as_tensor_tensor():
    gm = _self_add()
    program, result = run_pass(gm)
    (change,) = result.changes
    assert change.bindings["lhs"] == change.bindings["rhs"] == "dqa"
    assert result.program.node("qout").args == (Ref("qa"), Ref("qa"), Ref("out_scale"), Ref("out_zero_point"))
    assert_equals_torch(reference(gm))


def _self_add():
    """qa -> dqa -> dqa + dqa -> qout."""
    gm = chain(operator.add, second=FLOAT)
    graph = gm.graph
    binop = next(node for node in graph.nodes if node.name == "op")
    dqa = next(node for node in graph.nodes if node.name == "dqa")
    binop.args = (dqa, dqa)
    gm.recompile()
    return gm


# --------------------------------------------------------------------------- misses torch shares


def test_qconfig_none_is_a_miss_and_torch_leaves_it_too():
    gm = chain(operator.add)
    program, result = run_pass(gm, {"op": None})
    assert the_skip(result).reason == "qconfig of 'op' is None"
    assert result.program == program
    assert_equals_torch(reference(gm, {"op": None}))


def test_a_float_input_node_is_a_miss_and_torch_leaves_it_too():
    gm = chain(torch.mul, second=FLOAT)
    program, result = run_pass(gm)
    reason = the_skip(result).reason
    assert "%y" in reason and "'op'" in reason and "not a dequantize" in reason
    assert result.program == program
    assert_equals_torch(reference(gm))


def test_no_dequantized_input_at_all_is_a_miss():
    gm = chain(operator.add, first=2.0, second=3.0)
    program, result = run_pass(gm)
    assert the_skip(result).reason == "no input of 'op' is dequantized"
    assert result.program == program


def test_other_quantize_nodes_and_other_ops_are_not_candidates():
    gm = chain(torch.sub)
    program, result = run_pass(gm)
    assert result.entries == () and result.program == program


# --------------------------------------------------------------------------- torch's failures


def assert_left_alone(gm, result, program):
    """The pass changed nothing, and the lowered model computes what the input does."""
    assert result.program == program
    ref = reference(gm)
    lowered = lower(ref).module
    for example in (ref.example_inputs, inputs(seed=3)):
        assert values_equal(lowered(*example), gm(*example))


def test_torch_drops_alpha_and_changes_the_result_fqlower_leaves_the_add():
    gm = chain(torch.add, op_kwargs={"alpha": 2})
    program, result = run_pass(gm)
    reason = the_skip(result).reason
    assert "'op'" in reason and "alpha" in reason
    assert_left_alone(gm, result, program)
    example = inputs()
    by_torch = torch_lowering(reference(gm))
    assert not values_equal(by_torch(*example), gm(*example))  # torch computed x + y, not x + 2y


def test_torch_asserts_on_inputs_by_keyword_fqlower_leaves_the_op():
    gm = chain(torch.add, inputs_by_keyword=True)
    program, result = run_pass(gm)
    assert the_skip(result).reason.startswith("'op' takes its inputs by keyword")
    assert_left_alone(gm, result, program)
    with pytest.raises(AssertionError, match="exceeded reference node's arg length"):
        torch_lowering(reference(gm))


def test_torch_has_no_quantized_matmul_relu_fqlower_leaves_both():
    gm = chain(torch.matmul, relu=torch.relu)
    program, result = run_pass(gm)
    reason = the_skip(result).reason
    assert "matmul" in reason and "'op'" in reason and "'relu'" in reason
    assert_left_alone(gm, result, program)
    with pytest.raises(KeyError):
        torch_lowering(reference(gm))


@pytest.mark.parametrize(("relu", "shared"), [(None, "op"), (torch.relu, "op"), (torch.relu, "relu")])
def test_torch_erases_a_node_still_in_use_fqlower_leaves_the_chain(relu, shared):
    gm = chain(operator.mul, relu=relu, also_output=shared)
    program, result = run_pass(gm)
    reason = the_skip(result).reason
    assert reason.startswith(f"{shared!r} is also used by ['output']")
    assert_left_alone(gm, result, program)
    with pytest.raises(RuntimeError, match="still had 1 users"):
        torch_lowering(reference(gm))


def test_torch_cannot_unpack_a_quantize_with_keyword_dtype_fqlower_leaves_it():
    gm = chain(operator.add, dtype_by_keyword=True)
    program, result = run_pass(gm)
    assert "'qout'" in the_skip(result).reason
    assert_left_alone(gm, result, program)
    with pytest.raises(ValueError, match="not enough values to unpack"):
        torch_lowering(reference(gm))


# --------------------------------------------------------------------------- reference models


class Binops(nn.Module):
    """add/mul/matmul, tensor-tensor and tensor-scalar, operator and torch forms, with
    F.relu, torch.relu and nn.ReLU, plus shape reads."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.relu = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.ReLU()

    def forward(self, x):
        a, b = self.c1(x), self.c2(x)
        y = a + b
        z = F.relu(torch.add(y, a))
        w = self.relu(torch.mul(z, b))
        v = torch.relu(w * 0.5)
        u = torch.matmul(1.0 + v, b)
        return u, u.shape, u.size(0), getattr(u, "shape")


class SelfAndParam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 3, 1)
        self.p = nn.Parameter(torch.randn(4))

    def forward(self, x):
        a = self.c1(x)
        return torch.relu(a * a) + self.p, torch.add(a, 2.0)


def _fbgemm():
    return get_default_qconfig_mapping("fbgemm")


def _add_not_quantized():
    return QConfigMapping().set_global(get_default_qconfig("fbgemm")).set_object_type(operator.add, None)


def _reference(model_class, mapping, **kwargs):
    torch.manual_seed(0)
    model = model_class(**kwargs)
    example = (torch.randn(16, 3, 4, 4),)
    return reference_model(model, example, mapping())


REFERENCE_CASES = [
    pytest.param(Binops, _fbgemm, id="binops-fbgemm"),
    pytest.param(SelfAndParam, _fbgemm, id="self_and_param-fbgemm"),
    pytest.param(Binops, _add_not_quantized, id="binops-add_not_quantized"),
]


@pytest.mark.parametrize(("model_class", "mapping"), REFERENCE_CASES)
def test_lowering_reference_models_equals_torch(model_class, mapping):
    ref = _reference(model_class, mapping)
    lowered = lower(ref)
    changes = [entry for entry in lowered.log.entries if isinstance(entry, Change) and entry.pass_name == PASS]
    assert changes, "the model must exercise the pass"
    expected = torch_lowering(ref)
    for example in (ref.example_inputs, (torch.randn(16, 3, 4, 4),)):
        differences = lowering_differences(expected, lowered.module, example)
        assert differences == [], "\n".join(differences) + "\ntorch:\n" + expected.code + "\nfqlower:\n" + lowered.module.code


def test_with_add_not_quantized_the_add_is_a_recorded_miss_in_a_real_reference_model():
    ref = _reference(Binops, _add_not_quantized)
    skips = [entry for entry in lower(ref).log.entries if isinstance(entry, Skip) and entry.pass_name == PASS]
    adds = {node.name for node in ref.module.graph.nodes if node.target in (operator.add, torch.add)}
    assert skips and all(skip.reason.endswith("is None") for skip in skips)
    assert {skip.reason.split("'")[1] for skip in skips} <= adds


class AlphaAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return torch.add(self.c1(x), self.c2(x), alpha=2)


class KeywordAdd(AlphaAdd):
    def forward(self, x):
        return torch.add(input=self.c1(x), other=self.c2(x))


def test_reference_model_torch_drops_alpha_fqlower_keeps_the_reference_result():
    ref = _reference(AlphaAdd, _fbgemm)
    example = ref.example_inputs
    lowered = lower(ref)
    skips = [entry for entry in lowered.log.entries if isinstance(entry, Skip) and entry.pass_name == PASS]
    assert len(skips) == 1 and "alpha" in skips[0].reason
    assert values_equal(lowered.module(*example), ref.module(*example))
    assert not values_equal(torch_lowering(ref)(*example), ref.module(*example))


def test_reference_model_torch_asserts_on_keyword_inputs_fqlower_keeps_the_reference_result():
    ref = _reference(KeywordAdd, _fbgemm)
    example = ref.example_inputs
    lowered = lower(ref)
    skips = [entry for entry in lowered.log.entries if isinstance(entry, Skip) and entry.pass_name == PASS]
    assert len(skips) == 1 and "by keyword" in skips[0].reason
    assert values_equal(lowered.module(*example), ref.module(*example))
    with pytest.raises(AssertionError):
        torch_lowering(ref)


class LayerScaled(nn.Module):
    """ConvNeXt's residual: x + layer_scale * conv(x), with its default scale of 1e-6."""

    def __init__(self, layer_scale: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.layer_scale = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), layer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return x + self.conv2(x) * self.layer_scale


@pytest.mark.parametrize(("layer_scale", "native"), [(1e-6, False), (0.5, True)])
def test_regression_a_qnnpack_add_of_scales_too_far_apart_stays_float(layer_scale, native):
    """Found by the torchvision suite (convnext_tiny on qnnpack): QNNPACK creates its add
    operator only for input-to-output scale ratios in [2**-14, 2**8), so torch's lowered
    model fails running `x + 1e-6 * y`; fqlower leaves that add float, and lowers the
    rest (and an add of nearby scales) as torch does."""
    from fqlower.reasons import Code
    from fqlower.reference import quantized_engine

    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    with quantized_engine("qnnpack"):
        reference = reference_model(LayerScaled(layer_scale).eval(), (x,), get_default_qconfig_mapping("qnnpack"))
        theirs = torch_lowering(reference)
        lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
        skips = [skip for skip in lowering.log.skips if skip.pass_name == "lower-binary-ops"]
        if native:
            assert skips == [] and lowering_differences(theirs, lowering.module, (x,)) == []
            return
        with pytest.raises(RuntimeError, match="failed to create QNNPACK Add operator"):
            theirs(x)
        (skip,) = skips
        assert skip.code is Code.TORCH_MODEL_CRASHES and "QNNPACK's add takes ratios in [2**-14, 2**8)" in skip.reason
        expected = reference.module(x)
        assert (lowering.module(x) - expected).abs().max() <= 0.05 * expected.abs().max() + 0.02
