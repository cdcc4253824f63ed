"""fqlower's errors: one base class, a few subclasses by what went wrong.

Every message names the node, path or change involved. An error raised while a
program is at hand carries it, and its text shows the printed IR a few lines either
side of the node at fault (as JAX does), so a failure reads like a diff hunk, not a
repr wall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fqlower.ir import Program

CONTEXT_LINES = 3


class FqlowerError(Exception):
    """Base class of every error fqlower raises on purpose."""

    def __init__(self, message: str, *, node: str | None = None, program: Program | None = None):
        super().__init__(message)
        self.message = message
        self.node = node
        self.program = program

    def __str__(self) -> str:
        if self.program is None or self.node is None:
            return self.message
        from fqlower.ir import format_program_around

        excerpt = format_program_around(self.program, self.node, CONTEXT_LINES)
        if not excerpt:
            return self.message
        return f"{self.message}\n\n{excerpt}"

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
