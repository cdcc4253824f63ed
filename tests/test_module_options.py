"""Options of swapped modules that torch 2.13's native modules ignore or cannot honour
(fqlower.passes.module_options, found by auditing every option of every swapped
module). For each: torch's lowering crashes, or its model crashes or computes
something else than the reference model (shown here); fqlower leaves that module in
float with a skip whose code says which, the rest of the model lowers, and its model
runs within quantization error of the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    float16_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    get_default_qconfig_mapping,
)

import fqlower
from fqlower.compare import lowering_differences
from fqlower.errors import UnsupportedInput
from fqlower.reasons import Code
from fqlower.reference import reference_model, torch_lowering

STATIC = get_default_qconfig_mapping("fbgemm")
DYNAMIC = QConfigMapping().set_global(default_dynamic_qconfig)
FP16 = QConfigMapping().set_global(float16_dynamic_qconfig)


def embeddings(qconfig=float_qparams_weight_only_qconfig) -> QConfigMapping:
    return QConfigMapping().set_object_type(nn.Embedding, qconfig).set_object_type(nn.EmbeddingBag, qconfig)


class Around(nn.Module):
    """`m` between two convs when it takes images (so that something around it lowers),
    else alone."""

    def __init__(self, m: nn.Module, images: bool = False) -> None:
        super().__init__()
        self.m, self.images = m, images
        self.before = nn.Conv2d(4, 4, 1) if images else nn.Identity()
        self.after = nn.Conv2d(4, 4, 1) if images else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.m(self.before(x)))


class Residual(nn.Module):
    """conv, then an activation that may change its input in place, plus that input."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(4, 4, 1), act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(x) + x


class FunctionalResidual(nn.Module):
    def __init__(self, function, *args) -> None:
        super().__init__()
        self.conv, self.function, self.args = nn.Conv2d(4, 4, 1), function, args

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.function(x, *self.args, inplace=True) + x


class ByKeyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Embedding(10, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(input=x)


class Bicubic(nn.Module):
    def __init__(self, **options) -> None:
        super().__init__()
        self.conv, self.options = nn.Conv2d(4, 4, 1), options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=2, **self.options)


def images(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3))


def running_instance_norm() -> nn.Module:
    norm = nn.InstanceNorm2d(4, track_running_stats=True)
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    return Around(norm, images=True)


def renormalized_embedding() -> nn.Module:
    embedding = nn.Embedding(10, 8, max_norm=1.0)
    embedding.weight.data.mul_(3)
    return Around(embedding)


def padded_bag() -> nn.Module:
    bag = nn.EmbeddingBag(10, 8, mode="sum", padding_idx=0)
    bag.weight.data[0] = 1.0
    return Around(bag)


