"""Translation validation's cost: `fqlower.lower(..., validate=True)` and `fqlower.validate`
against a plain `fqlower.lower`, in one run.

Models: the residual reference models of bench/lower.py (about 1k and 3k nodes) and its
three small real architectures, with their example inputs. Per model, alternating the
order every repeat, wall-clock medians (CPU time would count the spinning of torch's
idle intra-op threads after every small kernel: validation runs ~1,500 of them on the
1k model, and its CPU time comes out about twice its wall time on 2 cores) of

  * lower:     `fqlower.lower(gm, qconfig_map, scope)` (the change log, no checks);
  * lower+v:   `fqlower.lower(..., validate=True, example_inputs=x)`: every change
               checked as it is made (default samples: 4);
  * validate:  `fqlower.validate(gm, qconfig_map, scope, x)`: a lowering, then every
               change checked;
  * torch:     torch's `_lower_to_native_backend` on a fresh deepcopy, for scale.

The ratio lower+v / lower is the cost of checking every rewrite (the issue's aim: <= 3).

    python bench/validate.py
    python bench/validate.py --sizes 1000 --no-arch --repeats 5
    python bench/validate.py --sizes 1000 --no-arch --profile     # cProfile one lower+v
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time
import warnings
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fqlower  # noqa: E402
from lower import ARCHITECTURES, Case, architecture_case, residual_case, torch_lower  # noqa: E402


def _wall_ms(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def timed(case: Case, repeats: int) -> dict[str, float]:
    runs: dict[str, Callable[[], object]] = {
        "lower": lambda: fqlower.lower(case.gm, case.qconfig_map, case.scope),
        "lower+v": lambda: fqlower.lower(case.gm, case.qconfig_map, case.scope, validate=True, example_inputs=case.example_inputs),
        "validate": lambda: fqlower.validate(case.gm, case.qconfig_map, case.scope, case.example_inputs),
    }
    samples: dict[str, list[float]] = {name: [] for name in (*runs, "torch")}
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for name in order:
            samples[name].append(_wall_ms(runs[name]))
        gm, qmap, scope = copy.deepcopy((case.gm, case.qconfig_map, case.scope))
        samples["torch"].append(_wall_ms(lambda: torch_lower(gm, qmap, scope)))
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,3000", help="residual model sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--no-arch", action="store_true", help="skip the real architectures")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one lower(validate=True) of the first model")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    cases = [residual_case(int(size)) for size in args.sizes.split(",") if size]
    if not args.no_arch:
        cases += [architecture_case(name) for name in ARCHITECTURES]
    if args.profile:
        case = cases[0]
        profile = cProfile.Profile()
        profile.runcall(fqlower.lower, case.gm, case.qconfig_map, case.scope, validate=True, example_inputs=case.example_inputs)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
        print(out.getvalue())
        return
    print(f"{'model':<16}{'nodes':>7}{'changes':>9}{'lower ms':>10}{'lower+v ms':>12}{'validate ms':>13}{'torch ms':>10}{'lower+v/lower':>15}{'validate/lower':>16}")
    ratios = []
    for case in cases:
        lowering = fqlower.lower(case.gm, case.qconfig_map, case.scope, validate=True, example_inputs=case.example_inputs)
        assert lowering.validation is not None
        medians = timed(case, args.repeats)
        ratio = medians["lower+v"] / medians["lower"]
        ratios.append(ratio)
        print(
            f"{case.name:<16}{case.nodes:>7}{len(lowering.validation.verdicts):>9}{medians['lower']:>10.1f}{medians['lower+v']:>12.1f}"
            f"{medians['validate']:>13.1f}{medians['torch']:>10.1f}{ratio:>15.2f}{medians['validate'] / medians['lower']:>16.2f}"
        )
        counts = lowering.validation.counts()
        print(f"{'':<16}verdicts: " + ", ".join(f"{number} {status}" for status, number in counts.items()))
    print(f"lower+v / lower: median {statistics.median(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
