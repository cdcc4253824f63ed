"""The PT2E front end (fqlower.lower_pt2e) against torchao's own x86 lowering.

For every model of tests/pt2e_models.py: fqlower's lowered model computes what torchao's
does (within 1e-4 of the output range), or is no further from the converted model than
torchao's; it has at least as many native int8 ops; the converted model is untouched.
Where fqlower lowers more than torchao (a linear on a 3-d input), each extra op is within
quantization error of the converted model."""

from __future__ import annotations

import copy

import pytest
import torch
from pt2e_models import MODELS, convert, torchao_lowering

import fqlower
from fqlower import FqlowerError, UnsupportedInput
from fqlower.compare import ModelSnapshot
from fqlower.pt2e import lower_pt2e, pt2e_pipeline

INT8_NAMESPACES = ("onednn.", "quantized.")


def int8_ops(module: torch.fx.GraphModule) -> int:
    """Native int8 kernel calls (prepacks, run once, aside)."""
    return sum(
        1
        for node in module.graph.nodes
        if node.op == "call_function" and str(node.target).startswith(INT8_NAMESPACES) and "prepack" not in str(node.target)
    )


def run(module, inputs):
    with torch.no_grad():
        return module(*inputs)


def largest(tensor: torch.Tensor) -> float:
    return float(tensor.abs().max())


# models where torchao's lowered model raises when it runs: its view of a channels-last
# qconv output (`aten.view(..., [2, 128])` after flatten) is not viewable
TORCHAO_MODEL_CRASHES = {"conv_flatten_linear"}
# patterns fqlower lowers and torchao's lowering leaves float: model -> extra int8 ops
BEYOND_TORCHAO = {"linear_3d": 3}


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    converted, inputs = convert(request.param)
    return request.param, converted, inputs


def test_equal_to_torchao_or_closer_to_the_converted_model(case):
    name, converted, inputs = case
    snapshot = ModelSnapshot.of(converted)
    ours = lower_pt2e(converted).module
    assert snapshot.differences(converted) == []  # the caller's model is never changed
    expected = run(converted, inputs)
    mine = run(ours, inputs)
    theirs_module = torchao_lowering(copy.deepcopy(converted), inputs)
    try:
        theirs = run(theirs_module, inputs)
    except RuntimeError:
        assert name in TORCHAO_MODEL_CRASHES
        assert float((mine - expected).abs().max()) <= 1e-4 * largest(expected) + 1e-6
        return
    assert name not in TORCHAO_MODEL_CRASHES
    close = float((mine - theirs).abs().max()) <= 1e-4 * largest(theirs)
    no_further = float((mine - expected).abs().max()) <= float((theirs - expected).abs().max()) + 1e-7
    assert close or no_further, name


def native_ops(module: torch.fx.GraphModule) -> list[str]:
    return [str(node.target) for node in module.graph.nodes if node.op == "call_function" and str(node.target).startswith(INT8_NAMESPACES)]


def test_at_least_as_many_int8_ops_as_torchao_and_the_same_ones(case):
    """Op for op where torchao lowers (its binary conv for a residual add included)."""
    name, converted, inputs = case
    ours_module, theirs_module = lower_pt2e(converted).module, torchao_lowering(copy.deepcopy(converted), inputs)
    ours, theirs = int8_ops(ours_module), int8_ops(theirs_module)
    assert ours == theirs + BEYOND_TORCHAO.get(name, 0), (ours, theirs)
    assert ours > 0
    if name not in BEYOND_TORCHAO:
        assert native_ops(ours_module) == native_ops(theirs_module)


def test_a_residual_add_runs_in_the_binary_conv():
    converted, _ = convert("residual_add_relu")
    binary = [node for node in lower_pt2e(converted).module.graph.nodes if node.target == torch.ops.onednn.qconv2d_pointwise.binary]
    assert len(binary) == 1 and binary[0].args[17:20] == ("sum", 1.0, "relu")


