"""The laws of translation validation (fqlower.validation), on generated models.

1. Nothing a correct kernel computes is refuted: on every generated model, each change
   of the default lowering is validated, or unchecked with a reason, or refuted where
   torch's lowering is wrong too: the native kernel is one this machine's engine
   computes wrongly (`KNOWN_WRONG`, each shown directly by tests/test_validate.py and
   tests/test_lower_validated.py), or it fails to run and torch's lowered model does too.
2. Deliberately wrong rules (property_tests/wrong_rules.py: add as mul, an output scale
   quartered, a relu dropped where it clamps, a conv's stride and padding swapped, a
   bias dropped), appended to the default pipeline as a user would, are refuted at
   every rewrite they make, and nothing else is (but the known-wrong kernels).
3. `lower(..., validate=True)` is within quantization error of the reference model on
   every generated model, the ones whose kernels torch lowers to wrongly included; where
   nothing is refuted it is the lowering made without the flag, log for log.

Models run on the engine law 1 of test_laws.py checks them on (`checking_engine`).
"""

from __future__ import annotations

from collections import Counter

import torch
import pytest
from models import examples, runnable
from reach import SUMMARIES, run_law
from test_laws import assert_within_quantization_error, checking_engine, fbgemm_conv_transpose_with_ints
from wrong_rules import WRONG_RULES, with_wrong_rule

import fqlower
from fqlower.reference import quantized_engine, torch_lowering
from fqlower.validation import REFUTED, Verdict, validate
from fqlower.validation.checker import produced_ops

# engine -> the native ops it computes wrongly in torch 2.13 (names as `produced_ops` gives them)
KNOWN_WRONG = {"x86": ("ConvTranspose", "conv_transpose")}

# the block kinds each wrong rule can fire on (besides what the generator adds around them)
RULE_KINDS = {
    "add-as-mul": ("binary", "conv", "relu"),
    "scale-quartered": ("conv", "linear", "binary", "functional_linear", "functional_conv"),
    "relu-dropped": ("relu", "pool", "binary", "cat"),
    "stride-padding-swapped": ("conv", "functional_conv"),
    "bias-dropped": ("conv", "linear", "functional_conv", "functional_linear"),
}


def known_wrong(verdict: Verdict, engine: str) -> bool:
    ops = produced_ops(verdict.change)
    return any(name in ops for name in KNOWN_WRONG.get(engine, ()))


def justified(verdict: Verdict, engine: str, example) -> bool:
    """A refutation of a default rewrite is right where the kernel is a known-wrong one,
    or where its produced side fails to run and torch's lowered model fails too (a
    kernel the engine lacks: qnnpack's max_pool3d, say)."""
    if known_wrong(verdict, engine):
        return True
    return "fails running" in verdict.reason and not torch_model_runs(example)


def torch_model_runs(example) -> bool:
    try:
        theirs = torch_lowering(example.reference)
        with torch.no_grad():
            theirs(*example.inputs_for_checking)
    except Exception:
        return False
    return True


def validation_of(example, pipeline=None):
    reference = example.reference
    return validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, reference.example_inputs, pipeline=pipeline)


TOTALS: Counter[str] = Counter()


def test_nothing_a_correct_kernel_computes_is_refuted():
    run_law("validation law 1 (no false refutation)", examples(), check_no_false_refutation, share=0.9, at_least=150)
    SUMMARIES.append("validation law 1 verdicts: " + ", ".join(f"{count} {status}" for status, count in sorted(TOTALS.items())))


def check_no_false_refutation(example):
    if not runnable(example):
        return "onednn-only kernels: not run here", False
    engine = checking_engine(example)
    with quantized_engine(engine):
        validation = validation_of(example)
        false = [verdict for verdict in validation.refuted if not justified(verdict, engine, example)]
    TOTALS.update(verdict.status for verdict in validation.verdicts)
    assert not false, validation.format()
    refuted = len(validation.refuted)
    return ("a known-wrong kernel refuted, the rest validated" if refuted else "every change validated or unchecked"), True


@pytest.mark.parametrize("name", sorted(WRONG_RULES))
def test_wrong_rules_are_refuted_and_only_they(name):
    """Half of the recipes are dynamic, fp16 or weight-only, where these rules find little
    to rewrite: a quarter of the examples must reach the checks."""
    law = f"validation law 2 (wrong rule {name} refuted)"
    run_law(law, examples(kinds=RULE_KINDS[name]).map(lambda example: (name, example)), check_wrong_rule, share=0.25)


def check_wrong_rule(pair):
    name, example = pair
    if not runnable(example):
        return "onednn-only kernels: not run here", False
    engine = checking_engine(example)
    with quantized_engine(engine):
        validation = validation_of(example, with_wrong_rule(name))
        others = [verdict for verdict in validation.refuted if verdict.change.pass_name != name and not justified(verdict, engine, example)]
    mine = [verdict for verdict in validation.verdicts if verdict.change.pass_name == name]
    assert all(verdict.status == REFUTED for verdict in mine), validation.format()
    assert not others, validation.format()
    if not mine:
        return f"{name}: nowhere to fire", False
    return f"{name}: every rewrite refuted", True


def test_a_validated_lowering_is_within_quantization_error():
    run_law(
        "validation law 3 (validated lowering within quantization error)",
        examples(),
        check_validated_lowering,
        share=0.9,
        at_least=150,
        explicit=[fbgemm_conv_transpose_with_ints().example],
    )


def check_validated_lowering(example):
    if not runnable(example):
        return "onednn-only kernels: not run here", False
    reference = example.reference
    maps = (reference.qconfig_map, reference.node_name_to_scope)
    with quantized_engine(checking_engine(example)):
        lowering = fqlower.lower(reference.module, *maps, validate=True, example_inputs=reference.example_inputs)
        assert_within_quantization_error(example, lowering.module)
        assert lowering.validation is not None
        if lowering.validation.refuted:
            return "a refuted rewrite left float; within quantization error", True
        plain = fqlower.lower(reference.module, *maps)
    assert lowering.log.dumps() == plain.log.dumps()
    return "nothing refuted: the unvalidated lowering, within quantization error", True
