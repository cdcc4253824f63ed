"""A static weighted module called from several places runs natively at every call
(fqlower.passes.module_calls): each call whose output qparams differ gets a quantized
module of its own, so every call stays within quantization error of the reference,
where torch's lowering gives every call the last call's qparams."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping

import fqlower
from fqlower import ChangeLog
from fqlower.compare import lowering_differences, state_dict_differences
from fqlower.reasons import Code
from fqlower.reference import ReferenceModel, reference_model, torch_lowering


class Twice(nn.Module):
    """`block` (3 channels in and out) called twice, with general value ops between,
    as PyTorch's own test_general_value_ops calls `self.conv` twice."""

    def __init__(self, block: nn.Module, times: int = 2, spatial: bool = True) -> None:
        super().__init__()
        self.block, self.times, self.spatial = block, times, spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(self.times):
            if index:
                x = torch.nn.functional.max_pool2d(x, 1) if self.spatial else torch.flatten(x, 1)
            x = self.block(x)
        return x


BLOCKS = {
    "conv": (lambda: nn.Conv2d(3, 3, 3, padding=1), nnq.Conv2d, (2, 3, 6, 6)),
    "linear": (lambda: nn.Linear(3, 3), nnq.Linear, (8, 3)),
    "conv-relu": (lambda: nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()), nniq.ConvReLU2d, (2, 3, 5, 5)),
    "linear-relu": (lambda: nn.Sequential(nn.Linear(3, 3), nn.ReLU()), nniq.LinearReLU, (8, 3)),
}


