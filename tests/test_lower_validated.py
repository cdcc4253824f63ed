"""Lowering with validate=True (fqlower.validation.checker): each change checked as the
passes make it; a refuted rewrite is not applied, a Skip says why, and later rules and
passes see the pattern as it was. Where nothing is refuted the lowering is the one
`lower` makes without the flag, byte for byte."""

from __future__ import annotations

import logging
import operator
import subprocess
import sys

import attrs
import pytest
import torch
import zoo

import fqlower
from fqlower import Match, Pipeline, PassResult, Rule, RulePass, SetTarget, Skip, UnsupportedInput, rule_pass
from fqlower.compare import ModelSnapshot, values_equal
from fqlower.log import record_change
from fqlower.passes import default_pipeline
from fqlower.reasons import Code
from fqlower.reference import quantized_engine, torch_lowering
from fqlower.validation import REFUTED, VALIDATED, validate
from fqlower.validation.reproducer import describe_value, write_reproducer

DECONV = "ConvTransposeRelu-static_fbgemm"  # whose ConvTranspose2d kernel is wrong on the x86 engine


def build(case_id):
    return zoo.case_by_id(case_id).build()


def lowered(reference, **options):
    return fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope, **options)


def validated(reference, **options):
    return lowered(reference, validate=True, example_inputs=reference.example_inputs, **options)


def run(module, inputs):
    with torch.no_grad():
        return module(*inputs)


def refusals(lowering):
    return [entry for entry in lowering.log.entries if isinstance(entry, Skip) and entry.reason.startswith("refuted by translation validation")]


# cases whose every change validates on this machine's engine, one per family
CLEAN = ["ConvBnAddRelu-static_fbgemm", "ElementwiseMix-static_fbgemm", "FunctionalConvLinear-dynamic_int8", "EmbeddingWithStaticLinear-mixed", "ResidualBlock-none_conv2"]


@pytest.mark.parametrize("case_id", CLEAN)
def test_where_nothing_is_refuted_the_lowering_is_the_unvalidated_one(case_id):
    reference = build(case_id)
    plain, checked = lowered(reference), validated(reference)
    assert checked.validation is not None and checked.validation.refuted == ()
    assert checked.log.dumps() == plain.log.dumps()
    assert checked.module.code == plain.module.code
    assert values_equal(run(checked.module, reference.example_inputs), run(plain.module, reference.example_inputs))
    # the same verdicts as validating afterwards: same checks, same draws, same order
    after = validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs)
    assert [(v.change, v.status, v.error, v.bound) for v in checked.validation.verdicts] == [(v.change, v.status, v.error, v.bound) for v in after.verdicts]


def test_the_wrong_kernel_is_not_applied_and_the_skip_says_why():
    """torch's lowering of the deconv is 1.2 off the reference model; validated, it stays
    float and the model computes the reference's values."""
    assert torch.backends.quantized.engine == "x86"
    reference = build(DECONV)
    snapshot = ModelSnapshot.of(reference.module)
    checked = validated(reference)
    assert snapshot.differences(reference.module) == []
    (skip,) = refusals(checked)
    assert (skip.pass_name, skip.rule, skip.code) == ("lower-special-patterns", "swap-module", Code.TORCH_WRONG_RESULT)
    for part in ("ConvTranspose2d", "differs by", "bound", "on sample 0", "input %quantize_per_tensor: quint8 [16, 3, 4, 4]", "codes 0..127"):
        assert part in skip.reason, (part, skip.reason)
    assert not [c for c in checked.log.changes if c.rule == "swap-module"]
    assert "deconv" in dict(checked.module.named_modules()) and not type(checked.module.deconv).__module__.startswith("torch.ao.nn.quantized.modules")
    inputs = reference.example_inputs
    expected = run(reference.module, inputs)
    theirs = run(torch_lowering(build(DECONV)), inputs)
    assert float((theirs - expected).abs().max()) > 1.0  # torch's lowering is wrong here
    assert float((run(checked.module, inputs) - expected).abs().max()) < 0.05
    # the log replays to the same model
    replayed = fqlower.replay(reference.module, checked.log, reference.qconfig_map, reference.node_name_to_scope)
    assert fqlower.fingerprint(replayed.program) == fqlower.fingerprint(checked.program)


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_on_engines_whose_kernel_is_right_the_deconv_is_lowered(engine):
    with quantized_engine(engine):
        checked = validated(build(DECONV))
    assert refusals(checked) == [] and [c for c in checked.log.changes if c.rule == "swap-module"]


def retarget_pass(name, old, new):
    def match(program, node):
        return Match(node.name) if node.op == "call_function" and node.target is old else None

    return rule_pass(name, match, lambda program, found: [SetTarget(found.anchor, "call_function", new)])


