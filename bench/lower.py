"""Lowering benchmark: fqlower.lower_to_native_backend vs torch's _lower_to_native_backend.

Models: residual conv/bn/relu/add reference models of about N nodes (bench/residual_models.py,
cached under bench/.cache/) and three small real architectures written here
(ResNet-18-style, MobileNetV2/V3-style with relu6/hardswish, EfficientNet-style with
squeeze-excite sigmoid-mul), quantized with prepare_fx + calibration and captured
exactly as convert_fx hands them to the lowering (fqlower.reference.reference_model).

Per model, alternating the order every repeat and quoting medians:

  * torch:   ``_lower_to_native_backend(copy, qconfig_map, scope)``. torch rewrites its
             input in place, so it gets a fresh ``copy.deepcopy`` of the model and maps
             every repeat; the copy is made before the clock starts.
  * fqlower: ``fqlower.lower_to_native_backend(gm, qconfig_map, scope)``. It never
             changes its input, so it runs on the same model every time (no copy).
  * floor:   the tensor work any lowering must do plus one graph-module build: for
             every weighted reference module torch lowers (found with torch's own
             matchers, untimed) ``QuantizedCls.from_reference(ref, scale, zero_point)``,
             then ``GraphModule(torch_result, deepcopy(torch_result.graph))`` (the graph
             copy is untimed).

``gc.collect()`` runs before every timed region; the collector stays on while timing
(both lowerings run as a user would run them).  The recording path is timed in the
same alternating runs: ``fqlower.lower`` (the full change log: fingerprints between
passes, per-change hashes and provenance) and ``fqlower.replay`` of its log, with
the CPU time of ``lower``'s stages (from_fx, passes with the log, to_fx).  Also reported: inference time of both
lowered models on the example input (median of alternating runs) and, with
``--memory``, what keeping every per-pass snapshot costs relative to one program.

    python bench/lower.py                                # residual 1k,3k,13k + real architectures
    python bench/lower.py --with-50k                     # also a 50k-node model (slow)
    python bench/lower.py --sizes 1000,13000 --repeats 5
    python bench/lower.py --sizes 13000 --no-arch --profile   # cProfile one fqlower lowering
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
import tracemalloc
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.ao.quantization.fx import _lower_to_native_backend as torch_lowering_module  # noqa: E402
from torch.fx import GraphModule  # noqa: E402

import fqlower  # noqa: E402
from fqlower.reference import reference_model  # noqa: E402
from residual_models import _recursion_limit, build_residual_reference_model, qconfig_mapping  # noqa: E402


@dataclass
class Case:
    name: str
    gm: GraphModule
    qconfig_map: dict
    scope: dict
    example_inputs: tuple

    @property
    def nodes(self) -> int:
        return len(self.gm.graph.nodes)


# --- real architectures (small widths: graph structure matters here, not FLOPs) -------------


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride)
        self.b = conv_bn(cout, cout, 3, act=None)
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.down is None else self.down(x)
        return self.relu(self.b(self.a(x)) + shortcut)


class ResNet18(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(conv_bn(3, width, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i, w in enumerate(widths):
            blocks += [ResBlock(cin, w, 1 if i == 0 else 2), ResBlock(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (expand 1x1, depthwise 3x3, project 1x1), optional SE (EfficientNet MBConv)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type, se: bool) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn(cin, hidden, 1, act=act) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act)
        self.se = SqueezeExcite(hidden, max(1, cin // 4)) if se else nn.Identity()
        self.project = conv_bn(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """(expand, channels, repeats, stride) stages as in MobileNetV2; `se` makes it EfficientNet-B0-like."""

    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, act: type = nn.ReLU6, head_act: type = nn.Hardswish, se: bool = False, width: float = 0.25) -> None:
        super().__init__()
        scale = lambda c: max(8, int(c * width))  # noqa: E731
        cin = scale(32)
        layers: list[nn.Module] = [conv_bn(3, cin, 3, 2, act=act)]
        for expand, channels, repeats, stride in self.STAGES:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, scale(channels), stride if i == 0 else 1, expand, act, se))
                cin = scale(channels)
        layers.append(conv_bn(cin, 4 * cin, 1, act=head_act))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(4 * cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: ResNet18(),
    "mobilenetv2": lambda: MobileNet(act=nn.ReLU6, head_act=nn.Hardswish),
    "efficientnet": lambda: MobileNet(act=nn.ReLU, head_act=nn.Hardswish, se=True),
}


def architecture_case(name: str) -> Case:
    torch.manual_seed(0)
    model = ARCHITECTURES[name]().eval()
    x = (torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),)
    ref = reference_model(model, x, qconfig_mapping("minmax"))
    return Case(name, ref.module, dict(ref.qconfig_map), dict(ref.node_name_to_scope), x)


def residual_case(target: int) -> Case:
    res = build_residual_reference_model(target)
    return Case(f"residual-{target // 1000}k", res.gm, res.qconfig_map, res.node_name_to_scope, res.example_inputs)


# --- the three timed things ----------------------------------------------------------------


def torch_lower(gm: GraphModule, qconfig_map: dict, scope: dict) -> GraphModule:
    return torch_lowering_module._lower_to_native_backend(gm, qconfig_map, scope, False)


def fq_lower(case: Case) -> GraphModule:
    return fqlower.lower_to_native_backend(case.gm, case.qconfig_map, case.scope)


def fq_lower_logged(case: Case) -> fqlower.Lowering:
    """The recording path: `fqlower.lower`, with the full change log (fingerprints, hashes)."""
    return fqlower.lower(case.gm, case.qconfig_map, case.scope)


def fq_replay(case: Case, log: Any) -> fqlower.Lowering:
    return fqlower.replay(case.gm, log, case.qconfig_map, case.scope)


def stage_ms(case: Case) -> dict[str, float]:
    """CPU milliseconds of `lower()`'s stages: from_fx, the passes with the log (fingerprints
    and per-change hashes), to_fx; and the passes alone, as the drop-in runs them."""
    from fqlower.api import _emit
    from fqlower.log import without_change_hashes
    from fqlower.ir import from_fx, gc_paused
    from fqlower.passes import default_pipeline

    times: dict[str, float] = {}
    with gc_paused():
        start = time.process_time()
        program = from_fx(case.gm, case.qconfig_map, case.scope)
        times["from_fx"] = time.process_time() - start
        start = time.process_time()
        result, log = default_pipeline().run_logged(program)
        times["passes+log"] = time.process_time() - start
        start = time.process_time()
        _emit(result.program, log.changes, False)
        times["to_fx"] = time.process_time() - start
        start = time.process_time()
        with without_change_hashes():
            default_pipeline().run(program)
        times["passes"] = time.process_time() - start
    return {stage: seconds * 1e3 for stage, seconds in times.items()}


def weighted_modules(case: Case) -> list[tuple[type, nn.Module, Any, Any]]:
    """(quantized class, reference module, scale, zero point) of every module torch lowers
    with from_reference, found with torch's matchers on the (unchanged) reference model."""
    m = torch_lowering_module
    gm = case.gm
    modules = dict(gm.named_modules(remove_duplicate=False))
    one_input = list(m.STATIC_LOWER_MODULE_MAP) + list(m.STATIC_LOWER_FUSED_MODULE_MAP)
    two_input = list(m.STATIC_LOWER_FUSED_MODULE_TWO_INPUTS_MAP)
    found = []
    for node in gm.graph.nodes:
        q_node, _, ref_node = m._match_static_pattern(node, modules, case.qconfig_map, one_input, [0])
        if q_node is None:
            q_node, ref_node = m._match_static_pattern_with_two_inputs(node, modules, case.qconfig_map, two_input)
        if q_node is None:
            continue
        ref = modules[ref_node.target]
        cls = type(ref)
        if cls in m.STATIC_LOWER_FUSED_MODULE_MAP:
            inner, q_class = m.STATIC_LOWER_FUSED_MODULE_MAP[cls]
        elif cls in m.STATIC_LOWER_FUSED_MODULE_TWO_INPUTS_MAP:
            inner, q_class = m.STATIC_LOWER_FUSED_MODULE_TWO_INPUTS_MAP[cls]
        else:
            inner, q_class = None, m.STATIC_LOWER_MODULE_MAP[cls]
        if inner is not None and type(ref[0]) is not inner:
            continue
        _, scale, zero_point, _ = q_node.args
        found.append((q_class, ref, getattr(gm, scale.target), getattr(gm, zero_point.target)))
    return found


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1e3, out