def test_weights_are_packed_once_into_attributes(case):
    _, converted, _ = case
    lowering = lower_pt2e(converted)
    prepacks = [node for node in lowering.module.graph.nodes if node.op == "call_function" and "prepack" in str(node.target)]
    packed = [node for node in lowering.module.graph.nodes if node.op == "get_attr" and "_packed_weight_" in node.target]
    assert prepacks == [] and len(packed) == int8_ops(lowering.module)
    # each prepack is given its input's static shape, as torchao's are (also behind a kernel
    # fqlower added, whose quantize carried no export metadata)
    specs = [value for value in lowering.program.constants.values() if isinstance(value, fqlower.Build) and "onednn" in value.factory]
    shapes = [spec.args[-1] if "qconv" in spec.factory else spec.args[1] for spec in specs]
    assert specs and all(shape is not None and all(type(size) is int for size in shape.items) for shape in shapes)


def test_the_log_replays_and_validates(case):
    name, converted, inputs = case
    lowering = lower_pt2e(converted)
    replayed = fqlower.replay(converted, lowering.log.dumps())
    assert fqlower.fingerprint(replayed.program) == lowering.log.header.output
    validated = lower_pt2e(converted, inputs, validate=True)
    assert validated.validation is not None and validated.validation.refuted == (), validated.validation.format()
    assert validated.log.dumps() == lowering.log.dumps()


def test_a_3d_linear_is_lowered_beyond_torchao():
    converted, inputs = convert("linear_3d")
    ours = lower_pt2e(converted).module
    theirs = torchao_lowering(copy.deepcopy(converted), inputs)
    assert int8_ops(theirs) == 0 and int8_ops(ours) == 3
    expected = run(converted, inputs)
    assert float((run(ours, inputs) - expected).abs().max()) <= 1e-4 * largest(expected)


def test_an_fx_graph_mode_model_is_refused_with_a_clear_error():
    from fqlower.reference import reference_model

    reference = reference_model(
        torch.nn.Sequential(torch.nn.Linear(4, 4)).eval(), (torch.randn(2, 4),), torch.ao.quantization.get_default_qconfig_mapping("x86")
    )
    with pytest.raises(UnsupportedInput, match="not a PT2E reference graph") as raised:
        lower_pt2e(reference.module)
    assert raised.value.node is not None and raised.value.node.startswith("quantize_per_tensor")
    with pytest.raises(UnsupportedInput, match="expects the GraphModule"):
        lower_pt2e(torch.nn.Linear(2, 2))  # type: ignore[arg-type]  # a plain module, on purpose


class SymmetricActivations(torch.nn.Module):
    """A conv whose input is quantized to signed int8 around zero: no onednn int8 kernel
    of this lowering takes it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randint(-20, 20, (4, 3, 1, 1), dtype=torch.int8), requires_grad=False)
        self.register_buffer("scales", torch.full((4,), 0.01))
        self.register_buffer("zero_points", torch.zeros(4, dtype=torch.int64))

    def forward(self, x):
        decomposed = torch.ops.quantized_decomposed
        q = decomposed.quantize_per_tensor.default(x, 0.05, 0, -128, 127, torch.int8)
        dq = decomposed.dequantize_per_tensor.default(q, 0.05, 0, -128, 127, torch.int8)
        w = decomposed.dequantize_per_channel.default(self.weight, self.scales, self.zero_points, 0, -128, 127, torch.int8)
        return torch.ops.aten.conv2d.default(dq, w)


def test_symmetric_int8_activations_stay_float_with_a_reason():
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    model = torch.fx.symbolic_trace(SymmetricActivations())
    inputs = (torch.randn(2, 3, 4, 4),)
    lowering = lower_pt2e(model)
    assert lowering.log.changes == ()
    (skip,) = [skip for skip in lowering.log.skips if skip.pass_name == "lower-pt2e-weighted"]
    assert "uint8 activations" in skip.reason and skip.node == "conv2d_default"
    assert torch.equal(run(lowering.module, inputs), run(model, inputs))


def test_a_graph_the_quantizer_left_float_lowers_to_itself():
    exported = torch.export.export(torch.nn.ReLU(), (torch.randn(2, 4),)).module()
    lowering = lower_pt2e(exported)
    assert lowering.log.changes == () and lowering.log.header.input == lowering.log.header.output


def test_the_pipeline_is_a_value_like_the_fx_one():
    pipeline = pt2e_pipeline()
    assert pipeline.names[0] == "lower-pt2e-weighted" and "fold-weights" in pipeline.names
    converted, _ = convert("conv_bn_relu")
    unfolded = lower_pt2e(converted, pipeline=pipeline.without("fold-weights")).module
    assert [node for node in unfolded.graph.nodes if "prepack" in str(node.target)]


def test_fqlower_itself_never_imports_torchao():
    import subprocess
    import sys

    code = "import sys, fqlower, fqlower.pt2e; sys.exit(1 if any(m.startswith('torchao') for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_bad_input_is_an_fqlower_error():
    assert issubclass(UnsupportedInput, FqlowerError)


CLI_MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
"""


