"""The hypothesis profile a run asks for is the one every property test runs under."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

PROFILES = {"ci": (40, True), "dev": (40, False), "thorough": (1000, False), "fuzz-thorough": (10000, False)}


def test_torchs_test_utilities_do_not_replace_the_profile():
    """Regression: importing torch.testing._internal.common_quantization (the zoo does, lazily)
    loaded torch's own 'dev' profile (10 random examples, 200 ms deadline) for every test
    decorated afterwards, so `make test` was neither derandomized nor bounded."""
    import torch.testing._internal.common_quantization  # noqa: F401

    examples, derandomized = PROFILES[os.environ.get("HYPOTHESIS_PROFILE", "ci")]  # ci: conftest's default
    seen = []

    @given(st.integers())
    def decorated_after_the_import(value):
        seen.append(value)

    decorated_after_the_import()
    current = settings.default
    assert (current.max_examples, current.derandomize, current.deadline) == (examples, derandomized, None)
    assert len(seen) >= min(examples, 40)
