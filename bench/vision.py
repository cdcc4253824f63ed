"""torchvision architectures: fqlower's drop-in lowering against torch's, in one run.

The architectures and inputs of tests/test_torchvision.py (random weights, one
calibration image, fbgemm's default qconfig mapping unless --recipe says otherwise).
Per model, alternating the order every repeat, CPU-time medians:

  * torch:   `_lower_to_native_backend` on a fresh deepcopy (made before the clock starts);
  * fqlower: `fqlower.lower_to_native_backend` on the same model every time.

    python bench/vision.py                       # every architecture, 3 repeats
    python bench/vision.py --models resnet18,vit_b_16 --recipe dynamic --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch  # noqa: E402
from torch.ao.quantization import QConfigMapping, default_dynamic_qconfig, get_default_qconfig_mapping  # noqa: E402
from torch.ao.quantization.fx import _lower_to_native_backend as torch_lowering_module  # noqa: E402

import fqlower  # noqa: E402
from fqlower.compare import lowering_differences  # noqa: E402
from fqlower.reference import quantized_engine, reference_model  # noqa: E402


def _import_vision_models() -> Any:
    """tests/vision_models.py, with torchvision importable beside the CPU torch (conftest's shim)."""
    sys.path.insert(0, ROOT)
    import conftest  # noqa: F401  (declares torchvision's ops where its extension does not load)
    import vision_models

    return vision_models


def _cpu_ms(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated architecture names (default: all)")
    parser.add_argument("--recipe", default="fbgemm", choices=["fbgemm", "x86", "qnnpack", "dynamic"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    vision_models = _import_vision_models()
    names = [name for name in args.models.split(",") if name] or list(vision_models.ARCHITECTURES)
    mapping = QConfigMapping().set_global(default_dynamic_qconfig) if args.recipe == "dynamic" else get_default_qconfig_mapping(args.recipe)
    engine = "x86" if args.recipe == "dynamic" else args.recipe
    print(f"torch {torch.__version__}, recipe {args.recipe}, {args.repeats} repeats (CPU ms, medians)")
    print(f"{'model':<22}{'nodes':>7}{'torch ms':>10}{'fqlower ms':>12}{'fq/torch':>10}  equal")
    ratios = []
    with quantized_engine(engine):
        for name in names:
            images = vision_models.images(name, batch=1, seed=0)
            reference = reference_model(vision_models.build(name), (images,), mapping)
            gm, qmap, scope = reference.module, dict(reference.qconfig_map), dict(reference.node_name_to_scope)
            times: dict[str, list[float]] = {"torch": [], "fqlower": []}
            lowered = {}
            for repeat in range(args.repeats):
                order = ("torch", "fqlower") if repeat % 2 == 0 else ("fqlower", "torch")
                for who in order:
                    if who == "torch":
                        copied = copy.deepcopy((gm, qmap, scope))
                        times["torch"].append(_cpu_ms(lambda: lowered.__setitem__("torch", torch_lowering_module._lower_to_native_backend(*copied, False))))
                    else:
                        times["fqlower"].append(_cpu_ms(lambda: lowered.__setitem__("fqlower", fqlower.lower_to_native_backend(gm, qmap, scope))))
            try:
                equal = "yes" if lowering_differences(lowered["torch"], lowered["fqlower"], (images,)) == [] else "no"
            except Exception as error:  # a model that fails running (torch's, where fqlower departs)
                equal = f"runs? {type(error).__name__}"
            torch_ms, fq_ms = statistics.median(times["torch"]), statistics.median(times["fqlower"])
            ratios.append(fq_ms / torch_ms)
            print(f"{name:<22}{len(gm.graph.nodes):>7}{torch_ms:>10.1f}{fq_ms:>12.1f}{fq_ms / torch_ms:>10.2f}  {equal}", flush=True)
    print(f"median fq/torch: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
