"""Translation validation (fqlower.validate, fqlower.validation): each change of a lowering checked on its
own subgraph, against the subgraph it replaced.

On the zoo every change torch lowers correctly is validated; the x86 engine's quantized
ConvTranspose2d (torch's lowering gives the same wrong values) is refuted on the data
the model was calibrated with, and validated on the fbgemm and qnnpack engines; deliberately wrong user rules are refuted, and
only they are; validating changes neither the model nor the log."""

from __future__ import annotations

import operator

import pytest
import torch
import zoo

import fqlower
from fqlower import Match, Pipeline, SetTarget, rule_pass
from fqlower.compare import ModelSnapshot
from fqlower.passes import default_pipeline
from fqlower.reference import quantized_engine
from fqlower.validation import REFUTED, UNCHECKED, VALIDATED, validate

# the one zoo case whose native kernel computes something else on this machine's default
# engine, x86 (torch's lowering too)
WRONG_KERNEL = {"ConvTransposeRelu-static_fbgemm": ("lower-special-patterns", "swap-module")}
# changes whose kernels do not run on this machine's engine: checked where they run
OTHER_ENGINE = {"LinearBnLeakyRelu-static_onednn"}


@pytest.fixture(scope="module")
def zoo_validations():
    found = {}
    for case in zoo.ALL_CASES:
        reference = case.build()
        found[case.id] = (reference, validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs))
    return found


def test_every_zoo_change_is_validated_but_the_wrong_kernel_and_the_other_engine(zoo_validations):
    counts = {VALIDATED: 0, REFUTED: 0, UNCHECKED: 0}
    for case, (_, validation) in zoo_validations.items():
        for status, number in validation.counts().items():
            counts[status] += number
        refuted = {(verdict.change.pass_name, verdict.change.rule) for verdict in validation.refuted}
        assert refuted == ({WRONG_KERNEL[case]} if case in WRONG_KERNEL else set()), (case, validation.format())
        unchecked = [verdict for verdict in validation.verdicts if verdict.status == UNCHECKED]
        assert bool(unchecked) == (case in OTHER_ENGINE), (case, [verdict.reason for verdict in unchecked])
    assert counts[VALIDATED] >= 0.9 * sum(counts.values()), counts


def test_the_wrong_kernel_is_refuted_on_calibration_data_with_a_counterexample(zoo_validations):
    """The x86 engine's quantized ConvTranspose2d is about 2 off here, on the very inputs
    the reference model saw: one output step is the bound."""
    assert torch.backends.quantized.engine == "x86"
    reference, validation = zoo_validations["ConvTransposeRelu-static_fbgemm"]
    (verdict,) = validation.refuted
    assert verdict.error > 20 * verdict.bound and "on sample 0" in verdict.reason
    assert verdict.counterexample is not None and all(isinstance(item, torch.Tensor) for item in verdict.counterexample)
    assert "refuted: swap-module at" in validation.format()


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_the_same_conv_transpose_validates_on_the_fbgemm_and_qnnpack_engines(engine):
    """Their kernels are right: the same rule, on those engines, is validated."""
    case = next(case for case in zoo.ALL_CASES if case.id == "ConvTransposeRelu-static_fbgemm")
    with quantized_engine(engine):
        reference = case.build()
        validation = validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs)
    assert validation.refuted == () and validation.counts()[VALIDATED] == len(validation.verdicts)


def retarget(name: str, old, new) -> object:
    """A user's rule that retargets every call of `old` to `new`: wrong on purpose."""

    def match(program, node):
        return Match(node.name) if node.op == "call_function" and node.target is old else None

    return rule_pass(name, match, lambda program, found: [SetTarget(found.anchor, "call_function", new)])


WRONG_RULES = {
    "add-as-mul": (torch.ops.quantized.add, torch.ops.quantized.mul),
    "mul-as-add": (torch.ops.quantized.mul, torch.ops.quantized.add),
}


@pytest.mark.parametrize("rule", list(WRONG_RULES))
def test_a_wrong_user_rule_is_refuted_and_only_it(rule, zoo_validations):
    reference, _ = zoo_validations["ElementwiseMix-static_fbgemm"]
    pipeline = Pipeline("with-a-wrong-rule", (default_pipeline(), retarget(rule, *WRONG_RULES[rule])))
    maps = (reference.qconfig_map, reference.node_name_to_scope)
    lowering = fqlower.lower(reference.module, *maps, pipeline=pipeline)
    assert [change for change in lowering.log.changes if change.pass_name == rule]  # it did rewrite something
    validation = validate(reference.module, *maps, reference.example_inputs, pipeline=pipeline)
    assert {verdict.change.pass_name for verdict in validation.refuted} == {rule}
    assert all("differs by" in verdict.reason for verdict in validation.refuted)


def test_validating_changes_neither_the_model_nor_the_log(zoo_validations):
    reference, _ = zoo_validations["ElementwiseMix-static_fbgemm"]
    snapshot = ModelSnapshot.of(reference.module)
    log = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope).log
    text = log.dumps()
    validation = validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs, log=log)
    assert snapshot.differences(reference.module) == [] and log.dumps() == text
    assert [verdict.change for verdict in validation.verdicts] == list(log.changes)
    assert fqlower.validate is validate  # the function, at the top level


def test_the_checks_are_deterministic_for_a_seed(zoo_validations):
    reference, _ = zoo_validations["FunctionalConvLinear-static_fbgemm"]
    runs = [validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs, seed=3) for _ in range(2)]
    assert [(v.status, v.error, v.bound) for v in runs[0].verdicts] == [(v.status, v.error, v.bound) for v in runs[1].verdicts]
    assert operator.eq(runs[0].counts(), runs[1].counts())