# case -> (float model, recipe, calibration inputs, checking inputs, what torch does, the skip's code, words of the reason)
CASES = {
    "conv-replicate": (lambda: Around(nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate"), True), STATIC,
                       images(2, 4, 7, 7), images(2, 4, 7, 7) * 2, "lowering raises", Code.TORCH_CRASHES, "padding_mode='replicate'"),
    "conv-circular": (lambda: Around(nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), True), STATIC,
                      images(2, 4, 7, 7), images(2, 4, 7, 7) * 2, "lowering raises", Code.TORCH_CRASHES, "padding_mode='circular'"),
    "conv3d-reflect": (lambda: nn.Sequential(nn.Conv3d(4, 4, 3, padding=1, padding_mode="reflect")), STATIC,
                       images(2, 4, 5, 5, 5), images(2, 4, 5, 5, 5) * 2, "lowering raises", Code.TORCH_CRASHES, "padding_mode='reflect'"),
    "batch-norm-not-affine": (lambda: nn.Sequential(nn.BatchNorm2d(4, affine=False)), STATIC,
                              images(2, 4, 7, 7), images(2, 4, 7, 7) * 2, "lowering raises", Code.TORCH_CRASHES, "affine=False"),
    "batch-norm-no-running-stats": (lambda: nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False)), STATIC,
                                    images(2, 4, 7, 7), images(2, 4, 7, 7) * 2, "model raises", Code.TORCH_MODEL_CRASHES,
                                    "track_running_stats=False"),
    "instance-norm-running-stats": (running_instance_norm, STATIC, images(2, 4, 7, 7), images(2, 4, 7, 7) * 2,
                                    "model differs", Code.TORCH_WRONG_RESULT, "running statistics"),
    "lstm-no-bias": (lambda: Around(nn.LSTM(4, 5, bias=False)), DYNAMIC, images(6, 3, 4), images(6, 3, 4) * 2,
                     "lowering raises", Code.TORCH_CRASHES, "bias=False"),
    "gru-no-bias-fp16": (lambda: Around(nn.GRU(4, 5, bias=False)), FP16, images(6, 3, 4), images(6, 3, 4) * 2,
                         "lowering raises", Code.TORCH_CRASHES, "bias=False"),
    "embedding-max-norm": (renormalized_embedding, embeddings(), torch.arange(0, 5), torch.arange(5, 10),
                           "model differs", Code.TORCH_WRONG_RESULT, "max_norm=1.0"),
    "bag-padding-row": (padded_bag, embeddings(), torch.tensor([[0, 1, 2], [3, 0, 0]]), torch.tensor([[0, 1, 2], [3, 0, 0]]),
                        "model differs", Code.TORCH_WRONG_RESULT, "padding_idx=0"),
    "embedding-4bit-odd-width": (lambda: Around(nn.Embedding(10, 7)), embeddings(float_qparams_weight_only_qconfig_4bit),
                                 torch.arange(10), torch.arange(10), "model differs", Code.TORCH_WRONG_RESULT, "odd embedding_dim"),
    "bag-mean-4bit": (lambda: Around(nn.EmbeddingBag(10, 8, mode="mean")), embeddings(float_qparams_weight_only_qconfig_4bit),
                      torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
                      "model differs", Code.TORCH_WRONG_RESULT, "reduces with 'mean'"),
    "bag-max-byte": (lambda: Around(nn.EmbeddingBag(10, 8, mode="max")), embeddings(),
                     torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
                     "model differs", Code.TORCH_WRONG_RESULT, "reduces with 'max'"),
    "bag-mean-byte": (lambda: Around(nn.EmbeddingBag(10, 8, mode="mean")), embeddings(),
                      torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
                      "model differs", Code.TORCH_WRONG_RESULT, "reduces with 'mean'"),
    "bag-max-4bit": (lambda: Around(nn.EmbeddingBag(10, 8, mode="max")), embeddings(float_qparams_weight_only_qconfig_4bit),
                     torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]),
                     "model differs", Code.TORCH_WRONG_RESULT, "reduces with 'max'"),
    "embedding-by-keyword": (ByKeyword, embeddings(), torch.randint(0, 10, (12,), generator=torch.Generator().manual_seed(0)),
                             torch.arange(10), "model raises", Code.TORCH_MODEL_CRASHES, "input="),
    "interpolate-bicubic": (lambda: Bicubic(mode="bicubic"), STATIC, images(2, 4, 7, 7), images(2, 4, 7, 7) * 2,
                            "model raises", Code.TORCH_MODEL_CRASHES, "mode='bicubic'"),
    "interpolate-antialias": (lambda: Bicubic(mode="bilinear", antialias=True), STATIC, images(2, 4, 7, 7), images(2, 4, 7, 7) * 2,
                              "model raises", Code.TORCH_MODEL_CRASHES, "antialias=True"),
}


def first(output):
    output = output[0] if isinstance(output, tuple) else output
    return output.dequantize() if output.is_quantized else output


def what_torch_does(reference, inputs: tuple, expected: torch.Tensor) -> str:
    try:
        lowered = torch_lowering(reference)
    except Exception:
        return "lowering raises"
    try:
        output = first(lowered(*inputs))
    except Exception:
        return "model raises"
    same = output.shape == expected.shape and (output - expected).abs().max() <= 0.05 * expected.abs().max() + 0.02
    return "model within error" if same else "model differs"


