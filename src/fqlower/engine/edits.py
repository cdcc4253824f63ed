"""The closed set of edits: what a rewrite returns, as data.

    (AddNode(q_fc, after="fc"), ReplaceUses("q_out", "q_fc"), RemoveNode("q_out"))

`fqlower.engine.draft` applies them (`Draft.apply`, `apply`): the only code that changes a
program.
"""

from __future__ import annotations

from typing import Any, Union

import attrs

from fqlower.ir import FrozenDict, Node


@attrs.frozen
class AddNode:
    """Insert `node` right before the node named `before`, or after the node named
    `after` (and after anything added after it before). Give exactly one of them."""

    node: Node
    after: str | None = None
    before: str | None = None


@attrs.frozen
class MoveNode:
    """Move a node to just after the node named `after` (and what was added after it)."""

    name: str
    after: str


@attrs.frozen
class RemoveNode:
    """Delete a node nobody uses."""

    name: str


@attrs.frozen
class SetArgs:
    """Replace a node's args and kwargs."""

    name: str
    args: tuple[Any, ...]
    kwargs: FrozenDict = FrozenDict()


@attrs.frozen
class SetTarget:
    """Change what a node calls: its op and target."""

    name: str
    op: str
    target: Any


@attrs.frozen
class ReplaceUses:
    """Make every user of `old` read `new` instead (`new` itself excepted)."""

    old: str
    new: str


@attrs.frozen
class SetMeta:
    """Set one entry of a node's meta (not part of fingerprints)."""

    name: str
    key: str
    value: Any


@attrs.frozen
class SetModule:
    """Put a module, or a `Build` spec the emitter materialises, at `path`."""

    path: str
    module: Any


@attrs.frozen
class SetConstant:
    """Put a value (tensor, scalar, packed weight or `Build` spec) at get_attr target `attr`."""

    attr: str
    value: Any


Edit = Union[AddNode, MoveNode, RemoveNode, SetArgs, SetTarget, ReplaceUses, SetMeta, SetModule, SetConstant]
EDIT_TYPES: tuple[type, ...] = (AddNode, MoveNode, RemoveNode, SetArgs, SetTarget, ReplaceUses, SetMeta, SetModule, SetConstant)
