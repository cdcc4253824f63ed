"""The `fqlower` command."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _demo(args: argparse.Namespace) -> int:
    import torch

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
    torch.save(lowering.module, out / "lowered.pt")
    (out / "changes.jsonl").write_text(lowering.log.dumps())
    (out / "program.txt").write_text(fqlower.format_program(lowering.program) + "\n")
    print(f"\nsaved to {out.resolve()}/: lowered.pt, changes.jsonl ({len(lowering.log.entries)} entries), program.txt")
    ok = not differences and not mutated
    print("OK" if ok else "MISMATCH")
    return EXIT_OK if ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fqlower", description="Lower FX quantized reference models to native quantized ops.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="quantize, lower and check a built-in example model")
    demo.add_argument("--backend", default="fbgemm", choices=["fbgemm", "x86", "qnnpack"])
    demo.add_argument("--out", default="fqlower-demo", help="folder for the lowered module and change log (default: %(default)s)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fqlower.errors import FqlowerError

    with warnings.catch_warnings():
        # torch.ao.quantization's own notices are not ours to repeat.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        try:
            return args.handler(args)
        except FqlowerError as error:
            if args.debug:
                raise
            print(f"fqlower: error: {error}", file=sys.stderr)
            return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
