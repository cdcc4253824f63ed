"""The quick builders construct exactly what torch's `from_reference` constructs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.ao.nn.intrinsic as nni
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.reference as nnqr
from hypothesis import given, settings
from hypothesis import strategies as st

from fqlower.emit.builders import BUILDERS
from fqlower.compare import values_equal
from fqlower.names import qualified_name

CONVS = {1: (torch.nn.Conv1d, nnqr.Conv1d, nnq.Conv1d, nniq.ConvReLU1d, nni.ConvReLU1d), 2: (torch.nn.Conv2d, nnqr.Conv2d, nnq.Conv2d, nniq.ConvReLU2d, nni.ConvReLU2d), 3: (torch.nn.Conv3d, nnqr.Conv3d, nnq.Conv3d, nniq.ConvReLU3d, nni.ConvReLU3d)}


def module_differences(a: Any, b: Any, path: str = "module") -> list[str]:
    """Everything that tells two freshly built modules apart: type, attribute names in
    order, attribute values (tensors and packed weights bit for bit), submodules."""
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
    found = []
    va, vb = vars(a), vars(b)
    if list(va) != list(vb):
        found.append(f"{path}: attributes {list(va)} vs {list(vb)}")
    for key in va.keys() & vb.keys():
        x, y = va[key], vb[key]
        if key == "_modules":
            if list(x) != list(y):
                found.append(f"{path}: submodules {list(x)} vs {list(y)}")
            found += [difference for name in x.keys() & y.keys() for difference in module_differences(x[name], y[name], f"{path}.{name}")]
        elif type(x) is not type(y) or not values_equal(x, y):
            found.append(f"{path}.{key}: {x!r} vs {y!r}")
    return found


def reference_weight_qparams(weight: torch.Tensor, per_channel: bool, seed: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    if per_channel:
        channels = weight.shape[0]
        scale = torch.rand(channels, generator=generator, dtype=torch.float64) * 0.05 + 0.001
        return {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "scale": scale.float(), "zero_point": torch.zeros(channels, dtype=torch.int64), "axis": 0}
    return {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": torch.tensor(0.02), "zero_point": torch.tensor(0), "axis": 0}


def with_reference(fused: torch.nn.Sequential, ref: torch.nn.Module) -> torch.nn.Sequential:
    """A fused float module with its first module swapped for a reference one, as convert_fx does."""
    fused[0] = ref
    return fused


def both(cls: type, ref: torch.nn.Module, scale: Any, zero_point: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    built = BUILDERS[f"{qualified_name(cls)}.from_reference"](ref, scale, zero_point)
    assert built is not None, "the builder declined a common-case module"
    return cls.from_reference(ref, scale, zero_point), built


def assert_same(expected: torch.nn.Module, built: torch.nn.Module, example: torch.Tensor | None) -> None:
    assert module_differences(expected, built) == []
    assert repr(expected) == repr(built)
    assert list(expected.state_dict()) == list(built.state_dict())
    assert all(values_equal(x, y) for x, y in zip(expected.state_dict().values(), built.state_dict().values()))
    if example is not None:
        q = torch.quantize_per_tensor(example, 0.05, 64, torch.quint8)
        assert values_equal(expected(q), built(q))


@settings(max_examples=60, deadline=None)
@given(
    dims=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2]),
    channels=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    per_channel=st.booleans(),
    fused=st.booleans(),
    scale=st.floats(0.001, 1.0),
    zero_point=st.integers(0, 255),
    seed=st.integers(0, 1000),
)
def test_conv_builders_equal_from_reference(dims, groups, channels, kernel, stride, padding, dilation, bias, per_channel, fused, scale, zero_point, seed):
    float_cls, ref_cls, q_cls, fused_q_cls, fused_ref_cls = CONVS[dims]
    torch.manual_seed(seed)
    conv = float_cls(channels[0] * groups, channels[1] * groups, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias)
    ref = ref_cls.from_float(conv, reference_weight_qparams(conv.weight, per_channel, seed))
    if fused:
        ref, q_cls = with_reference(fused_ref_cls(conv, torch.nn.ReLU()), ref), fused_q_cls
    # scales arrive as tensors (get_attr constants) or Python numbers
    expected, built = both(q_cls, ref, torch.tensor(scale) if seed % 2 else scale, torch.tensor(zero_point) if seed % 3 else zero_point)
    size = (1 + kernel) * dilation + 2
    assert_same(expected, built, torch.randn(1, channels[0] * groups, *([size] * dims), generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("cls", [nniq.ConvAdd2d, nniq.ConvAddReLU2d])
def test_conv_add_builders_equal_from_reference(cls):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    ref = nnqr.Conv2d.from_float(conv, reference_weight_qparams(conv.weight, True, 0))
    fused = with_reference(nni.ConvAdd2d(conv, torch.add) if cls is nniq.ConvAdd2d else nni.ConvAddReLU2d(conv, torch.add, torch.nn.ReLU()), ref)
    expected, built = both(cls, fused, torch.tensor(0.1), torch.tensor(3))
    assert module_differences(expected, built) == []
    assert repr(expected) == repr(built)


@settings(max_examples=40, deadline=None)
@given(
    features=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    bias=st.booleans(),
    per_channel=st.booleans(),
    wrapper=st.sampled_from([None, nni.LinearReLU, nni.LinearTanh]),
    seed=st.integers(0, 1000),
)
def test_linear_builders_equal_from_reference(features, bias, per_channel, wrapper, seed):
    torch.manual_seed(seed)
    linear = torch.nn.Linear(*features, bias=bias)
    ref = nnqr.Linear.from_float(linear, reference_weight_qparams(linear.weight, per_channel, seed))
    cls = {None: nnq.Linear, nni.LinearReLU: nniq.LinearReLU, nni.LinearTanh: nniq.LinearTanh}[wrapper]
    if wrapper is not None:
        ref = with_reference(wrapper(linear, torch.nn.ReLU() if wrapper is nni.LinearReLU else torch.nn.Tanh()), ref)
    expected, built = both(cls, ref, 0.07, 5)
    # quantized::linear_tanh has an onednn kernel only; its packed weight is compared above
    example = None if cls is nniq.LinearTanh else torch.randn(3, features[0], generator=torch.Generator().manual_seed(seed))
    assert_same(expected, built, example)


def test_the_differences_helper_sees_a_changed_attribute():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 1)
    ref = nnqr.Conv2d.from_float(conv, reference_weight_qparams(conv.weight, False, 0))
    expected, built = both(nnq.Conv2d, ref, 0.1, 0)
    built.zero_point = 1
    assert module_differences(expected, built) == ["module.zero_point: 0 vs 1"]
    built.zero_point = 0
    scale = built.scale
    del built.scale
    built.scale = scale  # same value, attribute order changed
    assert len(module_differences(expected, built)) == 1


def test_builders_decline_what_they_were_not_written_for():
    """Unusual modules are left to from_reference (which gives torch's own result or error)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding="same")
    ref = nnqr.Conv2d.from_float(conv, reference_weight_qparams(conv.weight, False, 0))
    assert BUILDERS[f"{qualified_name(nnq.Conv2d)}.from_reference"](ref, 0.1, 0) is None
    reflect = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    ref = nnqr.Conv2d.from_float(reflect, reference_weight_qparams(reflect.weight, False, 0))
    assert BUILDERS[f"{qualified_name(nnq.Conv2d)}.from_reference"](ref, 0.1, 0) is None
    # a plain reference conv where a fused one is expected
    assert BUILDERS[f"{qualified_name(nniq.ConvReLU2d)}.from_reference"](ref, 0.1, 0) is None


def test_unusual_modules_still_lower_through_from_reference():
    """A reflect-padded conv takes from_reference's path and lowers exactly as torch lowers it."""
    from torch.ao.quantization import get_default_qconfig_mapping

    import fqlower
    from fqlower.compare import lowering_differences
    from fqlower.reference import reference_model, torch_lowering

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), torch.nn.Conv2d(3, 3, 3, padding=(1, 0))).eval()
    x = (torch.randn(1, 2, 6, 6),)
    ref = reference_model(model, x, get_default_qconfig_mapping())
    ours = fqlower.lower_to_native_backend(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    assert lowering_differences(torch_lowering(ref), ours, x) == []


def saved_and_called(module: torch.nn.Module, q: torch.Tensor, path: Any) -> Any:
    torch.save(module, path)
    loaded = torch.load(path, weights_only=False)
    try:
        return loaded(q).int_repr().tolist()
    except Exception as error:
        return f"{type(error).__name__}: {error}"


@pytest.mark.parametrize("cls", [nnq.Conv2d, nniq.ConvReLU2d, nnq.Linear, nniq.LinearReLU])
def test_built_modules_script_copy_and_save_as_from_reference_ones_do(cls, tmp_path):
    import copy

    torch.manual_seed(0)
    if cls in (nnq.Conv2d, nniq.ConvReLU2d):
        float_module, example = torch.nn.Conv2d(2, 4, 3, padding=1), torch.randn(1, 2, 5, 5)
        ref = nnqr.Conv2d.from_float(float_module, reference_weight_qparams(float_module.weight, True, 0))
        if cls is nniq.ConvReLU2d:
            ref = with_reference(nni.ConvReLU2d(float_module, torch.nn.ReLU()), ref)
    else:
        float_module, example = torch.nn.Linear(3, 4), torch.randn(2, 3)
        ref = nnqr.Linear.from_float(float_module, reference_weight_qparams(float_module.weight, True, 0))
        if cls is nniq.LinearReLU:
            ref = with_reference(nni.LinearReLU(float_module, torch.nn.ReLU()), ref)
    expected, built = both(cls, ref, 0.1, 3)
    q = torch.quantize_per_tensor(example, 0.05, 64, torch.quint8)
    want = expected(q)
    assert module_differences(copy.deepcopy(expected), copy.deepcopy(built)) == []
    assert values_equal(torch.jit.script(built)(q), want)
    torch.jit.script(expected)  # scripting adds an attribute to the module: to both, then
    assert module_differences(expected, built) == []
    # torch.save/load round trips: whatever torch's own module does (a loaded quantized
    # conv lacks _backward_hooks in torch 2.13 and cannot be called), the built one does too
    assert saved_and_called(built, q, tmp_path / "built.pt") == saved_and_called(expected, q, tmp_path / "expected.pt")
    loaded = [cls.from_reference(ref, 1.0, 0) for _ in range(2)]
    loaded[0].load_state_dict(expected.state_dict())
    loaded[1].load_state_dict(built.state_dict())
    assert values_equal(loaded[0](q), loaded[1](q))


def test_the_emitter_builds_common_modules_without_from_reference(monkeypatch):
    """The builders are keyed by the factory names the passes write: lowering a conv+relu,
    a conv and a linear model builds each module with its builder (which then needs no
    from_reference), and the result equals torch's."""
    from torch.ao.quantization import get_default_qconfig_mapping

    import fqlower
    from fqlower.compare import lowering_differences
    from fqlower.reference import reference_model, torch_lowering

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 3, 1), torch.nn.Flatten(), torch.nn.Linear(48, 4)).eval()
    x = (torch.randn(1, 2, 6, 6),)
    ref = reference_model(model, x, get_default_qconfig_mapping())
    expected = torch_lowering(ref)
    built: list[type] = []
    for cls in (nnq.Conv2d, nniq.ConvReLU2d, nnq.Linear):
        key = f"{qualified_name(cls)}.from_reference"

        def counted(*args: Any, builder: Any = BUILDERS[key]) -> Any:
            module = builder(*args)
            built.append(type(module))
            return module

        monkeypatch.setitem(BUILDERS, key, counted)
    ours = fqlower.lower_to_native_backend(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    assert sorted(cls.__name__ for cls in built) == ["Conv2d", "ConvReLU2d", "Linear"]
    assert {type(ours.get_submodule(path)) for path in ("0", "2", "4")} == {nniq.ConvReLU2d, nnq.Conv2d, nnq.Linear}
    assert lowering_differences(expected, ours, x) == []
