"""A zoo of small, lazily built models for differential and round-trip tests.

Not a test file (pytest does not collect it); tests import it and parametrize
over :data:`CASES` / :data:`FLOAT_GRAPHS`, e.g.::

    @pytest.mark.parametrize("case", zoo.CASES, ids=lambda c: c.id)
    def test_matches_torch(case): ...

* :data:`CASES` are quantized *reference* models captured with
  :func:`fqlower.reference.reference_model`: the exact ``(module, qconfig_map,
  node_name_to_scope)`` torch's ``_lower_to_native_backend`` receives.
* :data:`FLOAT_GRAPHS` are plain ``torch.fx.symbolic_trace`` results of float
  models exercising FX graph features (call_method, kwargs, tuple/dict outputs,
  nested and shared submodules, get_attr, slicing, placeholder defaults, dtype
  arguments), wrapped in a :class:`ReferenceModel` with empty maps.

Every ``build()`` is deterministic (seeded inside a forked RNG, so the global
RNG is untouched), returns a fresh object, and the result runs on its
``example_inputs``. ``Case.torch_lowers`` records whether
:func:`fqlower.reference.torch_lowering` succeeds on the case (measured, see
``note`` for why it does not where it does not); ``test_differential`` checks the
flag both ways, so it cannot go stale.

``torch.testing._internal.common_quantization`` is imported lazily, on the first
build of a case that needs it: the import costs about a second and calls
``torch.backends.disable_global_flags()`` as a side effect.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    QConfigMapping,
    default_dynamic_qconfig,
    default_qconfig,
    float16_dynamic_qconfig,
    float16_static_qconfig,
    float_qparams_weight_only_qconfig,
    get_default_qconfig,
    get_default_qconfig_mapping,
)

from fqlower.reference import ReferenceModel, reference_model

__all__ = ["Case", "CASES", "FLOAT_GRAPHS", "ALL_CASES", "case_by_id"]


@attrs.frozen
class Case:
    """A named, lazily built model.

    Attributes:
        id: Unique, pytest-friendly identifier (``<model>-<recipe>``).
        build: Builds a fresh :class:`ReferenceModel` on every call.
        torch_lowers: Whether torch's own lowering (``torch_lowering``) succeeds
            on the built model; measured, not assumed.
        torch_error: Where ``torch_lowers`` is False, a fragment of the message
            torch's lowering raises.
        note: Why torch fails, or anything else worth knowing about the case.
    """

    id: str
    build: Callable[[], ReferenceModel]
    torch_lowers: bool = True
    note: str = ""
    # False when the lowered model needs a kernel this machine cannot run (onednn's
    # fused ops need AVX-512 VNNI): compare graph, modules and state_dict only
    runnable: bool = True
    torch_error: str = ""
    # where fqlower departs from torch on purpose: the reason code its log records
    # (fqlower.reasons); the differential test then checks the departure, not equality
    departs: str = ""


# --------------------------------------------------------------------------- helpers

ModelFactory = Callable[[], tuple[nn.Module, tuple[Any, ...]]]


@contextlib.contextmanager
def _quiet_and_seeded(seed: int) -> Iterator[None]:
    """Silence torch's deprecation noise and seed a forked (CPU) RNG."""
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(seed)
        yield


def _common_quantization() -> Any:
    """``torch.testing._internal.common_quantization``, imported on first use."""
    import torch.testing._internal.common_quantization as cq

    return cq


# Calibration batch size. The fbgemm/qnnpack default activation observer is a
# HistogramObserver whose qparam search creeps in quantile steps of 1e-5 until it
# crosses the first sample; with the 5-element inputs of common_quantization's
# ``get_example_inputs`` that costs ~0.5 s per observer, with 16x the samples tens of ms.
_BATCH = 16


def _batched(example: Callable[[], tuple[Any, ...]], batch: int = _BATCH) -> tuple[Any, ...]:
    """Concatenate ``batch`` draws of ``example()`` along dim 0 (same shapes otherwise)."""
    draws = [tuple(example()) for _ in range(batch)]
    return tuple(torch.cat(column, dim=0) for column in zip(*draws))


