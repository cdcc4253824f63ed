"""The draft engine (one draft per pass) gives, byte for byte, what the engine
before it gave (one immutable program per change, tests/per_change_engine.py):
the change log (`dumps()`, fingerprints and per-change hashes included), the
emitted code, node names and meta, and the state_dict. On every zoo case and on
the bench's models; property_tests/test_engine_law.py draws the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import zoo
from per_change_engine import assert_same_lowering, per_change_engine

import fqlower

BENCH = str(Path(__file__).resolve().parents[1] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
import lower as bench_lower  # noqa: E402  (bench/lower.py)
import residual_models  # noqa: E402  (bench/residual_models.py)


@pytest.mark.parametrize("case", zoo.ALL_CASES, ids=lambda case: case.id)
def test_the_draft_engine_equals_the_per_change_engine_on_the_zoo(case):
    reference = case.build()
    try:
        fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    except fqlower.FqlowerError:
        with pytest.raises(fqlower.FqlowerError), per_change_engine():
            fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
        return
    assert_same_lowering(reference)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "efficientnet"])
def test_the_draft_engine_equals_the_per_change_engine_on_the_bench_architectures(name):
    case = bench_lower.architecture_case(name)
    assert_same_lowering(_Reference(case.gm, case.qconfig_map, case.scope))


def test_the_draft_engine_equals_the_per_change_engine_on_a_bench_residual_model():
    built = residual_models.build_residual_reference_model(300)
    assert_same_lowering(_Reference(built.gm, built.qconfig_map, built.node_name_to_scope))


class _Reference:
    def __init__(self, module, qconfig_map, node_name_to_scope):
        self.module, self.qconfig_map, self.node_name_to_scope = module, qconfig_map, node_name_to_scope