def test_the_command_line_lowers_replays_explains_and_validates_a_pt2e_model(tmp_path, capsys):
    from fqlower.cli import main

    (tmp_path / "net.py").write_text(CLI_MODEL)
    reference, log = tmp_path / "net.pt2", tmp_path / "log.jsonl"
    lowered = ["lower", "--model", f"{tmp_path / 'net.py'}:Net", "--pt2e", "--input-shape", "2,3,8,8"]
    assert main([*lowered, "--save-reference", str(reference), "--log", str(log), "--validate"]) == 0
    out = capsys.readouterr()
    assert "lower-pt2e-weighted" in out.out and "validated as lowered: 6 validated, 0 refuted" in out.out
    assert "Failed to load" not in out.out + out.err  # torchao's loader noise stays out
    assert main(["replay", str(reference), str(log)]) == 0
    assert "every fingerprint matches" in capsys.readouterr().out
    assert main(["explain", str(reference)]) == 0
    assert "coverage: 2 of 2 weighted ops" in capsys.readouterr().out
    assert main(["validate", str(reference)]) == 0
    assert "lower-pt2e-weighted/conv-linear-pointwise" in capsys.readouterr().out
    from fqlower.cli.output import EXIT_USAGE

    assert main([*lowered, "--qconfig", "fbgemm"]) == EXIT_USAGE
    assert main(["lower", str(reference), "--pt2e"]) == EXIT_USAGE


def test_lower_detects_a_pt2e_graph():
    converted, inputs = convert("mlp_relu")
    assert fqlower.lower(converted).log.dumps() == lower_pt2e(converted).log.dumps()
    assert fqlower.pipeline_for(converted).name == pt2e_pipeline().name


def test_diff_and_bisect_work_on_a_pt2e_lowering():
    """The debugging tools are front-end blind: a diff names the kernels a lowering
    added, and bisect finds the one change a wrong user rule makes (the binary conv's
    input zero point off by 10)."""
    from fqlower.bisect import bisect

    converted, inputs = convert("residual_add")
    lowering = lower_pt2e(converted)
    start = fqlower.from_fx(converted)
    changes = fqlower.node_changes(start, lowering.program)
    assert [name for name in changes.added if name.endswith("_int8")] and "onednn.qconv2d_pointwise.binary" in fqlower.diff_text(start, lowering.program)

    def match(program, node):
        return fqlower.Match(node.name) if node.op == "call_function" and node.target == torch.ops.onednn.qconv2d_pointwise.binary else None

    def rewrite(program, found):
        node = program.node(found.anchor)
        return [fqlower.SetArgs(node.name, (node.args[0], node.args[1], node.args[2] + 10, *node.args[3:]), node.kwargs)]

    wrong = fqlower.Pipeline("wrong", (pt2e_pipeline(), fqlower.rule_pass("zero-point-off", match, rewrite)))
    broken = lower_pt2e(converted, pipeline=wrong)
    assert float((run(broken.module, inputs) - run(converted, inputs)).abs().max()) > 0.02
    found = bisect(converted, broken.log, inputs, tolerance=0.01)
    # the culprit, with the changes it builds on (it rewrites a kernel they made)
    culprits = [change.pass_name for change in found.culprits]
    assert culprits[-1] == "zero-point-off" and culprits.count("zero-point-off") == 1
    refuted = lower_pt2e(converted, inputs, pipeline=wrong, validate=True).validation.refuted
    assert [verdict.change.pass_name for verdict in refuted] == ["zero-point-off"]
