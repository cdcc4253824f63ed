"""`fqlower.bisect`: delta debugging over a change log finds the changes that break
a lowered model's numerics.

The big case: a reference model of 50 Linear+ReLU / add / mul branches (fbgemm),
whose lowering has about 400 changes (static modules, binary ops, a cat, dead-code
removals). A bad rewrite is planted in it, by editing one change of the log or by
a pass in the pipeline, and bisect must return exactly the planted changes with
far fewer tests than changes.
"""

from __future__ import annotations

import math
import operator

import attrs
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig_mapping

import fqlower
from fqlower import ChangeLog, Match, SetConstant, SetModule, SetTarget, rule_pass
from fqlower.bisect import (
    FAIL,
    PASS,
    UNRESOLVED,
    SubsetTester,
    bisect,
    ddmin,
    max_difference,
)
from fqlower.reference import reference_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

BRANCHES = 50
TOLERANCE = 1.0  # the good lowering is off by ~0.1 (quantization); the planted bugs by several units


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny quantized kernels on a loaded 2-core machine: threads only contend
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Branches(nn.Module):
    """x ─▶ [relu(fc_i(x)) + x] * 0.5 for each i ─▶ cat ─▶ * 2.0; fc_i's weights grow with i."""

    def __init__(self, branches: int = BRANCHES, features: int = 8):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(features, features) for _ in range(branches))
        with torch.no_grad():
            for index, fc in enumerate(self.fcs):
                fc.weight.mul_(1 + index / 10)

    def forward(self, x):
        return torch.cat([(F.relu(fc(x)) + x) * 0.5 for fc in self.fcs], dim=1) * 2.0


@attrs.frozen
class Stack:
    reference: object
    inputs: tuple
    lowering: object

    def bisect(self, log, **kwargs):
        reference = self.reference
        kwargs.setdefault("tolerance", TOLERANCE)
        return bisect(
            reference.module, log, self.inputs,
            qconfig_map=reference.qconfig_map, node_name_to_scope=reference.node_name_to_scope, **kwargs,
        )

    def with_changes_replaced(self, replacements):
        """The log with some changes (by object) replaced: hashes are left stale on purpose."""
        entries = tuple(replacements.get(id(entry), entry) for entry in self.lowering.log.entries)
        return ChangeLog(self.lowering.log.header, entries)


def make_stack(branches):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Branches(branches)
        inputs = (torch.randn(16, 8),)
        reference = reference_model(model, inputs, get_default_qconfig_mapping("fbgemm"))
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    return Stack(reference, inputs, lowering)


@pytest.fixture(scope="module")
def stack():
    return make_stack(BRANCHES)


@pytest.fixture(scope="module")
def small_stack():
    # for the slower case of two culprits: ddmin needs O(culprits * log(changes)) tests, with
    # a larger constant when dead-code removals lack the rewrites they depend on
    return make_stack(12)


def test_the_stack_has_hundreds_of_changes_and_lowers_within_tolerance(stack):
    changes = stack.lowering.log.changes
    assert len(changes) > 350
    passes = {change.pass_name for change in changes}
    assert {"lower-static-modules", "lower-binary-ops", "lower-special-patterns", "eliminate-dead-code"} <= passes
    with torch.no_grad():
        difference, _ = max_difference(stack.lowering.module(*stack.inputs), stack.reference.module(*stack.inputs))
    assert difference < TOLERANCE / 4


def test_a_log_without_bad_change_has_no_culprit(stack):
    result = stack.bisect(stack.lowering.log)
    assert result.culprits == () and result.indices == ()
    assert result.tests_run == 2  # no change, all changes
    assert result.full.status == PASS and result.empty.status == PASS and result.empty.difference == 0.0
    assert "stay within the tolerance" in result.message and "no culprit" in result.format()


