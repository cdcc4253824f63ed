"""Replaying a change log: its edits without matching, one draft per recorded
pass, every hash and fingerprint checked, and only callables a pass writes or the
model calls unless the log is trusted."""

from __future__ import annotations



from fqlower.log.records import Change, ChangeLog
from fqlower.log.recording import _subgraph_hash, record_into
from fqlower.engine.draft import Draft
from fqlower.errors import FqlowerError, ReplayMismatch
from fqlower.log.fingerprint import digest_cache, fingerprint
from fqlower.ir import Program
from fqlower.log.vocabulary import model_vocabulary, names_in, pass_vocabulary

def _replay_change(draft: Draft, change: Change, number: int, allowed: frozenset[str] | None) -> None:
    label = f"change {number} ({change.pass_name}/{change.rule} at {change.anchor!r})"
    unknown = sorted({name for name in names_in(change.edits) if name not in allowed}) if allowed is not None else ()
    if unknown:
        raise ReplayMismatch(
            f"{label} names {', '.join(unknown)}, which no fqlower pass writes and the model does not call: "
            "a change log is code when replayed, so fqlower refuses it (pass trusted=True for a log you trust)"
        )
    try:
        matched = _subgraph_hash(draft, [change.anchor, *change.bindings.values()])
    except Exception as error:
        raise ReplayMismatch(f"{label} is malformed: {type(error).__name__}: {error}") from error
    if change.matched and matched != change.matched:
        raise ReplayMismatch(
            f"{label}: the subgraph it matched hashes to {matched}, the log says {change.matched}",
            node=change.anchor if change.anchor in draft else None,
            program=draft.freeze(),
        )
    try:
        replayed = record_into(draft, change, matched)
    except FqlowerError as error:
        raise ReplayMismatch(f"{label} does not apply: {error.message}", node=change.anchor, program=draft.freeze()) from error
    except Exception as error:  # a value of the wrong type inside an edit
        raise ReplayMismatch(f"{label} is malformed: {type(error).__name__}: {error}") from error
    if change.produced and replayed.produced != change.produced:
        raise ReplayMismatch(f"{label}: the subgraph it produced hashes to {replayed.produced}, the log says {change.produced}")


# --- replay ----------------------------------------------------------------------------------


def apply_log(program: Program, log: ChangeLog, *, trusted: bool = False) -> Program:
    """Apply a log's edits without matching, checking every recorded fingerprint.

    Unless `trusted`, every callable the log names must be one a lowering pass writes
    or the model calls already (`fqlower.log.vocabulary`): replaying a log runs what it
    names. Logs of your own passes that introduce other callables need `trusted=True`.
    """
    with digest_cache():
        return _apply_log(program, log, trusted)


def _apply_log(program: Program, log: ChangeLog, trusted: bool) -> Program:
    found = fingerprint(program)
    if found != log.header.input:
        raise ReplayMismatch(
            f"the log was recorded on a different program: input fingerprint {found[:12]} "
            f"!= the log's {log.header.input[:12]}"
        )
    changes_by_step: dict[int, list[Change]] = {}
    for change in log.changes:
        changes_by_step.setdefault(change.step, []).append(change)
    unknown_steps = set(changes_by_step) - set(range(len(log.header.passes)))
    if unknown_steps:
        raise ReplayMismatch(f"the log has changes for pass steps {sorted(unknown_steps)} that its header does not list")
    number = 0
    allowed = None if trusted else pass_vocabulary() | model_vocabulary(program)
    for step, record in enumerate(log.header.passes):
        draft = Draft(program)  # one per recorded pass, as when the log was recorded
        for change in changes_by_step.get(step, ()):
            number += 1
            _replay_change(draft, change, number, allowed)
        program = draft.freeze()
        found = fingerprint(program)
        if found != record.fingerprint:
            raise ReplayMismatch(
                f"after pass {step} ({record.name}) the program's fingerprint {found[:12]} "
                f"!= the log's {record.fingerprint[:12]}"
            )
    found = fingerprint(program)
    if found != log.header.output:
        raise ReplayMismatch(f"output fingerprint {found[:12]} != the log's {log.header.output[:12]}")
    return program