@pytest.mark.parametrize("case", list(CASES))
def test_an_option_the_native_module_cannot_honour_stays_float_with_its_reason(case):
    make, recipe, calibration, check, torch_does, code, words = CASES[case]
    torch.manual_seed(0)
    reference = reference_model(make().eval(), (calibration,), recipe)
    inputs = (check,)
    expected = first(reference.module(*inputs))
    assert what_torch_does(reference, inputs, expected) == torch_does

    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    (skip,) = [skip for skip in lowering.log.skips if skip.code is code and words in skip.reason]
    assert "torch" in skip.reason
    output = first(lowering.module(*inputs))
    assert output.shape == expected.shape
    assert (output - expected).abs().max() <= 0.05 * expected.abs().max() + 0.02


@pytest.mark.parametrize(
    "make",
    [
        lambda: Around(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), True),
        lambda: Residual(nn.LeakyReLU(0.1)),
        lambda: Residual(nn.ReLU(inplace=True)),
        lambda: Around(nn.EmbeddingBag(10, 8, mode="sum", padding_idx=0)),
    ],
    ids=["conv2d-reflect", "leaky-relu-not-inplace", "relu-inplace", "bag-padding-row-zero"],
)
def test_options_the_native_module_honours_lower_as_torch_lowers_them(make):
    """The checks leave these alone: 2-d reflect padding, out-of-place activations, an
    in-place relu (quantized relu_ mutates too), a padding row that is zero."""
    torch.manual_seed(0)
    model = make().eval()
    bag = isinstance(getattr(model, "m", None), nn.EmbeddingBag)
    x = torch.tensor([[0, 1, 2], [3, 0, 0]]) if bag else images(2, 4, 7, 7)
    reference = reference_model(model, (x,), embeddings() if bag else STATIC)
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    assert not [skip for skip in lowering.log.skips if skip.code is not Code.AS_TORCH]
    assert lowering_differences(torch_lowering(reference), lowering.module, (x,)) == []


@pytest.mark.parametrize(
    "make",
    [
        lambda inplace: Residual(nn.LeakyReLU(0.1, inplace=inplace)),
        lambda inplace: Residual(nn.Hardswish(inplace=inplace)),
        lambda inplace: Residual(nn.ELU(inplace=inplace)),
        lambda inplace: FunctionalResidual(F.elu, 1.0) if inplace else Residual(nn.ELU()),
        lambda inplace: FunctionalResidual(F.leaky_relu, 0.1) if inplace else Residual(nn.LeakyReLU(0.1)),
    ],
    ids=["leaky-relu", "hardswish", "elu", "elu-function", "leaky-relu-function"],
)
def test_an_inplace_activation_on_a_value_read_again_is_refused_naming_it(make):
    """In the model, `act(x) + x` adds the changed x (2·act(x)); quantized ELU, LeakyReLU
    and Hardswish work out of place, and lowering moves the add to the unchanged
    quantized x, so torch's model computes act(x) + x: ten times further from the
    reference than torch's lowering of the same model without inplace. No lowering of
    it can be right: fqlower refuses it, naming the node."""
    x = images(2, 4, 7, 7) * 3

    def torch_error(inplace: bool) -> float:
        torch.manual_seed(0)
        reference = reference_model(make(inplace).eval(), (x,), STATIC)
        return (first(torch_lowering(reference)(x)) - first(reference.module(x))).abs().max().item()

    assert torch_error(True) > 10 * torch_error(False)
    torch.manual_seed(0)
    reference = reference_model(make(True).eval(), (x,), STATIC)
    activation = next(node.name for node in reference.module.graph.nodes if node.op in ("call_module", "call_function") and node.name.startswith(("act", "elu", "leaky")))
    with pytest.raises(UnsupportedInput, match=r"changes %dequantize_1 in place, and %add read it too") as raised:
        fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    assert raised.value.node == activation
    with pytest.raises(UnsupportedInput):
        fqlower.lower_to_native_backend(reference.module, reference.qconfig_map, reference.node_name_to_scope)
