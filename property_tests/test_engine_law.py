"""Law: the draft engine equals the engine before it, on generated models.

One draft per pass (fqlower.engine.draft) must give byte for byte what one immutable
program per change gave (tests/per_change_engine.py, the old driver kept as the
oracle): the same change log (`dumps()`: fingerprints, per-change hashes,
provenance), emitted code, node names and meta, module types and state_dict.
"""

from __future__ import annotations

import os
import sys

from hypothesis import given
from models import examples

_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
from per_change_engine import assert_same_lowering  # noqa: E402


@given(example=examples())
def test_the_draft_engine_equals_the_per_change_engine(example):
    assert_same_lowering(example.reference)
