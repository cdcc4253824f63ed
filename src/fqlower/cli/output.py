"""What the command prints: progress and errors on stderr; exit codes."""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130

QCONFIGS = ("fbgemm", "x86", "qnnpack", "onednn", "dynamic", "fp16")
MAPS_KEYS = ("qconfig_map", "node_name_to_scope", "example_inputs")
LARGE_MODEL_NODES = 2000
"""Lowering a model with at least this many nodes reports each pass on stderr."""


def _progress(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _error(message: str) -> None:
    first, *rest = message.splitlines() or [""]
    print(f"fqlower: error: {first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}" if line else "", file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _failure(message: str) -> Exception:
    from fqlower.errors import FqlowerError

    return FqlowerError(message)
