"""Lowering, replaying and writing the results, as the commands report them."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fqlower.cli.files import _read_log, _writing, save_module
from fqlower.cli.output import LARGE_MODEL_NODES, _progress

class _Announced:
    """A pass that reports itself on stderr before it runs (for big models)."""

    def __init__(self, inner: Any, step: int, total: int, args: argparse.Namespace) -> None:
        self.inner, self.step, self.total, self.args = inner, step, total, args
        self.name = inner.name

    def run(self, program: Any) -> Any:
        _progress(self.args, f"  [{self.step}/{self.total}] {self.name}")
        return self.inner.run(program)


def _lower(args: argparse.Namespace, reference: Any) -> Any:
    import fqlower
    from fqlower.engine.pipeline import Pipeline
    from fqlower.pt2e import is_pt2e

    pipeline = fqlower.pipeline_for(reference.module)  # PT2E passes for what convert_pt2e returns
    if is_pt2e(reference.module):
        _progress(args, "a PT2E reference graph (quantized_decomposed ops): lowering to onednn int8 kernels")
    nodes = len(reference.module.graph.nodes)
    _progress(args, f"lowering {nodes} nodes through {len(pipeline.names)} passes")
    if nodes >= LARGE_MODEL_NODES:
        passes = pipeline.leaves()
        pipeline = Pipeline(pipeline.name, tuple(_Announced(p, i, len(passes), args) for i, p in enumerate(passes, 1)))
    validate = getattr(args, "validate", False)
    if validate and reference.example_inputs is None:
        args.command_parser.error("--validate needs example inputs: a maps file with example_inputs, or --model with --input-shape/--inputs")
    started = time.perf_counter()
    lowering = fqlower.lower(
        reference.module,
        reference.qconfig_map,
        reference.node_name_to_scope,
        keep_original_weights=getattr(args, "keep_original_weights", False),
        pipeline=pipeline,
        validate=validate,
        example_inputs=reference.example_inputs if validate else None,
    )
    _progress(args, f"  done in {time.perf_counter() - started:.2f} s")
    return lowering


def _lowering_from(args: argparse.Namespace, reference: Any, log_path: str | None) -> Any:
    """Replay `log_path` if given, else lower."""
    import fqlower

    if not log_path:
        return _lower(args, reference)
    log = _read_log(Path(log_path))
    _progress(args, f"replaying {len(log.changes)} changes from {log_path}")
    return fqlower.replay(
        reference.module,
        log,
        reference.qconfig_map,
        reference.node_name_to_scope,
        keep_original_weights=getattr(args, "keep_original_weights", False),
        trusted=getattr(args, "trusted", False),
    )


def _print_summary(lowering: Any, reference_nodes: int) -> None:
    from fqlower.explain.records import format_caution

    changes = Counter(change.step for change in lowering.log.changes)
    skips = Counter(skip.step for skip in lowering.log.skips)
    timings = list(lowering.timings)
    print(f"{'step':>4}  {'pass':<28} {'rewrites':>8} {'skips':>6} {'ms':>8}")
    for step, record in enumerate(lowering.log.header.passes):
        ms = f"{1e3 * timings[step][1]:.2f}" if step < len(timings) and timings[step][0] == record.name else "-"
        print(f"{step:>4}  {record.name:<28} {changes[step]:>8} {skips[step]:>6} {ms:>8}")
    print(f"reference: {reference_nodes} nodes -> lowered: {len(lowering.module.graph.nodes)} nodes")
    for caution in lowering.log.cautions:
        print(format_caution(caution))
    if lowering.validation is not None:
        counts = lowering.validation.counts()
        print("validated as lowered: " + ", ".join(f"{number} {status}" for status, number in counts.items()))
        for verdict in lowering.validation.refuted:
            print(f"  not lowered: {verdict.change.rule} at {verdict.change.anchor!r}: {verdict.reason}")


def _write_outputs(lowering: Any, output: str | None, log: str | None = None) -> None:
    if output:
        save_module(lowering.module, Path(output))
        print(f"wrote {output} (lowered module)")
    if log:
        with _writing(Path(log), "change log") as path:
            path.write_text(lowering.log.dumps(), encoding="utf-8")
        print(f"wrote {log} ({len(lowering.log.changes)} changes, {len(lowering.log.skips)} skips)")
