"""Shared pytest configuration: hypothesis profiles live here and nowhere else.

HYPOTHESIS_PROFILE=ci (set by .ci/run) is derandomized and bounded; `thorough`
is for local bug hunts: HYPOTHESIS_PROFILE=thorough make test.
"""

import os
import sys
import warnings

from hypothesis import HealthCheck, settings

COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, **COMMON)
settings.register_profile("dev", max_examples=40, **COMMON)
settings.register_profile("thorough", max_examples=1000, **COMMON)
settings.register_profile("fuzz-thorough", max_examples=10000, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# torch.ao.quantization's deprecation notices; ours must never need filtering.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Where each law's examples ended up (property_tests/reach.py), after the run."""
    reach = sys.modules.get("reach")
    for summary in getattr(reach, "SUMMARIES", ()):
        terminalreporter.write_line(summary)
