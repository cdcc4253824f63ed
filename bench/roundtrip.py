"""Round-trip benchmark: fqlower.to_fx(fqlower.from_fx(gm)) vs. a plain torch.fx copy.

For each size a quantized reference model of about that many FX nodes is built
(bench/residual_models.py; builds slower than 30 s are cached under bench/.cache/), then

  * torch baseline: ``torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))``
  * fqlower:        ``fqlower.to_fx(fqlower.from_fx(gm))`` (from_fx and to_fx timed separately)

are timed alternately (order swapped every repeat) after one warm-up each, with
``gc.collect()`` before every timed run; the table quotes medians.

    python bench/roundtrip.py [--sizes 1000,10000,50000] [--repeats 5]
    python bench/roundtrip.py --sizes 10000 --profile     # cProfile one fqlower round trip
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
from dataclasses import dataclass, field
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.fx import GraphModule  # noqa: E402

from residual_models import build_residual_reference_model  # noqa: E402

try:
    import fqlower

    _FQLOWER_ERROR: str | None = None
    if not (hasattr(fqlower, "from_fx") and hasattr(fqlower, "to_fx")):
        _FQLOWER_ERROR = "fqlower has no from_fx/to_fx yet"
except Exception as exc:  # pragma: no cover - depends on the state of the repo
    fqlower = None  # type: ignore[assignment]
    _FQLOWER_ERROR = f"import fqlower failed: {exc!r}"


def torch_copy(gm: GraphModule) -> GraphModule:
    return GraphModule(gm, copy.deepcopy(gm.graph))


@dataclass
class Row:
    target: int
    nodes: int
    build_s: float
    build_how: str
    torch_ms: list[float] = field(default_factory=list)
    from_ms: list[float] = field(default_factory=list)
    to_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    note: str = ""


# With --no-gc the cyclic collector is off inside timed regions (it is always
# collected right before them).  Collections triggered by allocation scan the whole
# heap, model included, so allocation-heavy code pays for the model's size.
GC_OFF = False


def _gc_reset() -> None:
    gc.collect()
    if GC_OFF:
        gc.disable()


def _time_torch(gm: GraphModule) -> float:
    _gc_reset()
    try:
        t0 = time.perf_counter()
        out = torch_copy(gm)
        t1 = time.perf_counter()
    finally:
        gc.enable()
    del out
    return (t1 - t0) * 1e3


def _time_fqlower(gm: GraphModule, from_fx: Callable[[GraphModule], Any]) -> tuple[float, float]:
    _gc_reset()
    try:
        t0 = time.perf_counter()
        prog = from_fx(gm)
        t1 = time.perf_counter()
        out = fqlower.to_fx(prog)
        t2 = time.perf_counter()
    finally:
        gc.enable()
    del prog, out
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3


def _check_roundtrip(gm: GraphModule, from_fx: Callable, example_inputs: tuple) -> str:
    """Sanity check outside the timed region; returns a note ('' when fine)."""
    try:
        out = fqlower.to_fx(from_fx(gm))
    except Exception as exc:
        return f"round trip raised {exc!r}"
    notes = []
    n_in, n_out = len(gm.graph.nodes), len(out.graph.nodes)
    if n_in != n_out:
        notes.append(f"node count {n_in} -> {n_out}")
    try:
        with torch.no_grad():
            torch.testing.assert_close(out(*example_inputs), gm(*example_inputs))
    except Exception as exc:
        notes.append(f"outputs differ/failed: {str(exc).splitlines()[0][:120]}")
    return "; ".join(notes)


def _make_from_fx(qconfig_map: dict, scope: dict, with_maps: bool) -> Callable[[GraphModule], Any]:
    if with_maps:
        return lambda gm: fqlower.from_fx(gm, qconfig_map=qconfig_map, node_name_to_scope=scope)
    return fqlower.from_fx


def bench_size(target: int, repeats: int, with_maps: bool, check: bool) -> Row:
    res = build_residual_reference_model(target)
    gm = res.gm
    how = "cache" if res.from_cache else "built"
    row = Row(target, res.num_nodes, sum(res.timings.values()), how)
    print(
        f"# {target}: {row.nodes} nodes, {res.num_blocks} blocks, {how} in {row.build_s:.1f} s "
        f"({', '.join(f'{k} {v:.1f}' for k, v in res.timings.items())})",
        file=sys.stderr,
        flush=True,
    )
    have_fq = _FQLOWER_ERROR is None
    from_fx = _make_from_fx(res.qconfig_map, res.node_name_to_scope, with_maps) if have_fq else None

    if have_fq and check:
        row.note = _check_roundtrip(gm, from_fx, res.example_inputs)
        print(f"# {target}: round-trip check {row.note or 'ok'}", file=sys.stderr, flush=True)

    # Warm-up once each.
    _time_torch(gm)
    if have_fq:
        try:
            _time_fqlower(gm, from_fx)
        except Exception as exc:
            row.note = (row.note + "; " if row.note else "") + f"fqlower failed: {exc!r}"
            have_fq = False

    for i in range(repeats):
        # Alternate which side goes first so drift (heap growth, thermal) hits both.
        order = ("torch", "fq") if i % 2 == 0 else ("fq", "torch")
        for which in order:
            if which == "torch":
                row.torch_ms.append(_time_torch(gm))
            elif have_fq:
                f_ms, t_ms = _time_fqlower(gm, from_fx)
                row.from_ms.append(f_ms)
                row.to_ms.append(t_ms)
                row.total_ms.append(f_ms + t_ms)
    del res, gm
    gc.collect()
    return row


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def print_table(rows: list[Row], repeats: int, with_maps: bool) -> None:
    what = "from_fx(gm, qconfig_map, node_name_to_scope)" if with_maps else "from_fx(gm)"
    print(f"\nmedians of {repeats} alternating repeats; fqlower = to_fx({what}); "
          f"torch = GraphModule(gm, deepcopy(gm.graph)); gc {'off' if GC_OFF else 'on'} while timing")
    hdr = (
        f"{'nodes':>7} | {'torch ms':>9} | {'fqlower ms':>10} | {'from_fx':>8} | {'to_fx':>8} | "
        f"{'ratio':>6} | {'torch us/node':>13} | {'fqlower us/node':>15}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        t, fq, fr, to = _med(r.torch_ms), _med(r.total_ms), _med(r.from_ms), _med(r.to_ms)
        ratio = fq / t if (fq is not None and t) else None
        per = lambda ms: None if ms is None else ms * 1e3 / r.nodes  # noqa: E731
        print(
            f"{r.nodes:>7} | {_fmt(t):>9} | {_fmt(fq):>10} | {_fmt(fr):>8} | {_fmt(to):>8} | "
            f"{_fmt(ratio, '.2f'):>6} | {_fmt(per(t), '.2f'):>13} | {_fmt(per(fq), '.2f'):>15}"
        )
    notes = [(r.nodes, r.note) for r in rows if r.note]
    for nodes, note in notes:
        print(f"note ({nodes} nodes): {note}")
    if _FQLOWER_ERROR:
        print(f"note: fqlower columns unavailable: {_FQLOWER_ERROR}")


def profile_size(target: int, with_maps: bool, top: int) -> None:
    if _FQLOWER_ERROR:
        sys.exit(f"cannot profile: {_FQLOWER_ERROR}")
    res = build_residual_reference_model(target)
    from_fx = _make_from_fx(res.qconfig_map, res.node_name_to_scope, with_maps)
    fqlower.to_fx(from_fx(res.gm))  # warm-up
    _gc_reset()
    prof = cProfile.Profile()
    try:
        prof.enable()
        fqlower.to_fx(from_fx(res.gm))
        prof.disable()
    finally:
        gc.enable()
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        print(f"\n=== {res.num_nodes} nodes, fqlower round trip, gc {'off' if GC_OFF else 'on'}, "
              f"top {top} by {key} ===")
        print(buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,50000", help="comma-separated target node counts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--with-maps", action="store_true",
                   help="also pass qconfig_map and node_name_to_scope to from_fx")
    p.add_argument("--no-check", action="store_true", help="skip the untimed correctness check")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing, cProfile one fqlower round trip per size")
    p.add_argument("--top", type=int, default=25, help="rows of profile output")
    p.add_argument("--no-gc", action="store_true", help="disable the cyclic GC inside timed regions")
    args = p.parse_args(argv)
    global GC_OFF
    GC_OFF = args.no_gc
    warnings.filterwarnings("ignore", module=r"torch\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    if args.profile:
        for n in sizes:
            profile_size(n, args.with_maps, args.top)
        return

    rows = []
    for n in sizes:
        rows.append(bench_size(n, args.repeats, args.with_maps, not args.no_check))
    print_table(rows, args.repeats, args.with_maps)


if __name__ == "__main__":
    main()
