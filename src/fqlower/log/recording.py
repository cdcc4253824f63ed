"""Recording a change into a draft: its edits plus provenance meta, and the
structural hashes of the subgraph it matched and of what it produced."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator, Sequence

import attrs

from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, SetArgs, SetConstant, SetModule, SetTarget
from fqlower.log.records import Change
from fqlower.engine.draft import Draft
from fqlower.log.fingerprint import describe, node_line
from fqlower.ir import FrozenDict, Program, ProgramView

PROVENANCE = "fqlower_provenance"


def _touched(edits: tuple[Edit, ...]) -> list[str]:
    names: dict[str, None] = {}
    for edit in edits:
        if isinstance(edit, AddNode):
            names[edit.node.name] = None
        elif isinstance(edit, (SetArgs, SetTarget, MoveNode)):
            names[edit.name] = None
    return list(names)


def _subgraph_hash(program: ProgramView, names: list[str], tables: Sequence[tuple[str, str]] = ()) -> str:
    digest = hashlib.sha256()
    present = sorted((name for name in set(names) if name in program), key=program.position)
    for name in present:
        digest.update(node_line(program.node(name), program))
    for table, path in tables:
        value = (program.modules if table == "module" else program.constants).get(path)
        digest.update(f"{table}:{path}={describe(value, program)!r}".encode())
    return digest.hexdigest()[:16]


def _tables(edits: tuple[Edit, ...]) -> list[tuple[str, str]]:
    return [("module", e.path) if isinstance(e, SetModule) else ("constant", e.attr) for e in edits if isinstance(e, (SetModule, SetConstant))]


def _provenance(before: Draft, change: Change) -> FrozenDict:
    """The meta every node the change added or altered (and did not remove) gets:
    which change, and the reference nodes (of the input program) it came from."""
    sources: set[str] = set()
    for name in (change.anchor, *change.bindings.values()):
        if name in before:
            node = before.node(name)
            earlier = node.meta.get(PROVENANCE)
            sources.update(earlier["from"] if earlier else (name,))
    # from a dict: FrozenDict takes its fast path (a tuple of pairs goes through an ABC check)
    return FrozenDict({"pass": change.pass_name, "rule": change.rule, "anchor": change.anchor, "from": tuple(sorted(sources))})


_HASHING: contextvars.ContextVar[bool] = contextvars.ContextVar("fqlower_change_hashes", default=True)


@contextlib.contextmanager
def without_change_hashes() -> Iterator[None]:
    """Leave `matched`/`produced` empty inside the block: for runs whose log nobody sees
    (`lower_to_native_backend` returns only the module)."""
    token = _HASHING.set(False)
    try:
        yield
    finally:
        _HASHING.reset(token)


def record_into(draft: Draft, change: Change, matched: str | None = None) -> Change:
    """Apply a change's edits (plus its provenance) to `draft`, as one batch, and
    fill in its structural hashes: `matched` over the nodes it matched before the
    batch (given when the caller has just computed it), `produced` over the nodes,
    modules and constants it wrote after."""
    hashing = _HASHING.get()
    if hashing and matched is None:
        matched = _subgraph_hash(draft, [change.anchor, *change.bindings.values()])
    draft.apply(change.edits, mark=(PROVENANCE, _provenance(draft, change)))
    if not hashing:
        return change
    produced = _subgraph_hash(draft, _touched(change.edits), _tables(change.edits))
    return attrs.evolve(change, matched=matched or "", produced=produced)


def record_change(before: Program, change: Change) -> tuple[Program, Change]:
    """`record_into` a draft of `before`: the program after the change, and the change."""
    draft = Draft(before)
    change = record_into(draft, change)
    return draft.freeze(), change


def record_all(draft: Draft, changes: tuple[Change, ...]) -> tuple[Change, ...]:
    """`record_into` of each change in turn. Without hashes, changes that only remove
    nodes go in as one batch: they write no provenance and nothing in between is hashed."""
    if not _HASHING.get() and all(type(edit) is RemoveNode for change in changes for edit in change.edits):
        draft.apply([edit for change in changes for edit in change.edits])
        return changes
    return tuple(record_into(draft, change) for change in changes)
