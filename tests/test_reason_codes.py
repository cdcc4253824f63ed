"""Reason codes as data (fqlower.reasons, fqlower.departures).

- Regressions for the two torch bugs found by law 2: torch 2.13's quantized
  EmbeddingBag always sums (mode 'mean'/'max' stay reference modules, torch-wrong-result),
  and qnnpack's quantized clamp needs both bounds (a one-sided clamp stays float on the
  qnnpack engine, torch-model-crashes).
- Every documented torch failure of the pass tests records the departure code that
  matches what torch does (fails lowering, returns a model that fails, computes
  something else); the misses torch shares record as-torch or kernel-missing.
- Codes and change reasons survive the JSON-Lines change log; bad codes are refused.
- `differences_outside` on hand-built graphs: what a region excuses and what it does not;
  `departures`/`departed_nodes` list the departure entries and nothing else.
"""

from __future__ import annotations

import copy
import json
import operator

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, get_default_qconfig_mapping

import test_pass_binary_ops as binary_tests
import test_pass_modules as module_tests
import test_special_pattern_regressions as special_tests
import zoo

import fqlower
from fqlower import ChangeLog, ChangeLogError
from fqlower.compare import lowering_differences, values_equal
from fqlower.departures import departed_nodes, departures, differences_outside
from fqlower.passes import LOWER_DYNAMIC_MODULES, LOWER_STATIC_MODULES
from fqlower.reasons import DEPARTURES, Code, is_departure
from fqlower.explain import explain
from fqlower.reference import ReferenceModel, quantized_engine, reference_model, torch_lowering

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torch.*", "ignore::DeprecationWarning", "ignore::FutureWarning")


def lower(ref: ReferenceModel) -> fqlower.Lowering:
    return fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)


def departure_entries(log: ChangeLog) -> list:
    """The entries whose code is a departure, read from the set itself (not through is_departure)."""
    return [entry for entry in log.entries if entry.code in DEPARTURES]


def test_the_codes_and_which_of_them_are_departures():
    assert [code.value for code in Code] == [
        "as-torch",
        "kernel-missing",
        "torch-crashes",
        "torch-model-crashes",
        "torch-wrong-result",
    ]
    assert DEPARTURES == {Code.TORCH_CRASHES, Code.TORCH_MODEL_CRASHES, Code.TORCH_WRONG_RESULT}
    assert [is_departure(code) for code in Code] == [False, False, True, True, True]
    # the log stores plain strings: they count the same as the enum members
    assert [is_departure(code.value) for code in Code] == [False, False, True, True, True]
    assert not is_departure("torch-explodes") and not is_departure("")


# --- 1. quantized EmbeddingBag always sums ------------------------------------------------------

BAG_INDICES = torch.tensor([9, 6, 5, 7, 8, 8, 9, 2, 8, 6, 6, 9, 1, 6, 8, 8, 3, 2, 3, 6])
BAG_OFFSETS = torch.tensor([0, 5, 12, 20])  # include_last_offset=True: three bags of 5, 7 and 8
FRESH_INDICES = torch.tensor([0, 3, 3, 1, 4, 7, 2, 5, 9, 9, 8, 0])
FRESH_OFFSETS = torch.tensor([0, 2, 3, 7, 12])


