"""One function per subcommand: demo, lower, replay, explain, bisect, diff."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fqlower.cli.files import _load_reference, _read_log, _writing, save_module, save_reference
from fqlower.cli.inputs import _inputs, _reference_from_float
from fqlower.cli.lowering import _lower, _lowering_from, _print_summary, _write_outputs
from fqlower.cli.pt2e import pt2e_demo
from fqlower.cli.output import EXIT_FAILED, EXIT_OK, _failure, _progress

def _demo(args: argparse.Namespace) -> int:
    import fqlower
    from fqlower.compare import ModelSnapshot, lowering_differences
    from fqlower.examples import demo_inputs, demo_reference_model
    from fqlower.reference import torch_lowering

    print(f"Quantizing the built-in DemoNet with FX (static int8, {args.backend}): prepare, calibrate on generated data, convert to reference")
    reference = demo_reference_model(args.backend)
    model = reference.module
    snapshot = ModelSnapshot.of(model)

    started = time.perf_counter()
    lowering = fqlower.lower(model, reference.qconfig_map, reference.node_name_to_scope)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    expected = torch_lowering(reference)
    torch_seconds = time.perf_counter() - started

    changes = Counter(change.pass_name for change in lowering.log.changes)
    skips = Counter(skip.pass_name for skip in lowering.log.skips)
    print(f"\n{'pass':<28} {'rewrites':>8} {'skips':>6} {'ms':>8}")
    for name, seconds in lowering.timings:
        print(f"{name:<28} {changes[name]:>8} {skips[name]:>6} {1e3 * seconds:>8.2f}")
    reasons = Counter(skip.reason for skip in lowering.log.skips)
    if reasons:
        print("\nleft alone, and why:")
        for reason, count in reasons.most_common():
            print(f"  {count} x {reason}")

    differences = []
    for seed in (1, 2):
        differences += lowering_differences(expected, lowering.module, demo_inputs(seed))
    mutated = snapshot.differences(model)
    print(f"\nreference model: {len(model.graph.nodes)} nodes -> lowered: {len(lowering.module.graph.nodes)} nodes")
    print(f"fqlower {1e3 * ours_seconds:.1f} ms (incl. change log and fingerprints), torch {1e3 * torch_seconds:.1f} ms")
    print(f"equal to torch's lowering (graph, module types, state_dict, outputs): {not differences}")
    for difference in differences:
        print(f"  {difference}")
    print(f"caller's model unchanged: {not mutated}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_module(lowering.module, out / "lowered.pt")  # torch.save, readable by torch.load
    (out / "changes.jsonl").write_text(lowering.log.dumps())
    (out / "program.txt").write_text(fqlower.format_program(lowering.program) + "\n")
    print(f"\nsaved to {out.resolve()}/: lowered.pt, changes.jsonl ({len(lowering.log.entries)} entries), program.txt")
    ok = not differences and not mutated
    ok = pt2e_demo() and ok
    print("OK" if ok else "MISMATCH")
    return EXIT_OK if ok else EXIT_FAILED


def _lower_command(args: argparse.Namespace) -> int:
    parser = args.command_parser
    if bool(args.reference) == bool(args.model):
        parser.error("give either REFERENCE (a saved reference model) or --model PATH.py[:NAME]")
    if args.model:
        if args.pt2e and args.qconfig:
            parser.error("--pt2e quantizes with torchao's X86InductorQuantizer: it takes no --qconfig")
        if not (args.input_shape or args.inputs):
            parser.error("--model needs example inputs: --input-shape 1,3,32,32 (repeat for more inputs) or --inputs FILE")
        reference = _reference_from_float(args)
        if args.save_reference:
            maps = save_reference(reference, Path(args.save_reference))
            print(f"wrote {args.save_reference} (reference model) and {maps} (its maps and example inputs)")
    else:
        for flag, value in (("--qconfig", args.qconfig), ("--pt2e", args.pt2e), ("--input-shape", args.input_shape), ("--inputs", args.inputs), ("--save-reference", args.save_reference)):
            if value:
                parser.error(f"{flag} goes with --model, not with a saved REFERENCE")
        reference = _load_reference(args)
    lowering = _lower(args, reference)
    _print_summary(lowering, len(reference.module.graph.nodes))
    print(f"fingerprint: {lowering.log.header.output}")
    _write_outputs(lowering, args.output, args.log)
    return EXIT_OK


def _replay_command(args: argparse.Namespace) -> int:
    reference = _load_reference(args)
    lowering = _lowering_from(args, reference, args.log)
    print(f"replayed {len(lowering.log.changes)} changes of {args.log}: every fingerprint matches")
    print(f"reference: {len(reference.module.graph.nodes)} nodes -> lowered: {len(lowering.module.graph.nodes)} nodes")
    print(f"fingerprint: {lowering.log.header.output}")
    _write_outputs(lowering, args.output)
    return EXIT_OK


def _explain_command(args: argparse.Namespace) -> int:
    from fqlower.explain import explain

    reference = _load_reference(args)
    lowering = _lowering_from(args, reference, args.log)
    print(explain(lowering, reference=reference.module).format())
    return EXIT_OK


def _validate_command(args: argparse.Namespace) -> int:
    from fqlower.validation import validate
    from fqlower.validation.reproducer import describe_inputs

    if args.samples < 1:
        args.command_parser.error("--samples must be >= 1")
    reference = _load_reference(args)
    inputs = _inputs(args, reference.example_inputs)
    if inputs is None:
        raise _failure(
            "validate needs inputs: --input-shape 1,3,32,32, --inputs FILE, or a maps file with "
            "example_inputs (as `fqlower lower --save-reference` writes)"
        )
    log = _read_log(Path(args.log)) if args.log else None
    validation = validate(reference.module, reference.qconfig_map, reference.node_name_to_scope, inputs, log=log, samples=args.samples)
    print(validation.format())
    for verdict in validation.refuted:
        if verdict.counterexample is not None:
            print(f"  counterexample for {verdict.change.rule} at {verdict.change.anchor!r}: {describe_inputs(verdict.inputs, verdict.counterexample)}")
            if args.reproducers:
                print(f"    reproducer: {_write_reproducer(verdict, Path(args.reproducers))}")
    counts = validation.counts()
    print(", ".join(f"{number} {status}" for status, number in counts.items()))
    return EXIT_FAILED if validation.refuted else EXIT_OK


def _write_reproducer(verdict: Any, folder: Path) -> Path:
    from fqlower.validation.reproducer import write_reproducer

    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{verdict.change.rule}-{verdict.change.anchor}")
    script = folder / f"{stem}.py"
    script.write_text(write_reproducer(verdict, folder / f"{stem}.pt"))
    return script


def _bisect_command(args: argparse.Namespace) -> int:
    from fqlower.bisect import bisect

    if args.tolerance < 0:
        args.command_parser.error("--tolerance must be >= 0")
    reference = _load_reference(args)
    log = _read_log(Path(args.log))
    inputs = _inputs(args, reference.example_inputs)
    if inputs is None:
        raise _failure(
            "bisect needs inputs: --input-shape 1,3,32,32, --inputs FILE, or a maps file with "
            "example_inputs (as `fqlower lower --save-reference` writes)"
        )

    def progress(tests_run: int, current_size: int) -> None:
        _progress(args, f"  test {tests_run}: narrowing {current_size} changes")

    _progress(args, f"bisecting {len(log.changes)} changes of {args.log} (tolerance {args.tolerance:g})")
    result = bisect(
        reference.module,
        log,
        inputs,
        tolerance=args.tolerance,
        qconfig_map=reference.qconfig_map,
        node_name_to_scope=reference.node_name_to_scope,
        progress=progress,
    )
    print(result.format())
    return EXIT_FAILED if result.culprits else EXIT_OK


def _diff_command(args: argparse.Namespace) -> int:
    from fqlower.diff import (
        around,
        diff_dot,
        diff_text,
        node_changes,
        render_svg,
        snapshots,
    )

    reference = _load_reference(args)
    _progress(args, f"running the pipeline on {len(reference.module.graph.nodes)} nodes, keeping every pass's program")
    steps = snapshots(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    if args.pass_name is None:
        before, after = steps[0][1], steps[-1][1]
        before_name, after_name = "input", "output"
    else:
        which: str | int = int(args.pass_name) if args.pass_name.isdigit() else args.pass_name
        before, after = around(steps, which)
        step = which if isinstance(which, int) else [name for name, _ in steps[1:]].index(which)
        before_name, after_name = f"before {steps[step + 1][0]} (step {step})", f"after {steps[step + 1][0]} (step {step})"
    changes = node_changes(before, after)
    _progress(args, f"{before_name} -> {after_name}: {len(changes.added)} added, {len(changes.changed)} changed, {len(changes.removed)} removed")
    text = diff_text(before, after, before_name=before_name, after_name=after_name, context=args.unified)
    sys.stdout.write(text)
    if not text:
        _progress(args, "no differences")
    if args.dot or args.svg:
        dot = diff_dot(before, after, context=args.context, title=f"{before_name} -> {after_name}")
        if args.dot:
            with _writing(Path(args.dot), "DOT file") as path:
                path.write_text(dot, encoding="utf-8")
            _progress(args, f"wrote {args.dot}")
        if args.svg:
            svg = render_svg(dot)
            with _writing(Path(args.svg), "SVG file") as path:
                path.write_bytes(svg)
            _progress(args, f"wrote {args.svg}")
    return EXIT_OK