def test_bisect_finds_a_planted_bad_rewrite_among_hundreds_of_good_ones(stack):
    # one static-module change builds its quantized module with another module's (much smaller) output scale
    changes = stack.lowering.log.changes
    static = [change for change in changes if change.pass_name == "lower-static-modules"]
    module = stack.reference.module

    def output_scale(change):
        return float(getattr(module, change.edits[0].module.args[1].path))

    victim, donor = max(static, key=output_scale), min(static, key=output_scale)
    assert output_scale(victim) > 4 * output_scale(donor)
    spec = victim.edits[0].module
    bad_spec = attrs.evolve(spec, args=(spec.args[0], donor.edits[0].module.args[1], *spec.args[2:]))
    bad = attrs.evolve(victim, edits=(SetModule(victim.edits[0].path, bad_spec), *victim.edits[1:]))
    log = stack.with_changes_replaced({id(victim): bad})

    calls = []
    result = stack.bisect(log, progress=lambda tests, size: calls.append((tests, size)))
    assert result.culprits == (bad,)
    assert result.indices == (changes.index(victim),)
    assert result.difference > TOLERANCE and result.full.status == FAIL
    assert [tests for tests, _ in calls] == list(range(1, result.tests_run + 1))
    sizes = [size for _, size in calls]
    assert sizes[0] == len(changes) and sizes == sorted(sizes, reverse=True) and sizes[-1] <= 2
    print(f"\n{result.tests_run} tests for 1 culprit among {len(changes)} changes")
    assert result.tests_run <= 40 < len(changes) / 8
    assert "1 of" in result.format() and SetModule.__name__ in result.format()


SUBTRACTED = "add_17"


def match_one_add(program, node):
    return Match(node.name) if node.name == SUBTRACTED and node.target is operator.add else None


def rewrite_add_to_sub(program, found):
    return [SetTarget(found.anchor, "call_function", operator.sub)]


PLANT_SUB = rule_pass("plant-sub", match_one_add, rewrite_add_to_sub)


def test_bisect_finds_a_bad_pass_among_the_default_ones(stack):
    # a pass before the binary-op lowering turns one add into a sub; its log replays as any other
    default = fqlower.default_pipeline().leaves()
    at = [pass_.name for pass_ in default].index("lower-binary-ops")
    pipeline = fqlower.Pipeline("with-a-bad-pass", (*default[:at], PLANT_SUB, *default[at:]))
    reference = stack.reference
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope, pipeline=pipeline)
    (planted,) = [change for change in lowering.log.changes if change.pass_name == "plant-sub"]
    result = stack.bisect(lowering.log)
    assert result.culprits == (planted,)
    print(f"\n{result.tests_run} tests for the bad pass's change among {len(lowering.log.changes)} changes")
    assert result.tests_run <= 40


def test_two_bad_changes_that_only_break_together_are_both_found(small_stack):
    # each scales the output by 1.5 (a 50% error stays within the tolerance set below);
    # together by 2.25 in the largest branch (125%: beyond it)
    changes = small_stack.lowering.log.changes
    module = small_stack.reference.module

    def scalar_mul(change, scalar):
        return change.pass_name == "lower-binary-ops" and change.edits[1].args[1:] == (scalar,)

    final = next(change for change in changes if scalar_mul(change, 2.0))
    branch_muls = [change for change in changes if scalar_mul(change, 0.5)]
    branches = len([change for change in changes if change.pass_name == "lower-static-modules"])
    assert len(branch_muls) == branches == 12 and len(changes) > 90
    with torch.no_grad():
        out = module(*small_stack.inputs)
    width = out.shape[1] // branches
    largest = max(range(branches), key=lambda i: float(out[:, i * width : (i + 1) * width].abs().max()))
    branch = branch_muls[largest]

    def scaled(change, factor):
        set_args = change.edits[1]
        receiver, scalar = set_args.args
        return attrs.evolve(change, edits=(change.edits[0], attrs.evolve(set_args, args=(receiver, scalar * factor)), *change.edits[2:]))

    bad_branch, bad_final = scaled(branch, 1.5), scaled(final, 1.5)
    log = small_stack.with_changes_replaced({id(branch): bad_branch, id(final): bad_final})
    peak = float(out.abs().max())
    tolerance = 0.85 * peak
    for alone in ({id(branch): bad_branch}, {id(final): bad_final}):  # the premise: each alone passes
        assert small_stack.bisect(small_stack.with_changes_replaced(alone), tolerance=tolerance).full.status == PASS
    result = small_stack.bisect(log, tolerance=tolerance)
    assert result.culprits == (bad_branch, bad_final)
    print(f"\n{result.tests_run} tests for 2 interacting culprits among {len(changes)} changes")
    assert result.tests_run <= 80


@pytest.mark.parametrize("tolerance", [-1.0, float("nan")])
def test_a_tolerance_that_is_negative_or_no_number_is_refused(stack, tolerance):
    with pytest.raises(fqlower.UnsupportedInput, match="tolerance"):
        stack.bisect(stack.lowering.log, tolerance=tolerance)


def test_the_reference_itself_off_is_reported(stack):
    with torch.no_grad():
        wrong = stack.reference.module(*stack.inputs) + 2 * TOLERANCE
    result = stack.bisect(stack.lowering.log, reference_outputs=wrong)
    assert result.culprits == () and result.tests_run == 1
    assert result.message.startswith("the reference itself is off")