@dataclass
class Row:
    name: str
    nodes: int
    weighted: int
    torch_ms: list[float] = field(default_factory=list)
    fq_ms: list[float] = field(default_factory=list)
    lower_ms: list[float] = field(default_factory=list)
    replay_ms: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    torch_infer_us: float | None = None
    fq_infer_us: float | None = None
    note: str = ""


def bench_case(case: Case, repeats: int, infer_runs: int) -> Row:
    weighted = weighted_modules(case)
    row = Row(case.name, case.nodes, len(weighted))

    def run_torch() -> tuple[float, GraphModule]:
        gm, qmap, scope = copy.deepcopy((case.gm, case.qconfig_map, case.scope))
        return _timed(lambda: torch_lower(gm, qmap, scope))

    def run_floor(lowered: GraphModule) -> float:
        graph = copy.deepcopy(lowered.graph)

        def work() -> GraphModule:
            for q_class, ref, scale, zero_point in weighted:
                q_class.from_reference(ref, scale, zero_point)
            return GraphModule(lowered, graph)

        return _timed(work)[0]

    _, torch_out = run_torch()  # warm-ups
    _, fq_out = _timed(lambda: fq_lower(case))
    log = fq_lower_logged(case).log
    fq_replay(case, log)
    run_floor(torch_out)
    row.note = check_same(case, torch_out, fq_out)
    for i in range(repeats):
        order = ("torch", "fq", "lower", "replay", "floor")
        for which in order if i % 2 == 0 else reversed(order):
            if which == "torch":
                ms, torch_out = run_torch()
                row.torch_ms.append(ms)
            elif which == "fq":
                row.fq_ms.append(_timed(lambda: fq_lower(case))[0])
            elif which == "lower":
                row.lower_ms.append(_timed(lambda: fq_lower_logged(case))[0])
            elif which == "replay":
                row.replay_ms.append(_timed(lambda: fq_replay(case, log))[0])
            else:
                row.floor_ms.append(run_floor(torch_out))
        row.stages.append(stage_ms(case))
    if infer_runs:
        row.torch_infer_us, row.fq_infer_us = inference_us(torch_out, fq_out, case.example_inputs, infer_runs)
    return row