def _cq(name: str, inputs: Callable[[], tuple[Any, ...]] | None = None) -> ModelFactory:
    """Factory for a common_quantization model.

    Inputs are ``inputs()`` if given, else ``_BATCH`` draws of the model's own
    ``get_example_inputs()`` stacked along the batch dimension.
    """

    def factory() -> tuple[nn.Module, tuple[Any, ...]]:
        model = getattr(_common_quantization(), name)()
        example = inputs() if inputs is not None else _batched(model.get_example_inputs)
        return model, example

    return factory


def _own(cls: type[nn.Module], inputs: Callable[[], tuple[Any, ...]]) -> ModelFactory:
    """Factory for a model defined in this file."""
    return lambda: (cls(), inputs())


def _ref(
    case_id: str,
    factory: ModelFactory,
    recipe: Callable[[], Any],
    *,
    backend_config: Callable[[], Any] | None = None,
    seed: int = 0,
    torch_lowers: bool = True,
    torch_error: str = "",
    runnable: bool = True,
    note: str = "",
    departs: str = "",
) -> Case:
    """A :class:`Case` that quantizes ``factory()`` with ``recipe()`` (a fresh QConfigMapping).

    ``backend_config``, if given, is called for a ``BackendConfig`` passed to
    ``prepare_fx``/``convert_fx`` (default: torch's native backend config).
    """

    def build() -> ReferenceModel:
        with _quiet_and_seeded(seed):
            model, example_inputs = factory()
            return reference_model(
                model,
                example_inputs,
                recipe(),
                backend_config=None if backend_config is None else backend_config(),
            )

    return Case(
        id=case_id, build=build, torch_lowers=torch_lowers, torch_error=torch_error, note=note, runnable=runnable, departs=departs
    )


def _float(
    case_id: str,
    factory: ModelFactory,
    *,
    concrete_args: dict[str, Any] | None = None,
    seed: int = 0,
    torch_lowers: bool = True,
    note: str = "",
) -> Case:
    """A :class:`Case` wrapping ``symbolic_trace(factory()[0])`` with empty maps."""

    def build() -> ReferenceModel:
        with _quiet_and_seeded(seed):
            model, example_inputs = factory()
            traced = torch.fx.symbolic_trace(model.eval(), concrete_args=concrete_args)
            return ReferenceModel(
                module=traced, qconfig_map={}, node_name_to_scope={}, example_inputs=example_inputs
            )

    return Case(id=case_id, build=build, torch_lowers=torch_lowers, note=note)


# --------------------------------------------------------------------------- recipes
# Each returns a fresh mapping (QConfigMapping is mutable).


def _static_fbgemm() -> QConfigMapping:
    return get_default_qconfig_mapping("fbgemm")


def _static_x86() -> QConfigMapping:
    return get_default_qconfig_mapping("x86")


def _static_onednn() -> QConfigMapping:
    return get_default_qconfig_mapping("onednn")


def _onednn_backend_config() -> Any:
    from torch.ao.quantization.backend_config import get_onednn_backend_config

    return get_onednn_backend_config()


def _static_qnnpack() -> QConfigMapping:
    return get_default_qconfig_mapping("qnnpack")


def _static_per_channel() -> QConfigMapping:
    # fbgemm's default qconfig observes weights per channel.
    return QConfigMapping().set_global(get_default_qconfig("fbgemm"))


def _static_per_tensor() -> QConfigMapping:
    return QConfigMapping().set_global(default_qconfig)


def _dynamic_int8() -> QConfigMapping:
    return QConfigMapping().set_global(default_dynamic_qconfig)


def _dynamic_fp16() -> QConfigMapping:
    return QConfigMapping().set_global(float16_dynamic_qconfig)


def _static_fp16() -> QConfigMapping:
    return QConfigMapping().set_global(float16_static_qconfig)


