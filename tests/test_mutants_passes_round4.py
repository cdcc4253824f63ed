"""Round 4 of tests written against mutmut's survivors in the lowering passes
(`make mutation`, docs/mutation.md): kernel_bugs (`_after_a_conv`, `_prelu_problem`),
quantized_op_call (`call_problem`) and two_input_modules (`match`).

- A PReLU whose weight qparams hold 1.0 exactly (1/scale + zero point == 255) is
  right in torch's kernel, and lowered as torch lowers it.
- The search for a convolution behind a clamp looks each node up once (a chain of
  diamonds has exponentially many paths).
- `call_problem` on a function without a Python signature checks the schema alone.
- A conv-add whose output quantize takes its input by keyword is lowered as torch
  lowers the positional form.
"""

from __future__ import annotations

import copy
import inspect

import attrs
import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.nn as nn
from test_pass_modules import conv_add_reference
from test_pass_special_patterns import Builder
from torch.ao.quantization import MinMaxObserver, QConfig, QConfigMapping, get_default_qconfig_mapping

import fqlower
from fqlower import FrozenDict, Ref
from fqlower.compare import graph_differences, lowering_differences, module_type_differences, state_dict_differences
from fqlower.passes.kernel_bugs import _after_a_conv
from fqlower.passes.quantized_op_call import call_problem
from fqlower.reference import reference_model, torch_lowering

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")


# --- kernel_bugs._prelu_problem: the boundary 1/scale + zero point == 255 -----------------------------


class TwoSlopePReLU(nn.Module):
    def __init__(self, slopes) -> None:
        super().__init__()
        self.prelu = nn.PReLU(num_parameters=2)
        with torch.no_grad():
            self.prelu.weight.copy_(torch.tensor(slopes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(x)


# the weight observer nnq.PReLU.from_reference runs: quint8 affine MinMax over [min(w, 0), max(w, 0)]
QUINT8_WEIGHT_MAPPING = QConfigMapping().set_global(
    QConfig(activation=get_default_qconfig_mapping("fbgemm").global_qconfig.activation, weight=MinMaxObserver.with_args(dtype=torch.quint8))
)


def test_a_prelu_whose_weight_qparams_hold_one_exactly_at_the_top_is_lowered_as_torch_does():
    """Slopes [-127/128, 1]: range 255/128, so scale 1/128 (exact) and zero point 127; 1.0
    quantizes to 128 + 127 = 255, the top of quint8, without saturating. torch's lowered
    PReLU then computes the reference exactly on positive inputs, and fqlower lowers it too
    (`one < top` would refuse it)."""
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(torch.tensor([-127 / 128, 1.0]))
    scale, zero_point = observer.calculate_qparams()
    assert (float(scale), int(zero_point)) == (1 / 128, 127)
    assert 1.0 / float(scale) + int(zero_point) == 255.0

    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0)) * 2  # positive: scaled by the quantized 1.0
    ref = reference_model(TwoSlopePReLU([-127 / 128, 1.0]), (x,), QUINT8_WEIGHT_MAPPING)
    theirs = torch_lowering(ref)
    ours = fqlower.lower(ref.module, ref.qconfig_map, ref.node_name_to_scope)
    with torch.no_grad():
        assert torch.equal(theirs(x), ref.module(x))  # torch's kernel is right here
    assert ours.log.skips == ()
    assert type(ours.module.prelu) is nnq.PReLU
    assert lowering_differences(theirs, ours.module, (x,)) == []


# --- kernel_bugs._after_a_conv: each node looked up once --------------------------------------------------


class CountingView:
    """A program that records which nodes are looked up."""

    def __init__(self, program) -> None:
        self.program, self.looked_up = program, []

    def node(self, name):
        self.looked_up.append(name)
        return self.program.node(name)

    def __getattr__(self, name):
        return getattr(self.program, name)


def test_the_search_for_a_convolution_looks_each_node_up_once():
    """x -> 12 diamonds (neg and abs of the last, added) -> clamp: 2**12 paths back to x,
    and 37 nodes. No convolution anywhere, so the whole graph is searched, once."""
    b = Builder()
    last = b.placeholder("x")
    for i in range(12):
        last = b.call(f"add_{i}", torch.add, b.call(f"neg_{i}", torch.neg, last), b.call(f"abs_{i}", torch.abs, last))
    program = fqlower.from_fx(b.output(b.call("op", torch.clamp, last, -1.0, 1.0)))
    view = CountingView(program)
    assert _after_a_conv(view, program.node("op")) is False
    assert sorted(view.looked_up) == sorted(["x", *(f"{kind}_{i}" for i in range(12) for kind in ("add", "neg", "abs"))])


# --- quantized_op_call.call_problem: a function without a signature ----------------------------------------


ELU = torch.ops.quantized.elu  # quantized::elu(Tensor self, float output_scale, int output_zero_point, Scalar alpha=1, ...)
QPARAMS = FrozenDict({"output_scale": Ref("scale"), "output_zero_point": Ref("zp")})


def test_a_function_without_a_signature_is_checked_against_the_schema_only():
    # inspect.signature raises ValueError for a builtin: no positional names to compare
    with pytest.raises(ValueError):
        inspect.signature(torch._C._nn.elu)
    assert call_problem(ELU, torch._C._nn.elu, (Ref("x"),), QPARAMS) is None
    # a second positional argument lands on output_scale, also given by keyword: the schema tells
    assert call_problem(ELU, torch._C._nn.elu, (Ref("x"), 0.5), QPARAMS) == (
        "quantized::elu with 'output_scale' both by position and by keyword"
    )
    assert call_problem(ELU, torch._C._nn.elu, (Ref("x"),), QPARAMS.set("inplace", False)) == (
        "quantized::elu with an argument 'inplace' it does not have"
    )


# --- two_input_modules.match: the output quantize's input by keyword ---------------------------------------


def test_a_conv_add_whose_output_quantize_takes_its_input_by_keyword_is_lowered_as_the_positional_form():
    """torch reads `q_node.args[0]` (IndexError on the keyword form); fqlower reads the input
    by position or keyword, as for every other argument, and lowers the keyword form to
    what torch makes of the positional one."""
    reference = conv_add_reference()
    gm = copy.deepcopy(reference.module)
    (quantize,) = [node for node in gm.graph.nodes if node.name == "quantize_per_tensor_2"]
    assert quantize.args[0].name == "conv"
    quantize.kwargs = dict(zip(("input", "scale", "zero_point", "dtype"), quantize.args))
    quantize.args = ()
    gm.recompile()
    with pytest.raises(IndexError):
        torch_lowering(attrs.evolve(reference, module=gm))
    ours = fqlower.lower(gm, reference.qconfig_map, reference.node_name_to_scope)
    expected = torch_lowering(reference)  # of the positional form
    assert type(expected.conv) is nniq.ConvAdd2d
    assert ours.log.skips == ()
    assert type(ours.module.conv) is nniq.ConvAdd2d
    # the onednn conv-add kernel crashes on CPUs without AVX-512 VNNI: compare all but outputs
    assert graph_differences(expected, ours.module) == []
    assert module_type_differences(expected, ours.module) == []
    assert state_dict_differences(expected, ours.module) == []