# --- small cases -----------------------------------------------------------------------------


class FunctionalLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 6))
        self.bias = nn.Parameter(torch.randn(4) + 1)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def test_a_culprit_that_needs_earlier_changes_comes_with_them():
    # a weight fold that drops the bias applies only after the functional lowering added the prepack
    # and dead-code elimination removed the weight's dequantize: subsets without them are unresolved
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(5, 6)
        reference = reference_model(FunctionalLinear(), (x,), get_default_qconfig_mapping("fbgemm"))
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    changes = lowering.log.changes
    fold = next(change for change in changes if change.pass_name == "fold-weights")
    spec = fold.edits[0].value
    bad = attrs.evolve(fold, edits=(SetConstant(fold.edits[0].attr, attrs.evolve(spec, args=(spec.args[0], None))), *fold.edits[1:]))
    log = ChangeLog(lowering.log.header, tuple(bad if entry is fold else entry for entry in lowering.log.entries))
    result = bisect(reference.module, log.dumps(), (x,), tolerance=0.2, qconfig_map=reference.qconfig_map, node_name_to_scope=reference.node_name_to_scope)
    functional = next(change for change in changes if change.pass_name == "lower-static-functionals")
    weight_quantize = next(node for node in reference.module.graph.nodes if node.name == functional.bindings["weight_quantize"])
    (weight_dequantize,) = weight_quantize.users
    (removal,) = [change for change in changes if change.pass_name == "eliminate-dead-code" and change.anchor == weight_dequantize.name]
    assert result.culprits == (functional, removal, bad)
    assert result.indices == tuple(changes.index(change) for change in (functional, removal, fold))


class FakeTester:
    """Fails when the subset holds all of `needed`; a change of `requires` without the
    change it requires makes the subset unresolved (not failing)."""

    def __init__(self, needed, requires=None):
        self.needed, self.requires, self.runs = set(needed), dict(requires or {}), set()

    def fails(self, subset, size):
        key = frozenset(subset)
        self.runs.add(key)
        unresolved = any(index in key and required not in key for index, required in self.requires.items())
        return self.needed <= key and not unresolved


@pytest.mark.parametrize(
    ("needed", "bound"), [({0}, 12), ({399}, 20), ({123}, 20), ({5, 300}, 70), ({10, 11, 12}, 30), ({0, 199, 200, 399}, 150)]
)
def test_ddmin_isolates_the_failure_inducing_changes(needed, bound):
    tester = FakeTester(needed)
    assert ddmin(tester, list(range(400))) == sorted(needed)
    assert len(tester.runs) <= bound


def test_ddmin_treats_unresolved_as_passing():
    # 160 needs 40 (as a dead-code removal needs the rewrite that made its node dead);
    # 150 needs 3: the minimal failing set holds both
    tester = FakeTester({150, 160}, requires={160: 40, 150: 3})
    assert ddmin(tester, list(range(200))) == [3, 40, 150, 160]


def test_max_difference():
    a = torch.tensor([1.0, 2.0, float("nan")])
    assert max_difference((a, {"b": a}), (a, {"b": a})) == (0.0, "")
    assert max_difference(a + 0.5, a)[0] == 0.5
    assert max_difference(torch.tensor([0.0, 1.0]), torch.tensor([0.0, float("nan")]))[0] == math.inf
    assert max_difference((a,), a)[0] == math.inf  # another structure
    assert max_difference(a[:2], a)[0] == math.inf  # another shape
    quantized = torch.quantize_per_tensor(torch.tensor([0.5, 1.0]), 0.5, 0, torch.quint8)
    assert max_difference(quantized, torch.tensor([0.5, 1.25]))[0] == 0.25


def test_outcomes_are_memoized_and_unresolved_subsets_are_recorded(stack):
    reference = stack.reference
    program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    changes = stack.lowering.log.changes
    with torch.no_grad():
        expected = reference.module(*stack.inputs)
    tester = SubsetTester(program, changes, stack.inputs, expected, TOLERANCE, None)
    removal = next(index for index, change in enumerate(changes) if change.pass_name == "eliminate-dead-code")
    outcome = tester.outcome([removal], 1)  # a dead-code removal of a node the reference still uses
    assert outcome.status == UNRESOLVED and "does not apply" in outcome.detail
    assert tester.outcome([removal], 1) is outcome and tester.tests_run == 1
    assert tester.outcome([0], 1).status == PASS and tester.tests_run == 2