def _legacy_native_and_fp16() -> Any:
    """torch's test-only BackendConfig: native plus static fp16 patterns.

    The default native BackendConfig has no static fp16 linear pattern, so with it
    ``float16_static_qconfig`` quantizes nothing; torch's tests use this one instead.
    """
    from torch.ao.quantization.backend_config.native import (
        get_test_only_legacy_native_backend_config,
    )

    return get_test_only_legacy_native_backend_config()


def _weight_only_emb() -> QConfigMapping:
    return (
        QConfigMapping()
        .set_object_type(nn.Embedding, float_qparams_weight_only_qconfig)
        .set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)
    )


def _without(
    module_name: str, base: Callable[[], QConfigMapping] = _static_fbgemm
) -> Callable[[], QConfigMapping]:
    """``base()`` with quantization switched off (qconfig ``None``) for one submodule."""
    return lambda: base().set_module_name(module_name, None)


def _emb_weight_only_and_static_rest() -> QConfigMapping:
    return _static_per_tensor().set_object_type(nn.EmbeddingBag, float_qparams_weight_only_qconfig)


# --------------------------------------------------------------------------- own models


class FunctionalConvLinear(nn.Module):
    """``F.conv2d`` / ``F.linear`` with parameter weights (functional lowering path).

    With ``explicit_args`` the conv passes stride/padding/dilation/groups
    positionally, as torch's lowering needs; without, they are left to defaults.
    """

    def __init__(self, explicit_args: bool = True) -> None:
        super().__init__()
        self.explicit_args = explicit_args
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.2)
        self.b1 = nn.Parameter(torch.randn(4) * 0.1)
        self.w2 = nn.Parameter(torch.randn(6, 4 * 3 * 3) * 0.2)
        self.b2 = nn.Parameter(torch.randn(6) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.explicit_args:
            x = F.conv2d(x, self.w1, self.b1, (1, 1), (0, 0), (1, 1), 1)
        else:
            x = F.conv2d(x, self.w1, self.b1)
        x = F.relu(x)
        return F.linear(torch.flatten(x, 1), self.w2, self.b2)


class ElementwiseMix(nn.Module):
    """add / mul / cat / relu / sigmoid / hardswish between two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(3, 4, 1)
        self.conv3 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.conv2(x)
        s = torch.relu(a + b)
        m = torch.mul(a, b)
        c = torch.cat([s, m], dim=1)
        y = self.conv3(c)
        return F.hardswish(y) + torch.sigmoid(y)


class NormPoolReshape(nn.Module):
    """layer_norm, adaptive_avg_pool2d, flatten, reshape, ``size()`` and ``.shape`` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.ln = nn.LayerNorm([4, 6, 6])
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.conv(x))
        x = F.adaptive_avg_pool2d(x, (3, 3))
        x = self.pool(x)
        n = x.size(0)
        x = torch.flatten(x, 1)
        x = x.reshape(n, x.shape[1])
        x = self.fc(x)
        return F.layer_norm(x, (5,))


class ConvTransposeRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(3, 4, 3, stride=2, bias=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.deconv(x))