def test_a_relu_dropped_where_the_output_quantization_clamps_at_zero_is_validated(zoo_validations):
    """Not every rewrite that looks wrong is: add_relu retargeted to add, where the output
    zero point is the bottom of quint8, computes the same codes, and validation says so."""
    reference, _ = zoo_validations["ConvBnAddRelu-static_fbgemm"]
    pipeline = Pipeline("relu-dropped", (default_pipeline(), retarget("relu-dropped", torch.ops.quantized.add_relu, torch.ops.quantized.add)))
    validation = validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs, pipeline=pipeline)
    dropped = [verdict for verdict in validation.verdicts if verdict.change.pass_name == "relu-dropped"]
    assert dropped and all(verdict.status == VALIDATED for verdict in dropped)


MODEL_FILE = """
import torch
from torch import nn


class Deconv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.deconv, self.relu = nn.ConvTranspose2d(3, 4, 3, stride=2), nn.ReLU()

    def forward(self, x):
        return self.relu(self.deconv(x))


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu = nn.Conv2d(3, 4, 3), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + 1.0
"""


@pytest.mark.parametrize(("model", "code"), [("Deconv", 1), ("Conv", 0)])
def test_the_cli_prints_a_table_per_rule_and_exits_1_on_a_refutation(model, code, tmp_path, capsys):
    from fqlower.cli import main

    (tmp_path / "net.py").write_text(MODEL_FILE)
    reference = tmp_path / "ref.pt"
    lowered = ["lower", "--model", f"{tmp_path / 'net.py'}:{model}", "--qconfig", "fbgemm", "--input-shape", "8,3,6,6"]
    with quantized_engine("x86"):  # whose ConvTranspose2d kernel computes something else here
        assert main([*lowered, "--save-reference", str(reference)]) == 0
        capsys.readouterr()
        assert main(["validate", str(reference), "--reproducers", str(tmp_path / "repro")]) == code
        out = capsys.readouterr().out
        assert main(["lower", str(reference), "--validate", "-o", str(tmp_path / "out.pt")]) == 0
        lowered_out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["rule", VALIDATED, REFUTED, UNCHECKED]
    scripts = sorted((tmp_path / "repro").glob("*.py")) if code else []
    if code:
        assert "refuted: swap-module at" in out and "counterexample for swap-module" in out and ", 1 refuted," in out
        assert "input %quantize_per_tensor: quint8 [8, 3, 6, 6]" in out and len(scripts) == 1 and f"reproducer: {scripts[0]}" in out
        assert "  not lowered: swap-module at" in lowered_out and "validated as lowered:" in lowered_out and ", 1 refuted," in lowered_out
    else:
        assert "refuted:" not in out and ", 0 refuted, 0 unchecked" in out and not (tmp_path / "repro").exists()
        assert "not lowered" not in lowered_out and ", 0 refuted, 0 unchecked" in lowered_out


def _validation_of(model, inputs, qconfig_mapping):
    from fqlower.reference import reference_model

    reference = reference_model(model.eval(), inputs, qconfig_mapping)
    return validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs)


class AddScalar(torch.nn.Module):
    def forward(self, x):
        return x + 1.0


def test_a_kernel_that_keeps_its_input_codes_is_validated_where_the_reference_saturates():
    """Regression (validation law 2): `x + 1.0` lowers to quantized.add_scalar, which keeps
    the input's codes and moves the zero point, while the reference requantizes with the
    input's qparams and clamps at code 255; on qnnpack's full 8-bit range the top codes
    then differ by the scalar. A saturated reference code says only "at least this", so
    the kernel's larger value there is no error; a kernel below it still is."""
    from torch.ao.quantization import get_default_qconfig_mapping

    inputs = (torch.randn(256, 4, generator=torch.Generator().manual_seed(0)),)
    with quantized_engine("qnnpack"):
        validation = _validation_of(AddScalar(), inputs, get_default_qconfig_mapping("qnnpack"))
        assert validation.refuted == () and validation.counts()[VALIDATED] == len(validation.verdicts)
        wrong = Pipeline("add-scalar-as-mul", (default_pipeline(), retarget("add-as-mul", torch.ops.quantized.add, torch.ops.quantized.mul)))
        from fqlower.reference import reference_model

        reference = reference_model(AddScalar().eval(), inputs, get_default_qconfig_mapping("qnnpack"))
        refuted = validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs, pipeline=wrong).refuted
    assert [verdict.change.pass_name for verdict in refuted] == ["add-as-mul"]


class PoolTwoRelus(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = torch.nn.AvgPool1d(2)

    def forward(self, x):
        pooled = self.pool(x)
        return torch.relu(pooled), torch.nn.functional.relu(pooled)


def test_outputs_of_the_matched_side_are_computed_not_taken_from_the_reference_run():
    """Regression (validation law 2): after the first reroute runs the pool on quantized
    codes, the dequantize between it and the second relu computes a step away from its
    value in the reference run; taking that value as the matched side's output refuted
    the second reroute. Both sides are run on the same inputs."""
    from torch.ao.quantization import get_default_qconfig_mapping

    inputs = (torch.randn(256, 3, 5, generator=torch.Generator().manual_seed(1)),)
    torch.manual_seed(0)
    validation = _validation_of(PoolTwoRelus(), inputs, get_default_qconfig_mapping("fbgemm"))
    assert validation.refuted == () and [v.change.rule for v in validation.verdicts].count("reroute") == 2