def test_a_wrong_user_rule_is_refused_and_the_model_is_the_default_one():
    reference = build("ElementwiseMix-static_fbgemm")
    wrong = retarget_pass("add-as-mul", torch.ops.quantized.add, torch.ops.quantized.mul)
    pipeline = Pipeline("with-a-wrong-rule", (default_pipeline(), wrong))
    assert [c for c in lowered(reference, pipeline=pipeline).log.changes if c.pass_name == "add-as-mul"]
    checked = validated(reference, pipeline=pipeline)
    assert {skip.pass_name for skip in refusals(checked)} == {"add-as-mul"}
    assert not [c for c in checked.log.changes if c.pass_name == "add-as-mul"]
    assert checked.module.code == lowered(reference).module.code


def test_the_next_rule_of_the_pass_and_the_passes_after_see_the_pattern_as_it_was():
    """A pass of two rules on quantized.add: the first (add as mul, wrong) is refuted at
    every add, so the second (the add's own overload, right) rewrites them; and a wrong
    pass run before the default pipeline (the reference's float `+` as `torch.sub`) leaves
    the reference pattern for the default passes, which lower it as without the pass."""
    reference = build("ElementwiseMix-static_fbgemm")
    wrong = Rule("as-mul", *_retarget_rule(torch.ops.quantized.add, torch.ops.quantized.mul))
    right = Rule("as-add", *_retarget_rule(torch.ops.quantized.add, torch.ops.quantized.add.default))
    checked = validated(reference, pipeline=Pipeline("two-rules", (default_pipeline(), RulePass("retarget-add", (wrong, right)))))
    rules = [(entry.rule, type(entry).__name__) for entry in checked.log.entries if entry.pass_name == "retarget-add"]
    assert rules == [("as-mul", "Skip"), ("as-add", "Change")] * (len(rules) // 2) and rules
    # before the default pipeline: the float add of the reference, turned into a sub
    early = retarget_pass("add-as-sub", operator.add, torch.sub)
    checked = validated(reference, pipeline=Pipeline("wrong-first", (early, default_pipeline())))
    assert [skip.node for skip in refusals(checked)] == ["add", "add_1"]
    assert not [c for c in checked.log.changes if c.pass_name == "add-as-sub"]
    assert checked.module.code == lowered(reference).module.code


def _retarget_rule(old, new):
    def match(program, node):
        return Match(node.name) if node.op == "call_function" and node.target is old else None

    return match, lambda program, found: [SetTarget(found.anchor, "call_function", new)]


@attrs.frozen
class OwnWayPass:
    """A user's pass that is not a RulePass: it builds its result itself, here by
    retargeting every quantized.add to quantized.mul (wrong) and every quantized.mul
    to itself (harmless)."""

    name: str = "own-way"

    def run(self, program):
        changes, current = [], program
        for node in list(program.nodes()):
            if node.op == "call_function" and node.target in (torch.ops.quantized.add, torch.ops.quantized.mul):
                change = fqlower.Change(0, self.name, "swap-add-mul", node.name, fqlower.FrozenDict(), (SetTarget(node.name, "call_function", torch.ops.quantized.mul),))
                current, change = record_change(current, change)
                changes.append(change)
        return PassResult(current, tuple(changes))


def test_a_pass_that_is_not_a_rule_pass_is_settled_after_it_runs():
    reference = build("ElementwiseMix-static_fbgemm")
    checked = validated(reference, pipeline=Pipeline("own-way", (default_pipeline(), OwnWayPass())))
    refused = refusals(checked)
    kept = [c for c in checked.log.changes if c.pass_name == "own-way"]
    assert refused and all(checked.program.node(skip.node).target is torch.ops.quantized.add for skip in refused)
    assert all(v.status == VALIDATED for v in checked.validation.verdicts if v.change in kept)
    inputs = reference.example_inputs
    assert values_equal(run(checked.module, inputs), run(lowered(reference, pipeline=Pipeline("p", (default_pipeline(), OwnWayPass()))).module, inputs)) is False
    default = run(lowered(reference).module, inputs)
    assert values_equal(run(checked.module, inputs), default)


def test_validate_needs_example_inputs():
    reference = build("SingleLayerLinear-static_fbgemm")
    with pytest.raises(UnsupportedInput, match="example_inputs"):
        lowered(reference, validate=True)
    with pytest.raises(UnsupportedInput, match="example_inputs"):
        fqlower.convert_fx(torch.fx.symbolic_trace(torch.nn.Linear(2, 2)), validate=True)


def test_the_drop_in_and_convert_fx_take_the_flag_and_warn(caplog):
    reference = build(DECONV)
    with caplog.at_level(logging.WARNING, logger="fqlower"):
        module = fqlower.lower_to_native_backend(
            reference.module, reference.qconfig_map, reference.node_name_to_scope, validate=True, example_inputs=reference.example_inputs
        )
    assert module.code == validated(reference).module.code
    assert any("refuted by translation validation" in record.getMessage() for record in caplog.records)


def test_convert_fx_with_validate_leaves_the_wrong_kernel_float(caplog):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 3, stride=2), torch.nn.ReLU()).eval()
    inputs = (torch.randn(8, 3, 6, 6),)
    prepared = prepare_fx(model, get_default_qconfig_mapping("fbgemm"), inputs)
    prepared(*inputs)
    with caplog.at_level(logging.WARNING, logger="fqlower"):
        plain = fqlower.convert_fx(prepared)
        checked = fqlower.convert_fx(prepared, validate=True, example_inputs=inputs)
    expected = run(model, inputs)
    assert float((run(plain, inputs) - expected).abs().max()) > 0.5
    assert float((run(checked, inputs) - expected).abs().max()) < 0.1
    assert any("refuted by translation validation" in record.getMessage() for record in caplog.records)