class StandaloneBatchNorm(nn.Module):
    """A BatchNorm2d that cannot be fused into a conv (it reads the input directly)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


class LeakyReluModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.leaky = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.leaky(self.conv(x))
        x = F.leaky_relu(self.fc(x.mean(dim=(2, 3))), 0.2)
        return x


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus identity, then relu (ResNet basic block)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


def _img(c: int = 3, hw: int = 6, n: int = _BATCH) -> Callable[[], tuple[torch.Tensor]]:
    return lambda: (torch.randn(n, c, hw, hw),)


def _vec(features: int = 5, n: int = _BATCH) -> Callable[[], tuple[torch.Tensor]]:
    return lambda: (torch.randn(n, features),)


_LSTM = "LSTMwithHiddenDynamicModel"


def _lstm_inputs() -> tuple[Any, ...]:
    # LSTM(2, 2): (seq_len, batch, input_size), (h0, c0) each (num_layers, batch, hidden).
    return (torch.randn(4, 2, 2), (torch.randn(1, 2, 2), torch.randn(1, 2, 2)))


def _emb_inputs() -> tuple[Any, ...]:
    return (torch.tensor([9, 6, 5, 7, 8, 8, 9, 2, 8, 6, 6, 9, 1, 6, 8, 8, 3, 2, 3, 6]),)


def _bag_inputs() -> tuple[Any, ...]:
    indices = torch.tensor([9, 6, 5, 7, 8, 8, 9, 2, 8, 6, 6, 9, 1, 6, 8, 8, 3, 2, 3, 6])
    offsets = torch.tensor([0, 5, 12, 20])  # include_last_offset=True
    return (indices, offsets, torch.rand(indices.numel()))


def _bag_and_linear_inputs() -> tuple[Any, ...]:
    indices = torch.tensor([9, 6, 5, 7, 8, 8, 9, 2, 8, 6, 6, 9])
    offsets = torch.tensor([0, 4, 8])
    return (indices, offsets, torch.randn(3, 4))


_functional_conv_linear = _own(FunctionalConvLinear, _img(3, 5))

# --------------------------------------------------------------------------- reference cases

CASES: list[Case] = [
    # static int8, default mappings
    _ref("SingleLayerLinear-static_fbgemm", _cq("SingleLayerLinearModel"), _static_fbgemm),
    _ref("SingleLayerLinear-static_qnnpack", _cq("SingleLayerLinearModel"), _static_qnnpack),
    _ref("TwoLayerLinear-static_fbgemm", _cq("TwoLayerLinearModel"), _static_fbgemm),
    _ref("LinearRelu-static_fbgemm", _cq("LinearReluModel"), _static_fbgemm),
    _ref("LinearReluAdd-static_fbgemm", _cq("LinearReluAddModel"), _static_fbgemm),
    _ref("LinearBnLeakyRelu-static_fbgemm", _cq("LinearBnLeakyReluModel"), _static_fbgemm),
    _ref("LinearTanh-static_fbgemm", _cq("LinearTanhModel"), _static_fbgemm),
    _ref("ConvBnReLU-static_fbgemm", _cq("ConvBnReLUModel"), _static_fbgemm),
    _ref("ConvBnReLU-static_qnnpack", _cq("ConvBnReLUModel"), _static_qnnpack),
    _ref("AnnotatedConvBnReLU-static_fbgemm", _cq("AnnotatedConvBnReLUModel"), _static_fbgemm),
    _ref("ConvBnAddRelu-static_fbgemm", _cq("ConvBnAddReluModel"), _static_fbgemm),
    _ref("ResNetBase-static_fbgemm", _cq("ResNetBase", _img(3, 4)), _static_fbgemm),
    _ref("ModelMultipleOps-static_fbgemm", _cq("ModelMultipleOps", _img(3, 8)), _static_fbgemm),
    # the x86 and onednn default mappings (onednn: no reduce_range, LinearLeakyReLU fusion)
    _ref("ConvBnReLU-static_x86", _cq("ConvBnReLUModel"), _static_x86),
    _ref("ResNetBase-static_x86", _cq("ResNetBase", _img(3, 4)), _static_x86),
    _ref("TwoLayerLinear-static_onednn", _cq("TwoLayerLinearModel"), _static_onednn),
    _ref(
        "LinearBnLeakyRelu-static_onednn",
        _cq("LinearBnLeakyReluModel"),
        _static_onednn,
        backend_config=_onednn_backend_config,
        runnable=False,
        note="quantized::linear_leaky_relu exists only in the onednn engine",
    ),
    # per-channel vs per-tensor weights (TwoLayerLinear-static_fbgemm is per-channel too)
    _ref("ConvModel-static_per_channel", _cq("ConvModel"), _static_per_channel),
    _ref("ConvModel-static_per_tensor", _cq("ConvModel"), _static_per_tensor),
    _ref("TwoLayerLinear-static_per_tensor", _cq("TwoLayerLinearModel"), _static_per_tensor),
    # dynamic int8 / fp16
    _ref("TwoLayerLinear-dynamic_int8", _cq("TwoLayerLinearModel"), _dynamic_int8),
    _ref("LinearRelu-dynamic_int8", _cq("LinearReluModel"), _dynamic_int8),
    _ref("LSTMwithHidden-dynamic_int8", _cq(_LSTM, _lstm_inputs), _dynamic_int8),
    _ref("SingleLayerLinear-dynamic_fp16", _cq("SingleLayerLinearModel"), _dynamic_fp16),
    _ref("LSTMwithHidden-dynamic_fp16", _cq(_LSTM, _lstm_inputs), _dynamic_fp16),
    # static fp16 (needs the legacy backend config); torch's lowering leaves the
    # to(float16)/dequantize pattern untouched
    _ref(
        "SingleLayerLinear-static_fp16",
        _cq("SingleLayerLinearModel"),
        _static_fp16,
        backend_config=_legacy_native_and_fp16,
    ),
    _ref(
        "LinearReluAdd-static_fp16",
        _cq("LinearReluAddModel"),
        _static_fp16,
        backend_config=_legacy_native_and_fp16,
    ),
    # weight-only embeddings
    _ref("Embedding-weight_only", _cq("EmbeddingModule", _emb_inputs), _weight_only_emb),
    _ref("EmbeddingBag-weight_only", _cq("EmbeddingBagModule", _bag_inputs), _weight_only_emb),
    _ref(
        "EmbeddingWithStaticLinear-mixed",
        _cq("EmbeddingWithStaticLinear", _bag_and_linear_inputs),
        _emb_weight_only_and_static_rest,
        departs="torch-wrong-result",
        note=(
            "its EmbeddingBag averages (mode='mean'); torch 2.13's quantized EmbeddingBag always"
            " sums, so fqlower leaves it a reference module and lowers the rest as torch does"
        ),
    ),
    # None qconfig for one submodule
    _ref("TwoLayerLinear-none_fc2", _cq("TwoLayerLinearModel"), _without("fc2")),
    _ref("NestedModel-none_sub2", _cq("NestedModel", _vec()), _without("sub2")),
    # own models
    _ref("FunctionalConvLinear-static_fbgemm", _functional_conv_linear, _static_fbgemm),
    _ref(
        "FunctionalConvDefaultArgs-static_fbgemm",
        lambda: (FunctionalConvLinear(explicit_args=False), _img(3, 5)()),
        _static_fbgemm,
        torch_lowers=False,
        torch_error="conv2d_prepack() is missing value for argument 'stride'",
        note=(
            "torch builds quantized::conv2d_prepack's arguments from the F.conv2d node's"
            " positional args only; with stride/padding/dilation/groups defaulted the"
            " prepack call raises 'conv2d_prepack() is missing value for argument stride'"
            " (plain convert_fx fails the same way)."
        ),
    ),
    _ref("FunctionalConvLinear-dynamic_int8", _functional_conv_linear, _dynamic_int8),
    _ref("ElementwiseMix-static_fbgemm", _own(ElementwiseMix, _img()), _static_fbgemm),
    _ref("NormPoolReshape-static_fbgemm", _own(NormPoolReshape, _img()), _static_fbgemm),
    _ref("ConvTransposeRelu-static_fbgemm", _own(ConvTransposeRelu, _img(3, 4)), _static_fbgemm),
    _ref("StandaloneBatchNorm-static_fbgemm", _own(StandaloneBatchNorm, _img()), _static_fbgemm),
    _ref("LeakyRelu-static_fbgemm", _own(LeakyReluModel, _img()), _static_fbgemm),
    _ref("ResidualBlock-static_fbgemm", _own(ResidualBlock, _img(4, 5)), _static_fbgemm),
    _ref("ResidualBlock-none_conv2", _own(ResidualBlock, _img(4, 5)), _without("conv2")),
]


# --------------------------------------------------------------------------- float graphs


class CallMethods(nn.Module):
    """call_method nodes with int arguments: view, transpose, size(), contiguous."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.size(0), x.size(1)
        y = x.transpose(1, 2).contiguous()
        return y.view(n, -1, c).permute(0, 2, 1)


