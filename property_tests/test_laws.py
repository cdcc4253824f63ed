"""The laws of fqlower's lowering, checked on generated models (torch is the oracle).

Each test states one law; `examples()` (property_tests/models.py) draws a random float
model from every pattern family, a quantization recipe, calibrates it and captures the
reference model exactly as torch's convert_fx hands it to its lowering. A failing
example prints as a Python program that rebuilds it.

Two bounds, each stated where it is checked:

- laws 1 and 2: a lowered model is within quantization error when each float output is
  within `QUANTIZATION_BOUND` = 10 % of the largest reference output + 0.05 of the
  reference model's (`assert_within_quantization_error`);
- the prefix law: every pipeline prefix is no further from the reference model's outputs
  than `max(3 x the finished lowering's distance, 5 % of the largest reference output)
  + 1e-3` (`tolerance`).

Laws that may return early count where their examples end up (property_tests/reach.py)
and fail when too few reach their checks.
"""

from __future__ import annotations

import subprocess
import sys
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from breaking import Break, BrokenExample, apply_break, breaking_examples, explicit_form
from gen_program import Block, ModelSpec, Value
from gen_recipes import Recipe
from reach import run_law
from models import build_example, examples, random_model_spec, random_recipe, runnable, GeneratedModel

import fqlower
from fqlower import FqlowerError, ReplayMismatch
from fqlower.compare import ModelSnapshot, values_equal, graph_differences, lowering_differences, module_type_differences, state_dict_differences
from fqlower.departures import departed_nodes, departures, differences_outside, quantized_calls
from fqlower.reference import quantized_engine, torch_lowering

# passes that touch disjoint patterns: each pair commutes (law 8). Not in the set:
# special patterns and tensor metadata both rewrite size()/shape reads of a dequantize,
# and dead-code elimination and weight folding see what the others leave.
COMMUTING = (
    "lower-static-modules",
    "lower-two-input-modules",
    "lower-dynamic-modules",
    "lower-weight-only-modules",
    "lower-static-functionals",
    "lower-dynamic-functionals",
    "lower-binary-ops",
)


def lower(example):
    reference = example.reference
    return fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)


