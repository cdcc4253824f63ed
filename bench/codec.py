"""Change-log codec benchmark: what writing and reading a log costs next to replaying it.

Per residual model (bench/residual_models.py), the log of one `fqlower.lower` is written
with `ChangeLog.dumps` and read with `ChangeLog.loads`; `fqlower.replay` of the read log
is timed in the same alternating repeats, so the codec's share of a replay from a file
(loads + replay) is a ratio taken in one run. Medians of CPU time, `gc.collect()` first.

    python bench/codec.py                      # residual 1k, 3k, 13k
    python bench/codec.py --sizes 3000 --repeats 9
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import fqlower  # noqa: E402
from fqlower.log import ChangeLog  # noqa: E402
from residual_models import _recursion_limit, build_residual_reference_model  # noqa: E402


def _cpu_ms(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e3


def bench_size(target: int, repeats: int) -> tuple[str, int, int, dict[str, float]]:
    res = build_residual_reference_model(target)
    log = fqlower.lower(res.gm, res.qconfig_map, res.node_name_to_scope).log
    text = log.dumps()
    timings: dict[str, list[float]] = {"dumps": [], "loads": [], "replay": []}
    for _ in range(repeats):
        timings["dumps"].append(_cpu_ms(log.dumps))
        timings["loads"].append(_cpu_ms(lambda: ChangeLog.loads(text)))
        timings["replay"].append(_cpu_ms(lambda: fqlower.replay(res.gm, log, res.qconfig_map, res.node_name_to_scope)))
    medians = {key: statistics.median(values) for key, values in timings.items()}
    return f"residual-{target // 1000}k", len(res.gm.graph.nodes), len(log.entries), medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,3000,13000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"{'model':<14}{'nodes':>7}{'entries':>9}{'dumps ms':>10}{'loads ms':>10}{'replay ms':>11}{'loads/(loads+replay)':>22}")
    with _recursion_limit(100_000):
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            name, nodes, entries, ms = bench_size(size, args.repeats)
            share = ms["loads"] / (ms["loads"] + ms["replay"])
            print(f"{name:<14}{nodes:>7}{entries:>9}{ms['dumps']:>10.1f}{ms['loads']:>10.1f}{ms['replay']:>11.1f}{share:>22.3f}")


if __name__ == "__main__":
    main()