class Kwargs(nn.Module):
    """kwargs on call_function / call_method nodes, including a float and a bool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sum(x, dim=1, keepdim=True)
        p = F.softmax(x, dim=-1)
        return torch.clamp(p * s, min=-1.0, max=1.0).mean(dim=-1)


class TupleAndDictOutputs(nn.Module):
    """Nested output structure: a tuple holding a tensor and a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = self.fc(x)
        return y, {"relu": F.relu(y), "neg": -y}


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x), "features": x}


class NestedSequential(nn.Module):
    """Nested containers give qualified call_module targets like ``blocks.0.0``."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Linear(4, 8), nn.ReLU()),
            nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3)),
        )
        self.head = nn.ModuleDict({"out": nn.Linear(3, 2)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head["out"](self.blocks(x))


class SharedSubmodule(nn.Module):
    """One submodule called twice: two call_module nodes with the same target."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(torch.relu(self.shared(x)))


class GetAttrs(nn.Module):
    """get_attr of a parameter, a buffer and a nested parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.bias_param = nn.Parameter(torch.randn(4))
        self.register_buffer("scale_buf", torch.full((4,), 0.5))
        self.sub = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.bias_param) * self.scale_buf + self.sub.weight[0]


class CatSliceGetitem(nn.Module):
    """torch.cat with a list argument, slicing and getitem on a tuple-returning op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 1:3]
        b = x[..., None, 0]
        values, indices = torch.max(x, dim=1)
        first, second = torch.chunk(x, 2, dim=1)
        picked = [values.unsqueeze(1), indices.unsqueeze(1).float()]
        return torch.cat([a, b, *picked, first + second], dim=1)