def check_same(case: Case, torch_out: GraphModule, fq_out: GraphModule) -> str:
    """Untimed sanity check: same outputs and same state_dict keys as torch's lowering."""
    notes = []
    with torch.no_grad():
        a, b = torch_out(*case.example_inputs), fq_out(*case.example_inputs)
    a, b = (t.dequantize() if t.is_quantized else t for t in (a, b))
    if not torch.equal(a, b):
        notes.append(f"outputs differ (max {float((a - b).abs().max()):.3g})")
    if list(torch_out.state_dict()) != list(fq_out.state_dict()):
        notes.append("state_dict keys differ")
    return "; ".join(notes)


def inference_us(a: GraphModule, b: GraphModule, inputs: tuple, runs: int) -> tuple[float, float]:
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for module in (a, b):
            module(*inputs)
        for i in range(runs):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                (a, b)[which](*inputs)
                times[which].append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times[0]), statistics.median(times[1])


def snapshot_memory(case: Case) -> tuple[float, float, float]:
    """(MB of one program, MB of the input program plus every per-pass snapshot, ratio),
    by tracemalloc. Modules and tensors are shared with the input model and not counted."""
    from fqlower.passes import default_pipeline
    from fqlower.engine.pipeline import Snapshots

    pipeline = default_pipeline()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        program = fqlower.from_fx(case.gm, case.qconfig_map, case.scope)
        gc.collect()
        one = tracemalloc.get_traced_memory()[0] - base
        snapshots = Snapshots()
        result, log = pipeline.run_logged(program, (snapshots,))
        del result, log
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del snapshots, program
    return one / 2**20, kept / 2**20, kept / one


