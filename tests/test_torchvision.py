"""Real architectures: torchvision's models, quantized with torch's recipes, lower with
fqlower exactly as torch 2.13's `_lower_to_native_backend` lowers them.

Each case is one architecture (random weights from a fixed seed, eval mode, no download)
under one recipe. Its reference model is built once (a module-scoped fixture, so the
tests of a case share it and one case is held at a time) and lowered by both;
then, as in `test_differential`:

- same graph up to node names, module types, state_dict keys and values, and
  bit-identical outputs on the calibration batch and on one other batch;
- the reference model handed to fqlower is unchanged afterwards (a `ModelSnapshot`);
- something was lowered: the log has changes and the result holds quantized modules.

Recipes: the static default qconfig mappings of fbgemm, x86 and qnnpack, and dynamic
int8 (`default_dynamic_qconfig`, global). Lowered models run on the quantized engine of
their recipe (x86 for dynamic), which is also the engine while lowering: fqlower reads
it where torch's kernels differ between engines. Not every architecture runs under
every recipe (the whole grid overruns this file's budget of about 4 minutes on a shared
2-core machine): `RECIPE_ARCHITECTURES` says which do, and why: every architecture is
lowered with fbgemm, seven with qnnpack, three with x86 and three (ViT-B/16 among them)
with dynamic int8, 24 cases. `FQLOWER_TORCHVISION_GRID=full` runs all 44.

Inputs are one image (batch 1) of 3x32x32, the smallest convenient size for most of the
architectures; Inception-v3 needs 75x75, and ShuffleNetV2 runs at 64x64: at 32x32 its
last conv's output is 1x1 (strides (1024, 1, 1024, 1024)), on which fbgemm's and x86's
quantized `mean([2, 3])` raise `RuntimeError: required rank 4 tensor to use
channels_last format` (torch's lowered model, fqlower's and plain `convert_fx`'s alike),
which would hide every other difference of those two cases. ViT-B/16 is built for 32x32
images (two 16x16 patches a side).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import torch
import torch.fx
import torch.nn as nn
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, get_default_qconfig_mapping

import fqlower
from fqlower.compare import (
    ModelSnapshot,
    graph_differences,
    lowering_differences,
    module_type_differences,
    state_dict_differences,
    values_equal,
)
from fqlower.departures import departed_nodes, departures, differences_outside
from fqlower.reasons import Code, is_departure
from fqlower.reference import ReferenceModel, quantized_engine, quiet_torch_quantization, reference_model, torch_lowering

import vision_models  # torchvision is in the test extra: a missing one fails here, loudly


@attrs.frozen
class Recipe:
    """A qconfig mapping, and the quantized engine its lowered models run on."""

    mapping: Callable[[], QConfigMapping]
    engine: str


RECIPES = {
    "fbgemm": Recipe(lambda: get_default_qconfig_mapping("fbgemm"), "fbgemm"),
    "x86": Recipe(lambda: get_default_qconfig_mapping("x86"), "x86"),
    "qnnpack": Recipe(lambda: get_default_qconfig_mapping("qnnpack"), "qnnpack"),
    "dynamic": Recipe(lambda: QConfigMapping().set_global(default_dynamic_qconfig), "x86"),
}
# Which architectures each recipe lowers. The whole grid, 44 cases, took 1m40s on this
# 2-core machine idle but 6 minutes while it was shared; these 24 took 1m06s and up to
# 3m20s. Most of the time is torch's prepare/calibrate/convert (the HistogramObserver's
# qparams search). So fbgemm lowers every architecture. qnnpack, whose qconfig
# (per-tensor weights, no reduce_range) and kernels differ most from fbgemm's (fqlower's
# engine-specific departures are qnnpack's), lowers all but the four most expensive,
# whose blocks the others repeat at a fraction of the cost (ResNet-50's bottlenecks:
# ResNet-18's residual add+relu; EfficientNet's MBConv with squeeze-excitation: the
# MobileNets'; Inception-v3's branches and cat: GoogLeNet's; ViT's linears, layer norm
# and GELU: ConvNeXt's). x86 has fbgemm's observers and graph patterns and packs with
# slower onednn kernels: three cheap architectures with varied ops (residual add+relu;
# hardswish/hardsigmoid squeeze-excitation; channel shuffle, chunk and cat). Dynamic
# int8 leaves convolutions in float and lowers only nn.Linear, which a conv net has one
# or two of: the architectures made of linears (ViT's attention and MLPs, ConvNeXt's
# MLPs), and MobileNetV3's classifier. FQLOWER_TORCHVISION_GRID=full runs all 44.
EVERY_ARCHITECTURE = tuple(vision_models.ARCHITECTURES)
RECIPE_ARCHITECTURES = {
    "fbgemm": EVERY_ARCHITECTURE,
    "qnnpack": tuple(a for a in EVERY_ARCHITECTURE if a not in ("resnet50", "efficientnet_b0", "inception_v3", "vit_b_16")),
    "x86": ("resnet18", "mobilenet_v3_large", "shufflenet_v2_x0_5"),
    "dynamic": ("mobilenet_v3_large", "convnext_tiny", "vit_b_16"),
}
if os.environ.get("FQLOWER_TORCHVISION_GRID") == "full":
    RECIPE_ARCHITECTURES = {recipe: EVERY_ARCHITECTURE for recipe in RECIPES}

# architecture-major, so that one float model serves its recipes in a row
CASES = [
    (architecture, recipe)
    for architecture in EVERY_ARCHITECTURE
    for recipe in RECIPES
    if architecture in RECIPE_ARCHITECTURES[recipe]
]

CALIBRATION_SEED, OTHER_SEED = 0, 1


@functools.lru_cache(maxsize=1)
def float_model(architecture: str) -> nn.Module:
    """The float model (seed 0); `reference_model` copies it, so it is shared."""
    return vision_models.build(architecture, seed=0)


def batches(architecture: str) -> list[tuple[torch.Tensor]]:
    """The calibration batch, then the other batch the lowerings are compared on."""
    return [(vision_models.images(architecture, batch=1, seed=seed),) for seed in (CALIBRATION_SEED, OTHER_SEED)]


@attrs.frozen
class LoweredCase:
    """One architecture under one recipe, lowered by fqlower and by torch."""

    architecture: str
    recipe: str
    reference: ReferenceModel
    lowering: fqlower.Lowering
    expected: torch.fx.GraphModule  # torch's lowering
    mutations: list[str]  # how fqlower's lowering changed the reference model ([] when it did not)

    @property
    def engine(self) -> str:
        return RECIPES[self.recipe].engine


def lower_case(architecture: str, recipe: str) -> LoweredCase:
    with quantized_engine(RECIPES[recipe].engine):
        calibration = batches(architecture)[0]
        with quiet_torch_quantization():  # the observers' reduce_range notice
            mapping = RECIPES[recipe].mapping()
        reference = reference_model(float_model(architecture), calibration, mapping)
        snapshot = ModelSnapshot.of(reference.module)
        lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
        mutations = snapshot.differences(reference.module)
        expected = torch_lowering(reference)
    return LoweredCase(architecture, recipe, reference, lowering, expected, mutations)


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(case))
def case(request) -> LoweredCase:
    return lower_case(*request.param)


def quantized_modules(module: nn.Module) -> list[str]:
    """Paths of the native quantized modules (static, fused or dynamic; not reference)."""
    return [
        path
        for path, child in module.named_modules()
        if type(child).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
        and ".reference" not in type(child).__module__
    ]


def error_of(model: nn.Module, inputs: tuple[Any, ...]) -> str | None:
    """What calling `model` on `inputs` raises (type and first line), or None."""
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def differences_from_torch(case: LoweredCase) -> list[str]:
    """`lowering_differences` on the calibration batch (graph, module types, state_dict
    and outputs), and the outputs on the other batch: graph, modules and state_dict do
    not depend on the input, so they are compared once. A model that raises when it
    runs is a difference too, naming whose model and what it raised (and then the
    structure is compared without the outputs)."""
    expected, actual = case.expected, case.lowering.module
    found: list[str] = []
    with quantized_engine(case.engine):
        for number, inputs in enumerate(batches(case.architecture)):
            try:
                if number == 0:
                    found += lowering_differences(expected, actual, inputs)
                else:
                    with torch.no_grad():
                        if not values_equal(expected(*inputs), actual(*inputs)):
                            found.append(f"outputs differ on batch {number}")
            except Exception:
                errors = {who: error_of(model, inputs) for who, model in (("torch's", expected), ("fqlower's", actual))}
                if not any(errors.values()):
                    raise
                found += [f"{who} lowered model raises on batch {number}: {error}" for who, error in errors.items() if error]
                if number == 0:  # what lowering_differences did not get to compare
                    found += structure_differences(expected, actual) or ["(graph, module types and state_dict are equal)"]
    return found


def structure_differences(expected: torch.fx.GraphModule, actual: torch.fx.GraphModule) -> list[str]:
    """`lowering_differences` but the outputs: graph, module types and state_dict."""
    return graph_differences(expected, actual) + module_type_differences(expected, actual) + state_dict_differences(expected, actual)


# the cases where fqlower departs from torch on purpose, with the departures' codes
DEPARTS = {
    # ConvNeXt's layer scale (1e-6) puts its residual adds' scale ratios outside what
    # QNNPACK's add takes: torch's model fails running; fqlower leaves those adds float
    ("convnext_tiny", "qnnpack"): {Code.TORCH_MODEL_CRASHES},
}


def test_fqlower_lowers_the_architecture_as_torch_does(case):
    """Same graph up to node names, module types, state_dict and bit-identical outputs
    on two batches; the failure message lists fqlower's departures from torch, if any.
    Where fqlower departs on purpose (DEPARTS), it equals torch outside the departed
    regions, its model runs, and torch's fails or computes further from the reference."""
    codes = {entry.code for entry in case.lowering.log.entries if is_departure(entry.code)}
    assert codes == DEPARTS.get((case.architecture, case.recipe), set()), departures(case.lowering)[:10]
    if codes:
        assert_departs_where_torch_fails(case)
        return
    differences = differences_from_torch(case)
    assert differences == [], "\n".join(differences[:20] + ["", "fqlower's departures:"] + departures(case.lowering)[:10])