def outputs(module, inputs):
    with torch.no_grad():
        result = module(*inputs)
    return [t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def distance(a, b):
    return max(((x - y).abs().max().item() for x, y in zip(a, b) if x.numel()), default=0.0)


def tolerance(reference_outputs, lowered_outputs):
    largest = max((t.abs().max().item() for t in reference_outputs if t.numel()), default=0.0)
    return max(3 * distance(reference_outputs, lowered_outputs), 0.05 * largest) + 1e-3


# laws 1 and 2 are the differential core: they run more examples than the profile's 40
# (hypothesis's first examples are the smallest models)
LAW_EXAMPLES = 200


def test_oracle_where_torch_lowers_fqlower_equals_it():
    """Law 1. Where torch's lowering returns, fqlower's result equals it: graph up to node
    names, module types, state_dict, bit-identical outputs. A difference is allowed only
    at departures (change-log entries with a `torch-*` reason code, property_tests/departures.py):
    outside the departed nodes' regions the graph, module types and state_dict must still
    equal torch's, and fqlower's outputs must stay within QUANTIZATION_BOUND of the
    reference model's. At least half of the examples reach these checks."""
    run_law("law 1 (the oracle)", examples(), check_oracle, share=0.5, at_least=LAW_EXAMPLES)


def check_oracle(example):
    try:
        expected = torch_lowering(example.reference)
    except Exception:
        return "torch's lowering raises: law 2's business", False
    lowering = lower(example)
    ours = lowering.module
    if runnable(example) and not runs(expected, example.inputs_for_checking):
        # torch's lowered model fails (e.g. a module left float handed a quantized tensor):
        # there is nothing to equal, and fqlower's must compute what the reference does
        assert departures(lowering), "torch's lowered model fails and fqlower records no departure"
        assert_departures_only(expected, lowering)
        assert_within_quantization_error(example, ours)
        return "torch's lowered model fails; fqlower departs and computes the reference", True
    if runnable(example):
        differences = lowering_differences(expected, ours, example.inputs_for_checking)
    else:
        differences = graph_differences(expected, ours) + module_type_differences(expected, ours) + state_dict_differences(expected, ours)
    if not differences:
        return "equal to torch" + ("" if runnable(example) else " (not run: onednn kernels)"), True
    # only where fqlower departs from torch on purpose, and then it still computes what the
    # reference model does
    assert departures(lowering), differences
    assert_departures_only(expected, lowering)
    if runnable(example):
        assert_within_quantization_error(example, ours)
    return "differs from torch at departures only", True


def assert_departures_only(theirs, lowering):
    outside = differences_outside(theirs, lowering.module, departed_nodes(lowering))
    assert not outside, f"differences outside the departures {departures(lowering)}: {outside}"


def runs(module, inputs):
    try:
        with torch.no_grad():
            module(*inputs)
    except Exception:
        return False
    return True


# |ours - reference| <= QUANTIZATION_BOUND[0] * max|reference| + QUANTIZATION_BOUND[1]
QUANTIZATION_BOUND = (0.1, 0.05)


def assert_within_quantization_error(example, ours):
    """fqlower's float outputs are as many as the reference model's, and each is within
    QUANTIZATION_BOUND of it (relative to the largest reference output)."""
    reference_outputs = outputs(example.reference.module, example.inputs_for_checking)
    ours_outputs = outputs(ours, example.inputs_for_checking)
    largest = max((t.abs().max().item() for t in reference_outputs if t.numel()), default=0.0)
    assert len(ours_outputs) == len(reference_outputs), "a float output of the reference model is not float"
    relative, absolute = QUANTIZATION_BOUND
    assert distance(reference_outputs, ours_outputs) <= relative * largest + absolute


def test_beyond_the_oracle_fqlower_lowers_within_quantization_error_or_names_the_node():
    """Law 2. Where torch's lowering raises (reference models broken as property_tests/breaking.py
    draws them: same computation, a form torch cannot read), fqlower lowers and its
    outputs stay within QUANTIZATION_BOUND of the reference model's, or it raises an
    FqlowerError that names the node. Where it lowers fewer native calls than it does on
    the unbroken model, its log records a departure saying why. At least half of the
    examples reach the output comparison."""
    run_law(
        "law 2 (beyond the oracle)",
        breaking_examples(),
        check_beyond_the_oracle,
        share=0.5,
        at_least=LAW_EXAMPLES,
        explicit=[fbgemm_conv_transpose_with_ints()],
    )


def fbgemm_conv_transpose_with_ints():
    """Regression, from a random run of law 2: `F.conv_transpose2d(x, w, b, 1, 0, 0, 1, 1)`
    with a (3, 2, 1, 1) weight, fbgemm's default qconfig mapping, 256 calibration samples.
    torch cannot pack the ints; fqlower expands them and lowers, and fbgemm's
    conv_transpose2d kernel is then about 2 off a 3.4-range output. torch's lowering of the
    explicit tuple form computes the same values, so the law must find that oracle rather
    than call fqlower wrong (property_tests/breaking.py, `explicit_form`)."""
    block = Block(
        index=0,
        kind="functional_conv",
        variant="F.conv_transpose2d positional",
        inputs=("x",),
        output="v0",
        shape=(2, 4, 4),
        init=(("weight", "nn.Parameter(torch.randn(3, 2, 1, 1) * 0.3)"), ("bias", "nn.Parameter(torch.randn(2) * 0.1)")),
        body=("v0 = F.conv_transpose2d(x, $weight, $bias, 1, 0, 0, 1, 1)",),
    )
    spec = ModelSpec(inputs=(Value("x", (3, 4, 4)),), blocks=(block,), outputs=("v0",), seed=0)
    example = build_example(GeneratedModel.build(spec), Recipe("static_int8", "fbgemm"), data_seed=0)
    return BrokenExample(example, Break("functional by keyword", "conv_transpose2d"), apply_break(example.reference, Break("functional by keyword", "conv_transpose2d")))


def check_beyond_the_oracle(broken):
    try:
        torch_lowering(broken.reference)
        return f"torch lowers despite the break ({broken.site.kind}): law 1's business", False
    except Exception:
        pass
    reference = broken.reference
    with quantized_engine(checking_engine(broken)):
        try:
            lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
        except FqlowerError as error:
            assert error.node is not None, error
            return f"fqlower raises {type(error).__name__} naming the node", False
        unbroken = lower(broken.example)
        if quantized_calls(lowering.module) < quantized_calls(unbroken.module):
            assert departures(lowering), "fqlower lowers less of the broken model and records no departure"
        if not runnable(broken.example):
            return f"{broken.site.kind}: fqlower lowers (not run: onednn kernels)", False
        oracle = torch_computes_the_same(broken, lowering.module)
        if oracle:
            return f"{broken.site.kind}: fqlower computes what torch's lowering of the {oracle} does", True
        assert_within_quantization_error(broken, lowering.module)
    return f"{broken.site.kind}: fqlower lowers within quantization error", True


def torch_computes_the_same(broken, ours):
    """The break keeps what the model computes, so torch's lowering of the unbroken model,
    or where torch cannot read that either, of its explicit form (functional convs with
    tuple arguments), is an oracle for the outputs: bit-identical outputs do as well as
    torch can (its kernels may be off the reference: quantized PReLU, and fbgemm's
    conv_transpose2d, in torch 2.13). Returns which model agreed, or None."""
    unbroken = broken.example.reference
    for name, reference in (("unbroken model", lambda: unbroken), ("unbroken model's explicit form", lambda: explicit_form(unbroken))):
        try:
            theirs = torch_lowering(reference())
        except Exception:
            continue  # torch cannot lower this form: try the next
        try:
            with torch.no_grad():
                same = values_equal(theirs(*broken.inputs_for_checking), ours(*broken.inputs_for_checking))
        except Exception:  # torch's lowered model crashes when run (docs/torch_failures.md)
            return None
        return name if same else None
    return None


def checking_engine(example):
    """The engine to compare against the reference model on. qnnpack's and onednn's recipes
    calibrate activations to the full 8 bits, on which the x86 kernels (and, for linear,
    onednn's here) can overflow; torch's own lowering computes the same values there
    (found by the 1,000-example run and by a random `make test` run)."""
    return "qnnpack" if example.recipe.backend in ("qnnpack", "onednn") else torch.backends.quantized.engine


@given(example=examples())
def test_lowering_never_mutates_the_callers_model(example):
    reference = example.reference
    snapshot = ModelSnapshot.of(reference.module)
    maps = (dict(reference.qconfig_map), dict(reference.node_name_to_scope))
    lower(example)
    assert snapshot.differences(reference.module) == []
    assert (dict(reference.qconfig_map), dict(reference.node_name_to_scope)) == maps


@given(example=examples())
def test_lowering_is_deterministic(example):
    first, second = lower(example), lower(example)
    assert first.log.dumps() == second.log.dumps()
    assert fqlower.fingerprint(first.program) == fqlower.fingerprint(second.program)


def test_lowering_is_deterministic_across_processes(tmp_path):
    """Five generated examples rebuilt from their printed programs in a fresh process
    give byte-identical logs."""
    rng = random.Random(20261125)
    scripts, logs = [], []
    while len(scripts) < 5:
        model = GeneratedModel.build(random_model_spec(rng))
        example = build_example(model, random_recipe(rng, model), rng.randrange(2**16))
        scripts.append(repr(example))
        logs.append(lower(example).log.dumps())
    program = "\n".join(
        [
            "import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1]); import fqlower",
            "scripts = " + repr(scripts),
            "for script in scripts:",
            "    namespace = {}",
            "    exec(script, namespace)",
            "    reference = namespace['reference']",
            "    log = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope).log",
            "    sys.stdout.write(log.dumps() + '\\x00')",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(Path(__file__).parent)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\x00")[:-1] == logs


def test_replay_reproduces_the_lowering_and_refuses_other_models():
    """Replaying a lowering's log on its model reproduces the output fingerprint; on another
    model (another input fingerprint) it raises ReplayMismatch. At least half of the pairs
    are of different models, so that the refusal is checked."""
    run_law("replay", st.tuples(examples(), examples()), check_replay, share=0.5)


def check_replay(pair):
    example, other = pair
    reference = example.reference
    lowering = lower(example)
    replayed = fqlower.replay(reference.module, lowering.log.dumps(), reference.qconfig_map, reference.node_name_to_scope)
    assert fqlower.fingerprint(replayed.program) == lowering.log.header.output
    foreign = fqlower.from_fx(other.reference.module, other.reference.qconfig_map, other.reference.node_name_to_scope)
    if fqlower.fingerprint(foreign) == lowering.log.header.input:
        return "replays; the other model is the same model", False
    with pytest.raises(ReplayMismatch):
        fqlower.replay(other.reference.module, lowering.log, other.reference.qconfig_map, other.reference.node_name_to_scope)
    return "replays, and refuses the other model", True


@given(example=examples())
def test_lowering_a_lowered_model_changes_nothing(example):
    reference = example.reference
    lowered = lower(example)
    again = fqlower.lower(lowered.module, reference.qconfig_map, reference.node_name_to_scope)
    assert again.log.changes == ()


def test_every_prefix_of_the_pipeline_runs_within_quantization_error():
    """Every prefix of the default pipeline emits a module; where the example's kernels run
    here (not onednn's), each prefix's outputs are within `tolerance` of the reference
    model's. At least half of the examples are run."""
    run_law("every prefix", examples(), check_prefixes, share=0.5)


def check_prefixes(example):
    reference = example.reference
    snapshots = fqlower.Snapshots()
    program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    fqlower.default_pipeline().run(program, (snapshots,))
    if not runnable(example):
        for _, prefix in snapshots.programs:
            fqlower.to_fx(prefix)  # emits
        return "every prefix emits (not run: onednn kernels)", False
    inputs = example.inputs_for_checking
    reference_outputs = outputs(reference.module, inputs)
    final = outputs(fqlower.to_fx(snapshots.programs[-1][1]), inputs)
    bound = tolerance(reference_outputs, final)
    for name, prefix in snapshots.programs:
        assert distance(reference_outputs, outputs(fqlower.to_fx(prefix), inputs)) <= bound, name
    return "every prefix runs within the tolerance", True


@given(example=examples(), pair=st.sampled_from([(a, b) for a in COMMUTING for b in COMMUTING if a < b]))
def test_passes_on_disjoint_patterns_commute(example, pair):
    reference = example.reference
    program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    pipeline = fqlower.default_pipeline()
    first, second = (pipeline.only(name).run(program).program for name in pair)
    one_way = pipeline.only(pair[1]).run(first).program
    other_way = pipeline.only(pair[0]).run(second).program
    assert fqlower.fingerprint(one_way) == fqlower.fingerprint(other_way)


@given(example=examples())
def test_a_pipeline_equals_its_passes_run_one_by_one(example):
    reference = example.reference
    program = fqlower.from_fx(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    pipeline = fqlower.default_pipeline()
    whole = pipeline.run(program)
    step = program
    entries = []
    for pass_ in pipeline.leaves():
        result = pass_.run(step)
        step, entries = result.program, entries + list(result.entries)
    assert fqlower.fingerprint(whole.program) == fqlower.fingerprint(step)
    assert [(e.pass_name, type(e).__name__) for e in whole.entries] == [(e.pass_name, type(e).__name__) for e in entries]