# --- output ----------------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def print_table(rows: list[Row], repeats: int) -> None:
    print(f"\nmedians of {repeats} alternating repeats (ratios: median of the repeats' own ratios); torch on a fresh deepcopy each repeat (copy untimed); "
          f"fqlower on the same model (it does not mutate); gc on; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    hdr = (f"{'model':<14} {'nodes':>6} {'wmods':>5} | {'torch ms':>9} {'fqlower ms':>10} {'floor ms':>9} | "
           f"{'fq/torch':>8} {'fq/floor':>8} {'torch/floor':>11} | {'torch us/n':>10} {'fq us/n':>8} | "
           f"{'infer torch us':>14} {'infer fq us':>11}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        t, f, fl = _med(r.torch_ms), _med(r.fq_ms), _med(r.floor_ms)
        # ratios: the median over repeats of each repeat's own ratio (its three timings run
        # back to back, so a slow spell of the machine slows all three)
        fq_torch = _med([a / b for a, b in zip(r.fq_ms, r.torch_ms)])
        fq_floor = _med([a / b for a, b in zip(r.fq_ms, r.floor_ms)])
        torch_floor = _med([a / b for a, b in zip(r.torch_ms, r.floor_ms)])
        inf = lambda x: "n/a" if x is None else f"{x:.0f}"  # noqa: E731
        print(f"{r.name:<14} {r.nodes:>6} {r.weighted:>5} | {t:>9.1f} {f:>10.1f} {fl:>9.1f} | "
              f"{fq_torch:>8.2f} {fq_floor:>8.2f} {torch_floor:>11.2f} | {t * 1e3 / r.nodes:>10.1f} {f * 1e3 / r.nodes:>8.1f} | "
              f"{inf(r.torch_infer_us):>14} {inf(r.fq_infer_us):>11}")
    print("\nthe recording path: fqlower.lower() (full change log: fingerprints, per-change hashes) and "
          "fqlower.replay() of that log, in the same alternating runs; CPU ms of lower()'s stages, and of the "
          "passes alone as the drop-in runs them (medians)")
    hdr = (f"{'model':<14} {'nodes':>6} | {'lower ms':>9} {'replay ms':>9} | {'lower/torch':>11} {'replay/lower':>12} | "
           f"{'from_fx':>8} {'passes+log':>10} {'to_fx':>8} | {'passes':>8} {'passes us/n':>11}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        lower_torch = _med([a / b for a, b in zip(r.lower_ms, r.torch_ms)])
        replay_lower = _med([a / b for a, b in zip(r.replay_ms, r.lower_ms)])
        stage = {key: _med([s[key] for s in r.stages]) for key in ("from_fx", "passes+log", "to_fx", "passes")}
        print(f"{r.name:<14} {r.nodes:>6} | {_med(r.lower_ms):>9.1f} {_med(r.replay_ms):>9.1f} | {lower_torch:>11.2f} {replay_lower:>12.2f} | "
              f"{stage['from_fx']:>8.1f} {stage['passes+log']:>10.1f} {stage['to_fx']:>8.1f} | {stage['passes']:>8.1f} {stage['passes'] * 1e3 / r.nodes:>11.1f}")
    for r in rows:
        if r.note:
            print(f"note ({r.name}): {r.note}")


def profile_case(case: Case, top: int) -> None:
    fq_lower(case)  # warm-up
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    fq_lower(case)
    prof.disable()
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(top)
        print(f"\n=== {case.name}, {case.nodes} nodes, fqlower.lower_to_native_backend, top {top} by {key} ===")
        print(buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,3000,13000", help="residual models, comma-separated target node counts")
    p.add_argument("--no-arch", action="store_true", help="skip the real architectures")
    p.add_argument("--with-50k", action="store_true", help="add a 50k-node residual model (slow: for the per-node slope)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--infer-runs", type=int, default=20, help="inference runs per lowered model (0: skip)")
    p.add_argument("--memory", default="3000", help="residual size whose snapshot memory to measure ('' to skip)")
    p.add_argument("--profile", action="store_true", help="instead of timing, cProfile one fqlower lowering per model")
    p.add_argument("--top", type=int, default=30, help="rows of profile output")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # tiny tensors; and the machine is shared

    def cases():
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()] + ([50_000] if args.with_50k else [])
        for n in sizes:
            yield lambda n=n: residual_case(n)
        if not args.no_arch:
            for name in ARCHITECTURES:
                yield lambda name=name: architecture_case(name)

    rows = []
    with _recursion_limit(100_000):
        for make in cases():
            case = make()
            print(f"# {case.name}: {case.nodes} nodes", file=sys.stderr, flush=True)
            if args.profile:
                profile_case(case, args.top)
            else:
                rows.append(bench_case(case, args.repeats, args.infer_runs))
            del case
            gc.collect()
        if rows:
            print_table(rows, args.repeats)
        if args.memory and not args.profile:
            case = residual_case(int(args.memory))
            one, kept, ratio = snapshot_memory(case)
            print(f"\nsnapshot memory ({case.name}, {case.nodes} nodes, tracemalloc): one program {one:.1f} MB; "
                  f"input program + all per-pass snapshots {kept:.1f} MB = {ratio:.2f}x one program")


if __name__ == "__main__":
    main()
