"""fqlower's errors: one base class, a few subclasses by what went wrong.

Every message names the node, path or change involved. An error raised while a
program is at hand carries it, and its text shows the printed IR a few lines either
side of the node at fault (as JAX does), so a failure reads like a diff hunk, not a
repr wall.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

CONTEXT_LINES = 3
# How an error prints the program around its node: fqlower.ir installs its printer
# when it loads (the IR imports the errors; the errors import nothing of fqlower).
Excerpt = Callable[[Any, str, int], str]
_excerpt: Excerpt | None = None


def set_excerpt_printer(printer: Excerpt) -> None:
    global _excerpt
    _excerpt = printer


STACK_TRACE_FRAMES = 2  # the innermost frames of a node's FX stack trace outside the tracer
TRACER_FRAME = f"{os.sep}torch{os.sep}fx{os.sep}"


class FqlowerError(Exception):
    """Base class of every error fqlower raises on purpose."""

    def __init__(
        self, message: str, *, node: str | None = None, program: Any = None, stack_trace: str | None = None
    ):
        # `program`: the fqlower.ir.Program at hand, shown around `node` (Any: this module
        # sits below the IR)
        super().__init__(message)
        self.message = message
        self.node = node
        self.program = program
        self.stack_trace = stack_trace

    def __str__(self) -> str:
        if self.node is None:
            return self.message
        parts = [self.message]
        printer = _excerpt
        excerpt = printer(self.program, self.node, CONTEXT_LINES) if printer is not None and self.program is not None else ""
        if excerpt:
            parts.append(excerpt)
        source = self.source()
        if source:
            parts.append(f"%{self.node} was traced from:\n{source}")
        return "\n\n".join(parts)

    def source(self) -> str | None:
        """The last frames of the FX stack trace of the node at fault, when FX recorded one."""
        trace = self.stack_trace
        if trace is None and self.program is not None and self.node is not None and self.node in self.program:
            trace = self.program.node(self.node).meta.get("stack_trace")
        if not isinstance(trace, str) or not trace.strip():
            return None
        frames: list[list[str]] = []
        for line in trace.rstrip().splitlines():
            if line.lstrip().startswith('File "') or not frames:
                frames.append([line.strip()])
            else:
                frames[-1].append("    " + line.strip())
        users = [frame for frame in frames if TRACER_FRAME not in frame[0]] or frames
        return "\n".join("  " + line for frame in users[-STACK_TRACE_FRAMES:] for line in frame)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (multiprocessing, pytest-xdist) without the program.
        return (_rebuild_error, (type(self), self.message, self.node))


def _rebuild_error(cls: type[FqlowerError], message: str, node: str | None) -> FqlowerError:
    return cls(message, node=node)


class IRError(FqlowerError):
    """An edit or a program that would break the IR's invariants (dangling
    reference, removal of a used node, duplicate name, missing module or constant)."""


class UnsupportedInput(FqlowerError):
    """The model or maps given to fqlower are not something it can work on."""


class ReplayMismatch(FqlowerError):
    """A change log does not fit the program it is applied to."""


class ChangeLogError(FqlowerError):
    """A change log cannot be written or read (corrupt, newer schema, unknown name)."""


class EmitError(FqlowerError):
    """A program cannot be turned back into a GraphModule."""
