"""Shared pytest configuration: hypothesis profiles live here and nowhere else, and
torchvision is made importable beside the CPU torch.

The default profile, `ci`, is derandomized and bounded, so `pytest` and `make test` never
fail by chance; `dev` explores new random examples (`make property-explore`), and
`thorough` is for local bug hunts (`make property-thorough`).
"""

import importlib
import os
import sys
import warnings

import torch


def import_torchvision_beside_cpu_torch():
    """PyPI's torchvision wheels are CUDA builds: beside the CPU torch their C extension does
    not load, and `import torchvision` then fails registering fake kernels for the ops it
    lacks (`RuntimeError: operator torchvision::nms does not exist`). torch's own test
    utilities import torchvision whenever it is installed, and the architectures are pure
    Python, so the two op schemas are declared first (without kernels) and the import
    retried. Where the extension loads (a CUDA torch), the plain import succeeds and
    nothing is declared."""
    try:
        importlib.import_module("torchvision")
    except ImportError:
        return  # not installed: the torchvision suite says so itself
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        TORCHVISION_SCHEMAS.append(library)  # a Library undoes its definitions when collected
        importlib.import_module("torchvision")


TORCHVISION_SCHEMAS: list = []
import_torchvision_beside_cpu_torch()

# Imported first, for its side effect: torch's test utilities (which the zoo uses) register
# their own hypothesis profile "dev" (10 random examples, a 200 ms deadline) and load it on
# import. Imported lazily, mid-run, that replaced fqlower's profile for every @given
# decorated afterwards, so the derandomized `ci` run was neither derandomized nor bounded.
import torch.testing._internal.common_utils  # noqa: F401
from hypothesis import HealthCheck, settings

COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILES = {
    "ci": dict(max_examples=40, derandomize=True),  # the default
    "dev": dict(max_examples=40),
    "thorough": dict(max_examples=1000),
    "fuzz-thorough": dict(max_examples=10000),
}
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")


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