def assert_departs_where_torch_fails(case: LoweredCase) -> None:
    assert differences_outside(case.expected, case.lowering.module, departed_nodes(case.lowering)) == []
    with quantized_engine(case.engine), torch.no_grad():
        for inputs in batches(case.architecture):
            want, ours = case.reference.module(*inputs), case.lowering.module(*inputs)
            if error_of(case.expected, inputs) is None:
                assert (ours - want).abs().max() < (case.expected(*inputs) - want).abs().max()


def test_the_reference_model_is_unchanged_by_fqlowers_lowering(case):
    """A `ModelSnapshot` of the reference model (code, graph, module types, state_dict,
    module attributes) taken before fqlower's lowering equals one taken after it."""
    assert case.mutations == []


def test_the_lowering_lowered_something(case):
    """The log records changes, and the result holds native quantized modules (a static
    recipe quantizes the convolutions and the classifier; dynamic, the linears)."""
    assert case.lowering.log.changes
    assert quantized_modules(case.lowering.module)


# the same parameter as the grid's case: pytest reuses that case's lowering
@pytest.mark.parametrize("case", [("regnet_x_400mf", "fbgemm")], indirect=True, ids=["regnet_x_400mf-fbgemm"])
def test_regnet_hyphenated_block_paths_reach_the_graph_and_lower(case):
    """RegNet names its blocks `block1-0`: `trunk_output.block1.block1-0.proj.0` is a
    call_module target of the reference graph, its nodes are scoped under that path, and
    fqlower lowers the model as torch does, with quantized convolutions at those paths
    (an earlier fqlower refused it as `invalid attribute path
    'trunk_output.block1.block1-0.proj.0'`)."""
    block = "trunk_output.block1.block1-0"
    targets = {node.target for node in case.reference.module.graph.nodes if node.op == "call_module"}
    assert f"{block}.proj.0" in targets
    assert any(path.startswith(block + ".") for path, _ in case.reference.node_name_to_scope.values())
    assert differences_from_torch(case) == []
    module = case.lowering.module
    assert type(module.get_submodule(f"{block}.proj.0")) is torch.ao.nn.quantized.Conv2d
    assert type(module.get_submodule(f"{block}.f.a.0")) is torch.ao.nn.intrinsic.quantized.ConvReLU2d
