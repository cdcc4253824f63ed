"""The argument parser and `main`."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from fqlower.cli.commands import _bisect_command, _demo, _diff_command, _explain_command, _lower_command, _replay_command, _validate_command
from fqlower.cli.inputs import _shape
from fqlower.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, QCONFIGS, _error, _one_line
from fqlower.validation.samples import DEFAULT_SAMPLES

def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given after the command, these set the value; absent, the top level's stays
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress on stderr")
    return common


def _reference_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "reference",
        nargs=None if required else "?",
        metavar="REFERENCE",
        help="a torch.save'd quantized reference GraphModule (e.g. written by `fqlower lower --save-reference`); "
        "it is unpickled, so load only files you trust",
    )
    parser.add_argument("--maps", metavar="MAPS", help="torch.save'd dict with qconfig_map and node_name_to_scope (default: REFERENCE's stem + .maps.pt, if present)")


def _input_arguments(parser: argparse.ArgumentParser, which: str) -> None:
    """--input-shape / --inputs / --seed: the example inputs a command runs on."""
    parser.add_argument("--input-shape", type=_shape, action="append", metavar="SHAPE", help=f"shape of a random input {which}; repeat for several inputs")
    parser.add_argument("--inputs", metavar="FILE", help="torch.save'd inputs (a tensor or a tuple)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fqlower",
        description="Lower FX quantized reference models to native quantized ops.",
        epilog="Exit codes: 0 ok, 1 error or failed check, 2 usage. `fqlower COMMAND --help` for each command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]

    demo = commands.add_parser("demo", parents=common, help="quantize, lower and check a built-in example model")
    demo.add_argument("--backend", default="fbgemm", choices=["fbgemm", "x86", "qnnpack"])
    demo.add_argument("--out", default="fqlower-demo", help="folder for the lowered module and change log (default: %(default)s)")
    demo.set_defaults(handler=_demo)

    lower = commands.add_parser(
        "lower",
        parents=common,
        help="lower a saved reference model, or quantize a float model and lower it",
        description="Lower a saved reference model (REFERENCE [--maps]), or quantize a float model "
        "(--model, --qconfig, --input-shape) to a reference model and lower that. "
        "Prints rewrites and skips per pass and the output fingerprint.",
    )
    _reference_arguments(lower, required=False)
    lower.add_argument("--model", metavar="PATH.py[:NAME]", help="a Python file defining a module class or a model() factory")
    lower.add_argument("--qconfig", choices=QCONFIGS, help="quantization recipe for --model (default: fbgemm)")
    lower.add_argument("--pt2e", action="store_true", help="quantize --model with PT2E (torch.export, torchao's X86InductorQuantizer) and lower to onednn int8 kernels")
    _input_arguments(lower, "for --model, e.g. 1,3,32,32")
    lower.add_argument("--save-reference", metavar="REF.pt", help="also write --model's reference model to REF.pt and its maps to REF.maps.pt")
    lower.add_argument("-o", "--output", metavar="OUT.pt", help="write the lowered module (torch.save; torch.load(..., weights_only=False) reads it)")
    lower.add_argument("--log", metavar="LOG.jsonl", help="write the change log")
    lower.add_argument("--keep-original-weights", action="store_true", help="as torch's keep_original_weights")
    lower.add_argument("--validate", action="store_true", help="check every rewrite on its own subgraph as it is made; leave a refuted one float")
    lower.set_defaults(handler=_lower_command, command_parser=lower)

    replay = commands.add_parser(
        "replay",
        parents=common,
        help="re-derive a lowering from its change log, without matching",
        description="Apply LOG's changes to REFERENCE, checking every fingerprint; exits 1 if the log does not fit.",
    )
    _reference_arguments(replay)
    replay.add_argument("log", metavar="LOG", help="change log written by `fqlower lower --log`")
    replay.add_argument("-o", "--output", metavar="OUT.pt", help="write the lowered module")
    replay.add_argument("--keep-original-weights", action="store_true", help="as torch's keep_original_weights")
    replay.add_argument(
        "--trusted",
        action="store_true",
        help="replay a log naming callables that no lowering pass writes (logs of your own passes); "
        "replaying runs what a log names, so only for logs you trust",
    )
    replay.set_defaults(handler=_replay_command, command_parser=replay)

    explain = commands.add_parser(
        "explain",
        parents=common,
        help="say what the lowering did to each node, and why it left others alone",
        description="Explain the lowering of REFERENCE (replayed from --log if given, else lowered now).",
    )
    _reference_arguments(explain)
    explain.add_argument("--log", metavar="LOG", help="explain this change log instead of lowering again")
    explain.set_defaults(handler=_explain_command, command_parser=explain)

    bisect = commands.add_parser(
        "bisect",
        parents=common,
        help="find the changes that move the outputs by more than a tolerance",
        description="Replay LOG's changes on REFERENCE in halves to find those after which the outputs "
        "differ from the reference model's by more than --tolerance. Exits 1 if it finds any.",
    )
    _reference_arguments(bisect)
    bisect.add_argument("log", metavar="LOG", help="change log to bisect")
    bisect.add_argument("--tolerance", type=float, required=True, metavar="T", help="largest acceptable output difference")
    _input_arguments(bisect, "(default: the maps file's example inputs)")
    bisect.set_defaults(handler=_bisect_command, command_parser=bisect)

    validate = commands.add_parser(
        "validate",
        parents=common,
        help="check every change on its own subgraph: validated, refuted or unchecked",
        description="Lower REFERENCE (or take --log's changes) and check each change: the subgraph it matched "
        "and the one it produced, run on the same inputs, must agree within one output step. Prints a table "
        "per rule; exits 1 if a change is refuted, printing the inputs that show it.",
    )
    _reference_arguments(validate)
    validate.add_argument("--log", metavar="LOG", help="validate this change log's changes instead of lowering again")
    validate.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, metavar="N", help="input draws per change (default: %(default)s)")
    validate.add_argument("--reproducers", metavar="DIR", help="write each refutation as DIR/<rule>-<node>.py (runs with torch alone) and its .pt")
    _input_arguments(validate, "(default: the maps file's example inputs)")
    validate.set_defaults(handler=_validate_command, command_parser=validate)

    diff = commands.add_parser(
        "diff",
        parents=common,
        help="show what the pipeline, or one pass, changed",
        description="Unified diff of the printed program before and after the whole pipeline, or one pass; "
        "optionally a Graphviz picture with the rewritten nodes highlighted.",
    )
    _reference_arguments(diff)
    diff.add_argument("--pass", dest="pass_name", metavar="NAME", help="diff around this pass (a name, or a step number as in change logs); default: input -> output")
    diff.add_argument("-U", "--unified", type=int, default=3, metavar="N", help="lines of context (default: %(default)s)")
    diff.add_argument("--dot", metavar="FILE.dot", help="write a Graphviz DOT picture of the result, changes highlighted")
    diff.add_argument("--svg", metavar="FILE.svg", help="render that picture to SVG (needs Graphviz's `dot` program)")
    diff.add_argument("--context", type=int, metavar="HOPS", help="in the picture, only nodes within HOPS edges of a change")
    diff.set_defaults(handler=_diff_command, command_parser=diff)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    from fqlower.errors import FqlowerError

    with warnings.catch_warnings():
        # torch.ao.quantization's own notices are not ours to repeat.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        try:
            return args.handler(args)
        except SystemExit as exit_:  # a usage error found after parsing
            return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            print("fqlower: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except FqlowerError as error:
            if args.debug:
                raise
            _error(str(error))
            return EXIT_FAILED
        except Exception as error:
            if args.debug:
                raise
            _error(f"{_one_line(error)} (an fqlower bug? run with --debug for the traceback)")
            return EXIT_FAILED