class Bag(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bag = nn.EmbeddingBag(10, 12, mode=mode, include_last_offset=True)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.bag(indices, offsets)


def bag_reference(mode: str) -> ReferenceModel:
    # the zoo's weight-only recipe: float_qparams_weight_only_qconfig for Embedding(Bag)
    return reference_model(Bag(mode), (BAG_INDICES, BAG_OFFSETS), zoo._weight_only_emb())


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_regression_embedding_bag_that_does_not_sum_stays_a_reference_module(mode):
    ref = bag_reference(mode)
    theirs = torch_lowering(ref)
    ours = lower(ref)
    assert type(theirs.bag) is nnq.EmbeddingBag  # the premise: torch lowers it ...
    weight = ref.module.bag.get_weight()  # the quantized-dequantized weight both compute with
    for inputs in ((BAG_INDICES, BAG_OFFSETS), (FRESH_INDICES, FRESH_OFFSETS)):
        with torch.no_grad():
            want, by_torch, by_us = ref.module(*inputs), theirs(*inputs), ours.module(*inputs)
        # ... into a module that sums, whatever the mode
        summed = F.embedding_bag(inputs[0], weight, inputs[1], mode="sum", include_last_offset=True)
        assert torch.allclose(by_torch, summed, atol=1e-4)
        assert values_equal(by_us, want)  # fqlower's computes exactly what the reference model does
        ours_error, torch_error = (by_us - want).abs().max(), (by_torch - want).abs().max()
        assert torch_error > 0.5 and torch_error > 10 * ours_error, (torch_error, ours_error)

    assert type(ours.module.bag) is nnqr.EmbeddingBag and ours.module.bag.mode == mode
    assert [(skip.pass_name, skip.node, skip.code) for skip in ours.log.skips] == [
        ("lower-weight-only-modules", "bag", Code.TORCH_WRONG_RESULT)
    ]
    assert mode in ours.log.skips[0].reason and "sums" in ours.log.skips[0].reason
    assert departed_nodes(ours) == {"bag"}
    # everything but the bag (and what it uses) is as torch lowers it; without the departure it is not
    assert differences_outside(theirs, ours.module, departed_nodes(ours)) == []
    assert differences_outside(theirs, ours.module, set()) != []


def test_embedding_bag_that_sums_is_lowered_as_torch_lowers_it():
    ref = bag_reference("sum")
    theirs = torch_lowering(ref)
    ours = lower(ref)
    assert type(ours.module.bag) is nnq.EmbeddingBag
    assert ours.log.skips == () and departures(ours) == []
    for inputs in ((BAG_INDICES, BAG_OFFSETS), (FRESH_INDICES, FRESH_OFFSETS)):
        assert lowering_differences(theirs, ours.module, inputs) == []


# --- 2. qnnpack's quantized clamp needs both bounds ----------------------------------------------




ONE_SIDED = {
    "function-min": lambda y: torch.clamp(y, min=0.0),
    "method-max": lambda y: y.clamp(max=0.5),
    "function-none-max": lambda y: torch.clamp(y, None, 0.5),
    "method-min-none": lambda y: y.clamp(0.0, None),
}
BOTH_SIDES = {
    "function-both": lambda y: torch.clamp(y, -0.5, 0.5),
    "method-both": lambda y: y.clamp(min=-0.5, max=0.5),
}


class LinearClamp(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4)
        self.clamp = {**ONE_SIDED, **BOTH_SIDES}[form]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clamp(self.fc(x))


CLAMP_X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)) * 2
CLAMP_FRESH = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)) * 2


def clamp_reference(form: str) -> ReferenceModel:
    return reference_model(LinearClamp(form), (CLAMP_X,), get_default_qconfig_mapping("qnnpack"))


def clamp_node(gm: torch.fx.GraphModule) -> torch.fx.Node:
    (node,) = [node for node in gm.graph.nodes if node.target in (torch.clamp, "clamp")]
    return node


@pytest.mark.parametrize("form", ONE_SIDED)
def test_regression_one_sided_clamp_stays_float_on_qnnpack(form):
    ref = clamp_reference(form)
    quantize = next(iter(clamp_node(ref.module).users))  # the quantize of the clamp's output
    out_scale = float(getattr(ref.module, quantize.args[1].target))
    with quantized_engine("qnnpack"):
        theirs = torch_lowering(ref)
        with pytest.raises(RuntimeError, match="Both min and max"), torch.no_grad():
            theirs(CLAMP_X)
        ours = lower(ref)
        with torch.no_grad():
            outputs = [(ours.module(x), ref.module(x)) for x in (CLAMP_X, CLAMP_FRESH)]
    assert [(skip.node, skip.code) for skip in ours.log.skips] == [(quantize.name, Code.TORCH_MODEL_CRASHES)]
    assert "both bounds" in ours.log.skips[0].reason
    # the clamp reads a dequantized (float) tensor; the linear before it is lowered as torch lowers it
    clamp = clamp_node(ours.module)
    assert clamp.args[0].op == "call_method" and clamp.args[0].target == "dequantize"
    assert type(ours.module.fc) is nnq.Linear
    for got, want in outputs:
        assert (got - want).abs().max() <= out_scale + 1e-6