class PlaceholderDefault(nn.Module):
    """A placeholder with a default value (``alpha=2.0``): the graph runs with ``x`` only."""

    def forward(self, x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
        return x * alpha


class OptionalInput(nn.Module):
    """``y=None`` specialized away with ``concrete_args={'y': None}``."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            return x.relu()
        return x + y


class DtypeArgs(nn.Module):
    """dtype, int and float scalar arguments: ``x.to(torch.float16)``, ``.float()``, ``pow``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float16)
        y = h.float() * 0.5 + 1
        return torch.pow(y, 2).to(dtype=torch.float32, copy=True)


class ConvBlock(nn.Module):
    """A float conv/bn/pool/linear network (what a reference model starts from)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def _x(*shape: int) -> Callable[[], tuple[torch.Tensor]]:
    return lambda: (torch.randn(*shape),)


FLOAT_GRAPHS: list[Case] = [
    _float("float-call_methods", _own(CallMethods, _x(2, 3, 4))),
    _float("float-kwargs", _own(Kwargs, _x(2, 5))),
    _float("float-tuple_and_dict_outputs", _own(TupleAndDictOutputs, _x(2, 4))),
    _float("float-dict_output", _own(DictOutput, _x(2, 4))),
    _float("float-nested_sequential", _own(NestedSequential, _x(2, 4))),
    _float("float-shared_submodule", _own(SharedSubmodule, _x(2, 4))),
    _float("float-get_attrs", _own(GetAttrs, _x(2, 4))),
    _float("float-cat_slice_getitem", _own(CatSliceGetitem, _x(2, 4))),
    _float("float-placeholder_default", _own(PlaceholderDefault, _x(2, 3))),
    _float("float-optional_input", _own(OptionalInput, _x(2, 3)), concrete_args={"y": None}),
    _float("float-dtype_args", _own(DtypeArgs, _x(2, 3))),
    _float("float-conv_block", _own(ConvBlock, _x(2, 3, 6, 6))),
]

ALL_CASES: list[Case] = CASES + FLOAT_GRAPHS


def case_by_id(case_id: str) -> Case:
    """Look a case up by id in :data:`ALL_CASES`."""
    for case in ALL_CASES:
        if case.id == case_id:
            return case
    raise KeyError(case_id)


def _check_unique_ids() -> None:
    seen: set[str] = set()
    for case in ALL_CASES:
        if case.id in seen:
            raise AssertionError(f"duplicate zoo case id {case.id!r}")
        seen.add(case.id)


_check_unique_ids()
