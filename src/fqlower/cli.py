"""The `fqlower` command."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _demo(args: argparse.Namespace) -> int:
    import torch

    import fqlower
    from fqlower.compare import state_dict_differences
    from fqlower.examples import demo_inputs, demo_reference_model

    reference = demo_reference_model(args.backend)
    model = reference.module
    started = time.perf_counter()
    program = fqlower.from_fx(model, reference.qconfig_map, reference.node_name_to_scope)
    imported = time.perf_counter()
    rebuilt = fqlower.to_fx(program)
    emitted = time.perf_counter()

    print(f"Built-in example: DemoNet, static int8 ({args.backend}) reference model")
    print(f"  {len(program)} nodes, {len(program.modules)} modules, {len(program.constants)} constants\n")
    print(fqlower.format_program(program))
    inputs = demo_inputs(seed=1)
    with torch.no_grad():
        same_outputs = torch.equal(model(*inputs), rebuilt(*inputs))
    same_state = not state_dict_differences(model, rebuilt)
    same_fingerprint = fqlower.fingerprint(fqlower.from_fx(rebuilt, reference.qconfig_map, reference.node_name_to_scope))
    print("\nRound trip GraphModule -> Program -> GraphModule:")
    print(f"  from_fx {1e3 * (imported - started):.1f} ms, to_fx {1e3 * (emitted - imported):.1f} ms")
    print(f"  outputs bit-identical:   {same_outputs}")
    print(f"  state_dict identical:    {same_state}")
    print(f"  fingerprint              {fqlower.fingerprint(program)}")
    print(f"  fingerprint after trip   {same_fingerprint}")
    ok = same_outputs and same_state and same_fingerprint == fqlower.fingerprint(program)
    print("OK" if ok else "MISMATCH")
    return EXIT_OK if ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fqlower", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run fqlower on a built-in example model")
    demo.add_argument("--backend", default="fbgemm", choices=["fbgemm", "x86", "qnnpack", "onednn"])
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fqlower.errors import FqlowerError

    with warnings.catch_warnings():
        # torch.ao.quantization's own deprecation notices are not ours to repeat.
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