@pytest.mark.parametrize("form", BOTH_SIDES)
def test_clamp_with_both_bounds_is_lowered_on_qnnpack_as_torch_lowers_it(form):
    ref = clamp_reference(form)
    with quantized_engine("qnnpack"):
        theirs = torch_lowering(ref)
        ours = lower(ref)
        assert departures(ours) == [] and ours.log.skips == ()
        assert clamp_node(ours.module).args[0].op == "call_module"  # the clamp runs on the quantized output
        for x in (CLAMP_X, CLAMP_FRESH):
            assert lowering_differences(theirs, ours.module, (x,)) == []


@pytest.mark.parametrize("engine", ["x86", "fbgemm"])
@pytest.mark.parametrize("form", ["function-min", "method-max"])
def test_one_sided_clamp_on_other_engines_is_lowered_as_torch_lowers_it(form, engine):
    ref = clamp_reference(form)
    with quantized_engine(engine):
        theirs = torch_lowering(ref)
        ours = lower(ref)
        assert ours.log.skips == ()
        assert clamp_node(ours.module).args[0].op == "call_module"
        for x in (CLAMP_X, CLAMP_FRESH):
            assert lowering_differences(theirs, ours.module, (x,)) == []


def test_engine_is_restored_after_the_qnnpack_tests():
    before = torch.backends.quantized.engine
    with pytest.raises(ZeroDivisionError), quantized_engine("qnnpack"):
        assert torch.backends.quantized.engine == "qnnpack"
        1 / 0
    assert torch.backends.quantized.engine == before


# Found while writing the tests above: qnnpack's quantized clamp (also hardtanh and relu6)
# reads a channels_last tensor (what a quantized conv returns) as if it were contiguous,
# so the values land at the wrong places. torch lowers conv -> clamp(min, max) on qnnpack
# to exactly that, and so does fqlower (code as-torch): both compute something else.


def test_premise_qnnpack_clamp_scrambles_a_channels_last_tensor():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    q = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8).contiguous(memory_format=torch.channels_last)
    want = q.dequantize().clamp(-0.5, 0.5)
    with quantized_engine("x86"):
        assert (torch.clamp(q, -0.5, 0.5).dequantize() - want).abs().max() <= 0.02
    with quantized_engine("qnnpack"):
        assert (torch.clamp(q, -0.5, 0.5).dequantize() - want).abs().max() > 0.5
        assert (torch.clamp(q.contiguous(), -0.5, 0.5).dequantize() - want).abs().max() <= 0.02


CONV_CLAMPS = {
    "clamp": lambda y: torch.clamp(y, -0.5, 0.5),
    "hardtanh": lambda y: F.hardtanh(y, -0.5, 0.5),
    "relu6": lambda y: F.relu6(y * 8),
}


