"""The PT2E front end against torchao's x86 lowering, in one run.

1. The models of tests/pt2e_models.py, converted with convert_pt2e: the wall time of
   `fqlower.lower_pt2e` (median of --repeats) and of torchao's
   `lower_pt2e_quantized_to_x86` (on a fresh deepcopy, made before the clock starts;
   one run each: it re-exports and runs Inductor's freezing passes), their ratio, and
   the inference time of both lowered models (medians, alternating).
2. Scaling: stacks of residual conv blocks of about 1k, 3k and 10k nodes, fqlower's
   microseconds per node (torchao's on the smallest, for scale).

    python bench/pt2e.py
    python bench/pt2e.py --models conv_bn_relu,mlp_relu --sizes 1000 --repeats 5
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import fqlower  # noqa: E402
from fqlower.cli.pt2e import pt2e_converted, quiet  # noqa: E402
from pt2e_models import MODELS, convert, torchao_lowering  # noqa: E402


def wall_ms(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def inference_ms(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], runs: int = 20) -> float:
    with torch.no_grad():
        module(*inputs)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            module(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


def stack(blocks: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), *[Block(8) for _ in range(blocks)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated names from tests/pt2e_models.py (default: all)")
    parser.add_argument("--sizes", default="1000,3000,10000", help="node counts of the scaling models (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    names = [name for name in args.models.split(",") if name] or list(MODELS)

    print(f"{'model':<22}{'nodes':>6}{'fqlower ms':>12}{'torchao ms':>12}{'ratio':>8}{'infer fq ms':>13}{'infer ao ms':>13}")
    ours_total = theirs_total = 0.0
    for name in names:
        converted, inputs = convert(name)
        ours = statistics.median(wall_ms(lambda: fqlower.lower_pt2e(converted)) for _ in range(args.repeats))
        model_copy = copy.deepcopy(converted)
        with quiet():
            theirs_module: list[torch.nn.Module] = []
            theirs = wall_ms(lambda: theirs_module.append(torchao_lowering(model_copy, inputs)))
        ours_total, theirs_total = ours_total + ours, theirs_total + theirs
        lowered = fqlower.lower_pt2e(converted).module
        try:
            infer_theirs = f"{inference_ms(theirs_module[0], inputs):>13.3f}"
        except RuntimeError:
            infer_theirs = f"{'crashes':>13}"
        print(f"{name:<22}{len(converted.graph.nodes):>6}{ours:>12.1f}{theirs:>12.0f}{ours / theirs:>8.3f}{inference_ms(lowered, inputs):>13.3f}{infer_theirs}")
    print(f"total: fqlower {ours_total:.0f} ms, torchao {theirs_total:.0f} ms, ratio {ours_total / theirs_total:.3f}")

    print(f"\n{'scaling':<22}{'nodes':>6}{'fqlower ms':>12}{'us/node':>9}{'torchao ms':>12}")
    for index, size in enumerate(int(size) for size in args.sizes.split(",") if size):
        blocks = max(1, size // 22)
        inputs = (torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)),)
        converted = pt2e_converted(stack(blocks), inputs)
        nodes = len(converted.graph.nodes)
        ours = statistics.median(wall_ms(lambda: fqlower.lower_pt2e(converted)) for _ in range(args.repeats))
        theirs_text = ""
        if index == 0:
            model_copy = copy.deepcopy(converted)
            with quiet():
                theirs_text = f"{wall_ms(lambda: torchao_lowering(model_copy, inputs)):>12.0f}"
        print(f"{'residual stack':<22}{nodes:>6}{ours:>12.1f}{1e3 * ours / nodes:>9.1f}{theirs_text}")


if __name__ == "__main__":
    main()