def inputs(shape: tuple[int, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2,)


def reference_of(kind: str, times: int = 2) -> tuple[ReferenceModel, tuple[int, ...]]:
    make, _, shape = BLOCKS[kind]
    torch.manual_seed(0)
    model = Twice(make(), times, spatial=len(shape) == 4).eval()
    return reference_model(model, inputs(shape, 0), get_default_qconfig_mapping("fbgemm")), shape


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_every_call_of_a_shared_module_runs_natively_within_quantization_error(kind):
    reference, shape = reference_of(kind)
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    _, quantized, _ = BLOCKS[kind]
    path = next(node.target for node in reference.module.graph.nodes if node.op == "call_module")  # block.0 when fused
    calls = [node for node in lowering.module.graph.nodes if node.op == "call_module"]
    assert [type(lowering.module.get_submodule(node.target)) for node in calls] == [quantized, quantized]
    assert [node.target for node in calls] == [f"{path}_1", path]
    # one quantize in, one dequantize out: nothing between the calls runs in float
    functions = [node.target for node in lowering.module.graph.nodes if node.op == "call_function"]
    assert functions.count(torch.quantize_per_tensor) == 1
    assert [node.target for node in lowering.module.graph.nodes if node.op == "call_method"].count("dequantize") == 1
    # each call with its own qparams: within quantization error; torch's lowering is not
    x = inputs(shape)
    expected = reference.module(*x)
    ours = distance(lowering.module(*x), expected)
    theirs = distance(torch_lowering(reference)(*x), expected)
    assert ours <= 0.05 * expected.abs().max().item() + 0.02
    assert theirs > 2 * ours
    # a departure, said at both calls; the log replays
    changes = [change for change in lowering.log.changes if change.pass_name == "lower-static-modules"]
    assert [change.code for change in changes] == [Code.TORCH_WRONG_RESULT] * 2
    assert all("with different output qparams" in change.reason for change in changes)
    replayed = fqlower.replay(reference.module, lowering.log.dumps(), reference.qconfig_map, reference.node_name_to_scope)
    assert state_dict_differences(lowering.module, replayed.module) == []
    assert lowering_differences(lowering.module, replayed.module, x) == []


def test_three_calls_get_two_fresh_paths_and_the_last_keeps_the_modules_own():
    reference, shape = reference_of("linear", times=3)
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    targets = [node.target for node in lowering.module.graph.nodes if node.op == "call_module"]
    assert targets == ["block_1", "block_2", "block"]
    assert {key.split(".")[0] for key in lowering.module.state_dict() if "." in key} == {"block", "block_1", "block_2"}
    # the module at the path is the one torch leaves there: built with the last call's qparams
    theirs = torch_lowering(reference)
    assert lowering.module.block.scale == theirs.block.scale and lowering.module.block.zero_point == theirs.block.zero_point


def with_equal_output_qparams(reference: ReferenceModel) -> ReferenceModel:
    """The reference with every call's output scale and zero point set to the first's."""
    gm = copy.deepcopy(reference.module)
    names = [node.args[1].target for node in gm.graph.nodes if node.target is torch.quantize_per_tensor and node.args[1].op == "get_attr"]
    outputs = [name for name in names if name.startswith("block_scale")]
    for name in outputs[1:]:
        setattr(gm, name, getattr(gm, outputs[0]).clone())
        setattr(gm, name.replace("scale", "zero_point"), getattr(gm, outputs[0].replace("scale", "zero_point")).clone())
    return ReferenceModel(gm, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_calls_with_equal_output_qparams_share_the_module_exactly_as_torch_lowers_them(kind):
    reference, shape = reference_of(kind)
    equal = with_equal_output_qparams(reference)
    lowering = fqlower.lower(equal.module, equal.qconfig_map, equal.node_name_to_scope)
    assert [node.target for node in lowering.module.graph.nodes if node.op == "call_module"] == ["block", "block"]
    assert lowering_differences(torch_lowering(equal), lowering.module, inputs(shape)) == []
    assert all(change.code is Code.AS_TORCH for change in lowering.log.changes)


def test_a_call_left_float_keeps_the_reference_module_and_the_other_gets_its_own():
    """qconfig None at the second call: it stays float and keeps calling the reference
    module; torch swaps the module for the first call and the second then fails."""
    reference, shape = reference_of("linear")
    second = [node.name for node in reference.module.graph.nodes if node.op == "call_module"][1]
    qconfig_map = {**reference.qconfig_map, second: None}
    lowering = fqlower.lower(reference.module, qconfig_map, reference.node_name_to_scope)
    targets = {node.name: node.target for node in lowering.module.graph.nodes if node.op == "call_module"}
    assert targets[second] == "block" and type(lowering.module.block) is torch.ao.nn.quantized.reference.Linear
    (first,) = [name for name in targets if name != second]
    assert targets[first] == "block_1" and type(lowering.module.block_1) is nnq.Linear
    (change,) = [change for change in lowering.log.changes if change.pass_name == "lower-static-modules"]
    assert change.code is Code.TORCH_MODEL_CRASHES and f"%{second}, which stays float" in change.reason
    x = inputs(shape)
    expected = reference.module(*x)
    assert distance(lowering.module(*x), expected) <= 0.05 * expected.abs().max().item() + 0.02
    theirs = torch_lowering(ReferenceModel(reference.module, qconfig_map, reference.node_name_to_scope, reference.example_inputs))
    with pytest.raises(Exception):
        theirs(*x)


def test_a_fresh_path_never_takes_a_name_the_model_uses():
    """`block_1` is already an attribute the model reads: the first call gets `block_2`."""
    reference, shape = reference_of("linear")
    gm = copy.deepcopy(reference.module)
    gm.register_buffer("block_1", torch.ones(1))
    output = next(node for node in gm.graph.nodes if node.op == "output")
    with gm.graph.inserting_before(output):
        offset = gm.graph.get_attr("block_1")
        shifted = gm.graph.call_function(torch.add, (output.args[0], offset))
    output.args = (shifted,)
    gm.recompile()
    lowering = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    assert sorted(node.target for node in lowering.module.graph.nodes if node.op == "call_module") == ["block", "block_2"]
    log = ChangeLog.loads(lowering.log.dumps())
    replayed = fqlower.replay(gm, log, reference.qconfig_map, reference.node_name_to_scope)
    assert lowering_differences(lowering.module, replayed.module, inputs(shape)) == []


def packed_weight(module: nn.Module) -> object:
    """The packed-weight object of a quantized linear (a submodule's) or conv (an attribute)."""
    packed = module._packed_params
    return packed._packed_params if isinstance(packed, nn.Module) else packed


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_the_per_call_modules_share_one_packed_weight(kind):
    """One packing for every call: each earlier call's module is the last call's with its
    own output qparams (`with_output_qparams`); a replay builds them the same way."""
    reference, shape = reference_of(kind, times=3)
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    modules = [lowering.module.get_submodule(node.target) for node in lowering.module.graph.nodes if node.op == "call_module"]
    assert len(modules) == 3 and len({id(module) for module in modules}) == 3
    assert len({id(packed_weight(module)) for module in modules}) == 1
    assert len({(module.scale, module.zero_point) for module in modules}) == 3
    replayed = fqlower.replay(reference.module, lowering.log.dumps(), reference.qconfig_map, reference.node_name_to_scope)
    shared = [replayed.module.get_submodule(node.target) for node in replayed.module.graph.nodes if node.op == "call_module"]
    assert len({id(packed_weight(module)) for module in shared}) == 1
    x = inputs(shape)
    assert lowering_differences(lowering.module, replayed.module, x) == []
    expected = reference.module(*x)
    assert distance(lowering.module(*x), expected) <= 0.05 * expected.abs().max().item() + 0.02
