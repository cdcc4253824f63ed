"""Shared pytest configuration: hypothesis profiles live here and nowhere else.

HYPOTHESIS_PROFILE=ci (set by .ci/run) is derandomized and bounded; `thorough`
is for local bug hunts: HYPOTHESIS_PROFILE=thorough make test.
"""

import os
import sys
import warnings

# Imported first, for its side effect: torch's test utilities (which the zoo uses) register
# their own hypothesis profile "dev" (10 random examples, a 200 ms deadline) and load it on
# import. Imported lazily, mid-run, that replaced fqlower's profile for every @given
# decorated afterwards, so the derandomized `ci` run was neither derandomized nor bounded.
import torch.testing._internal.common_utils  # noqa: F401
from hypothesis import HealthCheck, settings

COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILES = {
    "ci": dict(max_examples=40, derandomize=True),
    "dev": dict(max_examples=40),
    "thorough": dict(max_examples=1000),
    "fuzz-thorough": dict(max_examples=10000),
}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")


def load_fqlower_profile():
    for name, options in PROFILES.items():
        settings.register_profile(name, **options, **COMMON)
    settings.load_profile(PROFILE)


load_fqlower_profile()


def pytest_runtest_setup(item):
    """Each test starts under fqlower's profile, whatever an earlier test imported."""
    load_fqlower_profile()

# torch.ao.quantization's deprecation notices; ours must never need filtering.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Where each law's examples ended up (property_tests/reach.py), after the run."""
    reach = sys.modules.get("reach")
    for summary in getattr(reach, "SUMMARIES", ()):
        terminalreporter.write_line(summary)