class ConvClamp(nn.Module):
    def __init__(self, clamp: str = "clamp") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 1)
        self.clamp = CONV_CLAMPS[clamp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clamp(self.conv(x))


@pytest.mark.parametrize("clamp", ["clamp", "hardtanh", "relu6"])
def test_regression_conv_then_clamp_on_qnnpack_stays_float_and_computes_the_reference(clamp):
    """qnnpack's quantized clamp, hardtanh and relu6 read the channels_last output of a
    quantized conv as if it were contiguous: torch's lowered model is off by far more
    than a quantization step; fqlower leaves the clamp float (torch-wrong-result)."""
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = reference_model(ConvClamp(clamp), (x,), get_default_qconfig_mapping("qnnpack"))
    step = float(ref.module.conv_scale_0)
    with quantized_engine("qnnpack"):
        ours, theirs = lower(ref), torch_lowering(ref)
        with torch.no_grad():
            error = (ours.module(x) - ref.module(x)).abs().max()
            torch_error = (theirs(x) - ref.module(x)).abs().max()
    assert torch_error > 10 * step
    assert error <= 2 * step, (error, [entry.code for entry in ours.log.entries])
    assert [(skip.code, skip.node) for skip in ours.log.skips if is_departure(skip.code)] == [
        (Code.TORCH_WRONG_RESULT, next(n.name for n in ref.module.graph.nodes if n.op == "call_function" and n.target is torch.quantize_per_tensor and n.args[0].name.startswith(("clamp", "hardtanh", "relu6"))))
    ]


class PReLUModel(nn.Module):
    def __init__(self, init: float) -> None:
        super().__init__()
        self.prelu = nn.PReLU(init=init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(x)


def test_regression_prelu_whose_weight_qparams_cannot_hold_one_stays_float():
    """quantized::prelu multiplies positive inputs by 1.0 quantized in the weight's qparams;
    with the default slope 0.25 those saturate far below 1.0, and torch's lowered model
    shrinks every positive value (found by law 2 once it reached its checks)."""
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 2
    ref = reference_model(PReLUModel(0.25), (x,), get_default_qconfig_mapping("fbgemm"))
    ours, theirs = lower(ref), torch_lowering(ref)
    with torch.no_grad():
        want, got, torch_got = ref.module(x), ours.module(x), theirs(x)
    step = float(ref.module.prelu_scale_0)
    assert (torch_got - want).abs().max() > 0.5 * want.abs().max()
    assert (got - want).abs().max() <= step
    assert [(skip.rule, skip.code) for skip in ours.log.skips] == [("swap-module", Code.TORCH_WRONG_RESULT)]
    assert type(ours.module.prelu) is nn.PReLU


def test_prelu_whose_weight_qparams_hold_one_is_lowered_as_torch_does():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 2
    ref = reference_model(PReLUModel(1.25), (x,), get_default_qconfig_mapping("fbgemm"))
    ours, theirs = lower(ref), torch_lowering(ref)
    assert lowering_differences(theirs, ours.module, (x,)) == []
    assert ours.log.skips == ()


def test_explain_shows_the_code_of_a_departure():
    """`fqlower explain` (and `explain().format()`) prefix a departure's reason with its code."""
    with quantized_engine("qnnpack"):
        lowering = lower(clamp_reference("function-min"))
    text = explain(lowering).format()
    assert "- [torch-model-crashes] %clamp clamps one side only" in text, text


class ConvView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.view(y.size(0), -1)


def test_regression_a_view_of_a_conv_output_is_lowered_as_a_reshape():
    """A quantized conv returns a channels_last tensor, on which `view(n, -1)` fails (and so
    does a float view of its dequantized value); the float model's conv output is
    contiguous. fqlower lowers a reshape there (found by law 1 in a 1,000-example run)."""
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = reference_model(ConvView(), (x,), get_default_qconfig_mapping("fbgemm"))
    ours, theirs = lower(ref), torch_lowering(ref)
    with pytest.raises(RuntimeError, match="view size is not compatible"), torch.no_grad():
        theirs(x)
    with torch.no_grad():
        error = (ours.module(x) - ref.module(x)).abs().max()
    assert error <= 2 * float(ref.module.conv_scale_0)
    departed = [(entry.code, entry.anchor) for entry in ours.log.changes if is_departure(entry.code)]
    assert departed == [(Code.TORCH_MODEL_CRASHES, "quantize_per_tensor_2")]
    assert [n.target for n in ours.module.graph.nodes if n.name == "view"] == ["reshape"]
    assert differences_outside(theirs, ours.module, departed_nodes(ours)) == []


class ChannelShuffle(nn.Module):
    """ShuffleNetV2's channel shuffle between two convs: a view that splits the channels
    (five dimensions from four), a transpose, `.contiguous()`, and a view back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        n, c, h, w = y.size()
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous()
        return self.conv2(y.view(n, -1, h, w))


def test_regression_views_that_work_on_channels_last_stay_views_as_torch_lowers_them():
    """Found by the torchvision suite: ShuffleNetV2 departed at every channel shuffle, where
    torch's views run. A view to as many dimensions or more only splits, and one after
    `.contiguous()` reads a contiguous tensor: both equal torch's lowering."""
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    ref = reference_model(ChannelShuffle(), (x,), get_default_qconfig_mapping("fbgemm"))
    ours = lower(ref)
    assert [entry for entry in ours.log.entries if is_departure(entry.code)] == []
    assert lowering_differences(torch_lowering(ref), ours.module, (x,)) == []
    assert [n.target for n in ours.module.graph.nodes if n.op == "call_method" and n.target in ("view", "reshape")] == ["view", "view"]


# --- 3. documented torch failures record the matching departure code --------------------------

STAGE_CODES = {"lowering": Code.TORCH_CRASHES, "running": Code.TORCH_MODEL_CRASHES}
# the callable checks of REGRESSIONS, by what they show torch doing
CHECK_CODES = {special_tests.wrong_type_of_second_output: Code.TORCH_WRONG_RESULT}


@pytest.mark.parametrize("case", special_tests.REGRESSIONS.values(), ids=special_tests.REGRESSIONS.keys())
def test_a_documented_special_pattern_failure_records_its_departure_code(case):
    skip = special_tests.only_skip(case.make(), case.inputs if case.runs else None)
    assert is_departure(skip.code), skip
    if callable(case.torch_fails):
        expected = CHECK_CODES.get(case.torch_fails)
        assert expected is None or skip.code is expected, skip
    else:
        stage, _ = case.torch_fails
        assert skip.code is STAGE_CODES[stage], (stage, skip)


def test_every_callable_check_of_the_regressions_has_a_code_here():
    checks = {case.torch_fails for case in special_tests.REGRESSIONS.values() if callable(case.torch_fails)}
    assert checks <= CHECK_CODES.keys(), checks - CHECK_CODES.keys()
    assert {case.torch_fails[0] for case in special_tests.REGRESSIONS.values() if not callable(case.torch_fails)} == {
        "lowering",
        "running",
    }


BINARY_CASES = {
    # torch drops the alpha and computes x + y
    "alpha-dropped": (lambda: binary_tests.chain(torch.add, op_kwargs={"alpha": 2}), None, Code.TORCH_WRONG_RESULT),
    # torch asserts on an add whose inputs are keywords
    "inputs-by-keyword": (lambda: binary_tests.chain(torch.add, inputs_by_keyword=True), None, Code.TORCH_CRASHES),
    # no quantized matmul_relu: torch's KeyError
    "matmul-relu": (lambda: binary_tests.chain(torch.matmul, relu=torch.relu), None, Code.TORCH_CRASHES),
    # torch erases a node the output still uses
    "op-also-an-output": (lambda: binary_tests.chain(operator.mul, also_output="op"), None, Code.TORCH_CRASHES),
    # torch cannot unpack a quantize whose dtype is a keyword
    "dtype-by-keyword": (lambda: binary_tests.chain(operator.add, dtype_by_keyword=True), None, Code.TORCH_CRASHES),
    # misses torch shares
    "qconfig-none": (lambda: binary_tests.chain(operator.add), {"op": None}, Code.AS_TORCH),
    "float-input": (lambda: binary_tests.chain(torch.mul, second=binary_tests.FLOAT), None, Code.AS_TORCH),
}


@pytest.mark.parametrize("name", BINARY_CASES)
def test_a_binary_op_miss_records_the_code_of_what_torch_does(name):
    make, qconfig_map, code = BINARY_CASES[name]
    gm = make()
    _, result = binary_tests.run_pass(gm, qconfig_map)
    assert binary_tests.the_skip(result).code is code
    ref = binary_tests.reference(gm, qconfig_map)
    # the code is what torch does on the same graph
    if code is Code.TORCH_CRASHES:
        with pytest.raises(Exception):
            torch_lowering(ref)
    elif code is Code.TORCH_WRONG_RESULT:
        with torch.no_grad():
            assert not values_equal(torch_lowering(ref)(*ref.example_inputs), gm(*ref.example_inputs))
    else:
        binary_tests.assert_equals_torch(ref)


def test_reference_model_alpha_and_keyword_adds_record_their_departures():
    codes = {}
    for model_class in (binary_tests.AlphaAdd, binary_tests.KeywordAdd):
        ref = binary_tests._reference(model_class, binary_tests._fbgemm)
        lowered = lower(ref)
        codes[model_class.__name__] = [entry.code for entry in departure_entries(lowered.log)]
    assert codes == {"AlphaAdd": [Code.TORCH_WRONG_RESULT], "KeywordAdd": [Code.TORCH_CRASHES]}


def test_relu_kept_between_module_and_quantize_is_a_change_that_departs_with_a_reason():
    gm = module_tests.hand_built_linear_relu(out_zero_point=64)
    lowered = fqlower.lower(gm)
    (kept,) = [change for change in lowered.log.changes if change.pass_name == "lower-static-modules"]
    assert kept.code is Code.TORCH_WRONG_RESULT
    assert "relu" in kept.reason and "zero point" in kept.reason
    assert kept.bindings["relu"] == "relu"
    assert [entry for entry in departure_entries(lowered.log)] == [kept]
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        assert (module_tests.torch_lower(gm)(x) < 0).any() and (lowered.module(x) >= 0).all()


def test_relu_implied_by_the_zero_point_is_dropped_as_torch_drops_it():
    gm = module_tests.hand_built_linear_relu(out_zero_point=0)
    lowered = fqlower.lower(gm)
    assert [(entry.code, entry.reason) for entry in lowered.log.entries] == [(Code.AS_TORCH, "")] * len(lowered.log.entries)
    (change,) = [change for change in lowered.log.changes if change.pass_name == "lower-static-modules"]
    assert change.bindings["relu"] == "relu"  # the relu was part of the match, and torch drops it too
    assert lowering_differences(module_tests.torch_lower(gm), lowered.module, (torch.randn(16, 4) * 3,)) == []


def test_a_static_module_called_twice_departs_and_misses_torch_shares_do_not():
    reference = reference_model(module_tests.LinearTwice(), (torch.randn(8, 4),), get_default_qconfig_mapping("fbgemm"))
    twice = [change for change in lower(reference).log.changes if change.pass_name == "lower-static-modules"]
    assert [change.code for change in twice] == [Code.TORCH_WRONG_RESULT] * 2

    reference = module_tests.static_linear()
    program = fqlower.from_fx(reference.module, {**reference.qconfig_map, "fc": None})
    (none,) = LOWER_STATIC_MODULES.run(program).entries
    assert (none.reason, none.code) == ("qconfig of 'fc' is None", Code.AS_TORCH)

    reference = module_tests.static_linear(QConfigMapping().set_global(default_dynamic_qconfig))
    gm = copy.deepcopy(reference.module)
    dynamic = next(n for n in gm.graph.nodes if n.target is torch.quantize_per_tensor_dynamic)
    dynamic.args = (dynamic.args[0], torch.qint32, dynamic.args[2])
    (no_kernel,) = LOWER_DYNAMIC_MODULES.run(fqlower.from_fx(gm)).entries
    assert "no dynamic kernel" in no_kernel.reason and no_kernel.code is Code.KERNEL_MISSING
    assert not is_departure(no_kernel.code) and not is_departure(none.code)


# --- 4. the change log keeps codes and reasons ---------------------------------------------------


class AlphaAddAndUnquantizedConv(nn.Module):
    """An add torch would lower wrongly (alpha) and a conv whose qconfig the test sets to None."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.add(self.c1(x), self.c2(x), alpha=2), self.c3(x)


@pytest.fixture(scope="module")
def mixed():
    """A reference model whose lowering has a departure skip and an as-torch skip, and the lowering."""
    torch.manual_seed(0)
    ref = reference_model(AlphaAddAndUnquantizedConv(), (torch.randn(16, 3, 4, 4),), get_default_qconfig_mapping("fbgemm"))
    ref = ReferenceModel(ref.module, {**ref.qconfig_map, "c3": None}, ref.node_name_to_scope, ref.example_inputs)
    return ref, lower(ref)


@pytest.fixture(scope="module")
def kept_relu():
    return fqlower.lower(module_tests.hand_built_linear_relu(out_zero_point=64))


def test_mixed_lowering_has_both_kinds_of_skips(mixed):
    _, lowered = mixed
    assert sorted(skip.code.value for skip in lowered.log.skips) == ["as-torch", "torch-wrong-result"]


def test_codes_and_reasons_survive_the_log(mixed, kept_relu):
    for lowered in (mixed[1], kept_relu):
        log = lowered.log
        read = ChangeLog.loads(log.dumps())
        assert read == log
        assert [(type(e), e.code, e.reason) for e in read.entries] == [(type(e), e.code, e.reason) for e in log.entries]
        assert all(type(entry.code) is Code for entry in read.entries)
        assert departures(read) == departures(log) != []
        assert departed_nodes(read) == departed_nodes(log)
    (change,) = [c for c in ChangeLog.loads(kept_relu.log.dumps()).changes if c.code is Code.TORCH_WRONG_RESULT]
    assert "relu" in change.reason
    records = [json.loads(line) for line in kept_relu.log.dumps().splitlines()[1:]]
    assert all(record["code"] == "as-torch" for record in records if record["reason"] == "")
    assert {record["code"] for record in records} == {"as-torch", "torch-wrong-result"}


def lines_of(log: ChangeLog) -> list[dict]:
    return [json.loads(line) for line in log.dumps().splitlines()]


def dumped(records: list[dict]) -> str:
    return "\n".join(json.dumps(record) for record in records) + "\n"


def line_of(records: list[dict], predicate) -> int:
    """The 1-based line number (header = line 1) of the one record `predicate` picks."""
    (number,) = [number for number, record in enumerate(records, start=1) if predicate(record)]
    return number


@pytest.mark.parametrize("bad", ["torch-explodes", 3, None, "", "AS_TORCH", "As-Torch", ["as-torch"]])
def test_a_skip_with_an_unknown_code_is_refused_naming_its_line(mixed, bad):
    records = lines_of(mixed[1].log)
    number = line_of(records, lambda r: r.get("code") == "torch-wrong-result")
    assert number > 2  # not the first entry: the message must name this line, not any
    records[number - 1]["code"] = bad
    with pytest.raises(ChangeLogError, match=rf"line {number}\b.*reason code"):
        ChangeLog.loads(dumped(records))


def test_a_change_with_an_unknown_code_or_a_non_string_reason_is_refused_naming_its_line(kept_relu):
    records = lines_of(kept_relu.log)
    number = line_of(records, lambda r: r.get("code") == "torch-wrong-result")
    for field, bad, message in (("code", "torch-explodes", "reason code"), ("code", 3, "reason code"), ("reason", [], "reason"), ("reason", None, "reason")):
        changed = copy.deepcopy(records)
        changed[number - 1][field] = bad
        with pytest.raises(ChangeLogError, match=rf"line {number}\b.*{message}"):
            ChangeLog.loads(dumped(changed))


def test_a_skip_with_a_non_string_reason_is_refused(mixed):
    records = lines_of(mixed[1].log)
    number = line_of(records, lambda r: r.get("kind") == "skip" and r.get("code") == "as-torch")
    records[number - 1]["reason"] = 7
    with pytest.raises(ChangeLogError, match=rf"line {number}\b.*reason: must be a string"):
        ChangeLog.loads(dumped(records))


def test_an_older_log_without_codes_reads_as_torch(mixed, kept_relu):
    for log in (mixed[1].log, kept_relu.log):
        records = lines_of(log)
        for record in records[1:]:
            record.pop("code")
            if record["kind"] == "change":
                record.pop("reason")
        read = ChangeLog.loads(dumped(records))
        assert [entry.code for entry in read.entries] == [Code.AS_TORCH] * len(log.entries)
        assert all(entry.reason == "" for entry in read.changes)
        assert [entry.reason for entry in read.skips] == [entry.reason for entry in log.skips]
        assert departures(read) == [] and departed_nodes(read) == set()
        # all but the codes and change reasons is read as written
        assert len(read.entries) == len(log.entries) and read.header == log.header


# --- 5. departures and the regions that excuse differences from torch ------------------------


def test_departures_list_exactly_the_departure_entries(mixed):
    ref, lowered = mixed
    (departed,) = [skip for skip in lowered.log.skips if skip.code is Code.TORCH_WRONG_RESULT]
    (shared,) = [skip for skip in lowered.log.skips if skip.code is Code.AS_TORCH]
    assert "alpha" in departed.reason and shared.reason == "qconfig of 'c3' is None"
    assert departures(lowered) == [
        f"[torch-wrong-result] skip lower-binary-ops at {departed.node!r}: {departed.reason}"
    ]
    assert departures(lowered.log) == departures(lowered)
    assert departed_nodes(lowered) == {departed.node} == departed_nodes(lowered.log)
    theirs = torch_lowering(ref)
    assert differences_outside(theirs, lowered.module, departed_nodes(lowered)) == []
    assert differences_outside(theirs, lowered.module, {shared.node}) != []  # an as-torch skip excuses nothing


def test_a_departed_change_names_its_anchor_and_bindings(kept_relu):
    (kept,) = [change for change in kept_relu.log.changes if change.code is Code.TORCH_WRONG_RESULT]
    assert departures(kept_relu) == [f"[torch-wrong-result] change lower-static-modules at {kept.anchor!r}: {kept.reason}"]
    assert departed_nodes(kept_relu) == {kept.anchor, *kept.bindings.values()}
    assert departed_nodes(kept_relu) >= {"relu", "fc", "quantize_per_tensor_1"}


def test_no_departures_when_every_entry_is_as_torch():
    lowered = fqlower.lower(module_tests.hand_built_linear_relu(out_zero_point=0))
    assert lowered.log.entries and departures(lowered) == [] and departed_nodes(lowered) == set()


def _static_linear_called_with(args: tuple[str, ...], kwargs: dict) -> tuple[torch.fx.GraphModule, object]:
    reference = module_tests.static_linear()
    gm = copy.deepcopy(reference.module)
    nodes = {node.name: node for node in gm.graph.nodes}
    nodes["fc"].args, nodes["fc"].kwargs = tuple(nodes[name] for name in args), kwargs
    gm.recompile()
    return gm, reference


@pytest.mark.parametrize(
    ("args", "kwargs", "code", "torch_says"),
    [
        # torch asserts the reference call has exactly one (positional) input
        (("dequantize", "x"), {}, Code.TORCH_CRASHES, "exactly 1 arg"),
        # torch lowers the module and keeps the keyword, which the quantized Linear does not take
        (("dequantize",), {"bias": False}, Code.TORCH_MODEL_CRASHES, None),
        # a first input that is no dequantize: torch skips the call, as fqlower does
        (("x", "dequantize"), {}, Code.AS_TORCH, None),
    ],
    ids=["two-positional", "keyword", "first-not-dequantized"],
)
def test_regression_a_module_call_with_other_inputs_records_what_torch_does(args, kwargs, code, torch_says):
    # found by mutation testing: these refusals were all recorded as as-torch
    gm, reference = _static_linear_called_with(args, kwargs)
    skip = LOWER_STATIC_MODULES.run(fqlower.from_fx(gm, reference.qconfig_map)).entries[0]
    assert (skip.reason, skip.code) == ("'fc' takes other inputs than one positional tensor", code)
    from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

    if torch_says is not None:
        with pytest.raises(AssertionError, match=torch_says):
            _lower_to_native_backend(copy.deepcopy(gm), reference.qconfig_map, reference.node_name_to_scope)
        return
    lowered = _lower_to_native_backend(copy.deepcopy(gm), reference.qconfig_map, reference.node_name_to_scope)
    if code is Code.TORCH_MODEL_CRASHES:
        assert isinstance(lowered.fc, nnq.Linear)
        with pytest.raises(TypeError):
            lowered(*reference.example_inputs)
    else:
        assert not isinstance(lowered.fc, nnq.Linear)


def test_regression_a_binary_op_with_a_third_positional_argument_is_a_model_torch_cannot_run():
    # found by mutation testing: recorded as as-torch, but torch lowers it to
    # quantized.add(qa, qb, 2, scale, zero_point), five arguments for a four-argument op
    gm = binary_tests.chain(torch.add)
    op = next(node for node in gm.graph.nodes if node.name == "op")
    op.args = (*op.args, 2)
    gm.recompile()
    skip = binary_tests.run_pass(gm)[1].entries[0]
    assert (skip.reason, skip.code) == ("'op' has 3 positional arguments, not 2", Code.TORCH_MODEL_CRASHES)
    from fqlower.reference import torch_lowering

    lowered = torch_lowering(binary_tests.reference(gm))
    call = next(node for node in lowered.graph.nodes if node.target is torch.ops.quantized.add)
    assert len(call.args) == 5


def test_regression_an_output_quantize_with_its_input_by_keyword_is_lowered_as_a_departure_torch_crashes_on():
    # found by mutation testing: fqlower lowers it (as the positional form) but recorded
    # as-torch, while torch's first static pass reads `q_node.args[0]` and raises
    reference = module_tests.static_linear()
    gm = copy.deepcopy(reference.module)
    quantize = next(node for node in gm.graph.nodes if node.name == "quantize_per_tensor_1")
    quantize.kwargs = {"input": quantize.args[0], "scale": quantize.args[1], "zero_point": quantize.args[2], "dtype": quantize.args[3]}
    quantize.args = ()
    gm.recompile()
    from torch.ao.quantization.fx._lower_to_native_backend import _lower_to_native_backend

    with pytest.raises(IndexError):
        _lower_to_native_backend(copy.deepcopy(gm), reference.qconfig_map, reference.node_name_to_scope)
    (change,) = LOWER_STATIC_MODULES.run(fqlower.from_fx(gm, reference.qconfig_map)).changes
    assert (change.anchor, change.code) == ("quantize_per_tensor_1", Code.TORCH_CRASHES)
    assert "takes its input by keyword" in change.reason and "IndexError" in change.reason
    lowered = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    assert departed_nodes(lowered) >= {"quantize_per_tensor_1"}
    positional = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    x = reference.example_inputs[0]
    assert torch.equal(lowered.module(x), positional.module(x))