def test_a_refutation_prints_as_a_reproducer_that_runs_with_torch_alone(tmp_path):
    reference = build(DECONV)
    (verdict,) = validated(reference).validation.refuted
    script = write_reproducer(verdict, tmp_path / "deconv.pt")
    assert "ConvTranspose2d" in script or "module_1" in script
    (tmp_path / "repro.py").write_text(script)
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "repro.py")], capture_output=True, text=True, check=True, cwd=tmp_path)
    error = float(done.stdout.strip().split()[-1])
    assert error == pytest.approx(verdict.error, rel=1e-3) and error > verdict.bound


def test_only_a_refuted_verdict_has_a_reproducer(tmp_path):
    reference = build("SingleLayerLinear-static_fbgemm")
    verdict = validated(reference).validation.verdicts[0]
    with pytest.raises(fqlower.FqlowerError, match="only a refuted change"):
        write_reproducer(verdict, tmp_path / "x.pt")


def test_values_are_described_by_kind():
    codes = torch.tensor([[0, 3], [255, 7]], dtype=torch.uint8)
    quantized = torch._make_per_tensor_quantized_tensor(codes, 0.5, 3)
    assert describe_value(quantized) == "quint8 [2, 2] scale 0.5 zero_point 3 codes 0..255"
    assert describe_value(torch.tensor([-1.5, 2.0])) == "float32 [2] in [-1.5, 2]"
    assert describe_value((1, 2)) == "(1, 2)"
    assert describe_value("x" * 100).endswith("...") and len(describe_value("x" * 100)) == 60


def test_a_conv_packed_with_stride_0_is_refuted_not_run():
    """Regression (validation law 2): qnnpack's conv prepack takes a stride of 0, and its
    kernel then divides by it: the process dies (SIGFPE). Validation refuses to run it."""
    reference = build("FunctionalConvLinear-static_fbgemm")

    def match(program, node):
        spec = program.constants.get(node.target) if node.op == "get_attr" else None
        return Match(node.name) if isinstance(spec, fqlower.Build) and spec.factory.endswith("conv2d_prepack") else None

    def rewrite(program, found):
        target = program.node(found.anchor).target
        spec = program.constants[target]
        weight, bias, stride, *rest = spec.args
        return [fqlower.SetConstant(target, fqlower.Build(spec.factory, (weight, bias, (0, 0), *rest)))]

    pipeline = Pipeline("stride-0", (default_pipeline(), rule_pass("stride-0", match, rewrite)))
    with quantized_engine("qnnpack"):
        checked = validated(reference, pipeline=pipeline)
    (skip,) = refusals(checked)
    assert skip.pass_name == "stride-0" and "stride [0, 0]" in skip.reason and "cannot be built" in skip.reason


def shifted_adds(steps: float, tolerance: float):
    """A user's approximating rule: every tensor-tensor quantized.add's result plus
    `steps` output steps (a scalar add after it)."""

    def match(program, node):
        is_add = node.op == "call_function" and node.target is torch.ops.quantized.add and isinstance(node.args[1], fqlower.Ref)
        return Match(node.name) if is_add and not node.name.endswith("_shifted") else None

    def rewrite(program, found):
        node = program.node(found.anchor)
        scale = float(program.constants[program.node(node.args[2].name).target])
        shifted = fqlower.Node(f"{node.name}_shifted", "call_function", torch.ops.quantized.add, (fqlower.Ref(node.name), steps * scale), fqlower.FrozenDict())
        return [fqlower.AddNode(shifted, after=node.name), fqlower.ReplaceUses(node.name, shifted.name)]

    return rule_pass("shifted-add", match, rewrite, tolerance=tolerance)


@pytest.mark.parametrize(("tolerance", "status"), [(1.0, REFUTED), (2.0, VALIDATED)])
def test_a_rule_states_its_tolerance_in_output_steps(tolerance, status):
    """Three steps off: more than one step of each side (the bound is two steps when
    both quantize), less than twice that."""
    reference = build("ElementwiseMix-static_fbgemm")
    pipeline = Pipeline("shifted", (default_pipeline(), shifted_adds(3.0, tolerance)))
    checked = validated(reference, pipeline=pipeline)
    verdicts = [verdict for verdict in checked.validation.verdicts if verdict.change.pass_name == "shifted-add"]
    assert verdicts and {verdict.status for verdict in verdicts} == {status}
    assert validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs, pipeline=pipeline).counts() == checked.validation.counts()
