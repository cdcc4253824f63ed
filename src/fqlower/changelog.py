"""The change log: what each pass did, as data that replays without matching.

A log is JSON Lines: a header line (schema, versions, pipeline, fingerprints of the
input, after each pass, and of the output) and one line per entry, either a
`Change` (pass, rule, anchor node, bindings, edits) or a `Skip` (pass, rule, node,
reason). Writing is canonical (sorted keys, no spaces), so the same lowering gives
byte-identical logs in any process. Values are written with type tags
(`{"$ref": "x"}`, `{"$tuple": [...]}`, `{"$name": "operator.add"}`, ...) so that
`ChangeLog.loads(log.dumps()) == log`.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import io
import json
import math
import platform
from collections.abc import Iterator, Sequence
from typing import Any, Union

import attrs
import torch

from fqlower.edits import (
    AddNode,
    Edit,
    MoveNode,
    RemoveNode,
    ReplaceUses,
    SetArgs,
    SetConstant,
    SetMeta,
    SetModule,
    SetTarget,
)
from fqlower.draft import Draft
from fqlower.errors import ChangeLogError, FqlowerError, ReplayMismatch
from fqlower.fingerprint import describe, digest_cache, fingerprint, node_line
from fqlower.ir import Build, FrozenDict, ListArg, Node, Original, Program, ProgramView, Ref
from fqlower.names import qualified_name, resolve
from fqlower.reasons import Code
from fqlower.version import __version__
from fqlower.vocabulary import model_vocabulary, names_in, pass_vocabulary

SCHEMA = 1


@attrs.frozen
class Change:
    """One rewrite: `rule` of pass number `step` matched at `anchor` and made `edits`."""

    step: int
    pass_name: str
    rule: str
    anchor: str
    bindings: FrozenDict  # role -> node name, e.g. {"dequantize": "dq_1", "quantize": "q_2"}
    edits: tuple[Edit, ...]
    # structural hashes of the subgraph the rule matched (before) and produced (after);
    # replay checks both. Not part of equality: they follow from the rest and the program.
    matched: str = attrs.field(default="", eq=False)
    produced: str = attrs.field(default="", eq=False)
    # how the rewrite relates to torch's lowering (fqlower.reasons) and, for a departure, why
    code: Code = Code.AS_TORCH
    reason: str = ""


@attrs.frozen
class Skip:
    """A near miss: `rule` of pass number `step` looked at `node` and left it, because
    `reason`; `code` says how that relates to torch's lowering (fqlower.reasons)."""

    step: int
    pass_name: str
    rule: str
    node: str
    reason: str
    code: Code = Code.AS_TORCH


Entry = Union[Change, Skip]


@attrs.frozen
class PassRecord:
    name: str
    fingerprint: str  # of the program after this pass


def _versions() -> FrozenDict:
    return FrozenDict(
        (("fqlower", __version__), ("torch", torch.__version__.split("+")[0]), ("python", platform.python_version()))
    )


@attrs.frozen
class Header:
    input: str
    output: str
    passes: tuple[PassRecord, ...] = ()
    versions: FrozenDict = attrs.field(factory=_versions)
    schema: int = SCHEMA


@attrs.frozen
class ChangeLog:
    """Header plus entries; `changes` and `skips` filter the entries."""

    header: Header
    entries: tuple[Entry, ...] = ()

    @property
    def changes(self) -> tuple[Change, ...]:
        return tuple(entry for entry in self.entries if isinstance(entry, Change))

    @property
    def skips(self) -> tuple[Skip, ...]:
        return tuple(entry for entry in self.entries if isinstance(entry, Skip))

    def dumps(self) -> str:
        """The log as JSON Lines (canonical: byte-identical for equal logs)."""
        lines = [_dump_json(_header_json(self.header))]
        lines += [_dump_json(_entry_json(entry)) for entry in self.entries]
        return "\n".join(lines) + "\n"

    @classmethod
    def loads(cls, text: str) -> ChangeLog:
        """Read a log written by `dumps`; raises ChangeLogError on anything else."""
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise ChangeLogError("change log is empty: expected a header line")
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ChangeLogError(f"change log line {number} is not valid JSON: {error.msg}") from None
        try:
            header = _header_from(records[0])
            entries = tuple(_entry_from(record, number) for number, record in enumerate(records[1:], start=2))
        except ChangeLogError:
            raise
        except Exception as error:  # any value of the wrong type or form, e.g. a broken tensor
            raise ChangeLogError(f"change log is malformed: {type(error).__name__}: {error}") from None
        return cls(header=header, entries=entries)


# --- values ----------------------------------------------------------------------------------

_TORCH_ENUMS = (torch.dtype, torch.memory_format, torch.layout, torch.qscheme)


def encode(value: Any) -> Any:
    """A JSON-ready, type-tagged form of an IR value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Ref):
        return {"$ref": value.name}
    if isinstance(value, torch.Size):  # before tuple: a torch.Size is one
        return {"$size": list(value)}
    if isinstance(value, tuple):
        items = [encode(item) for item in value]
        if hasattr(value, "_fields"):
            return {"$namedtuple": qualified_name(type(value)), "items": items}
        return {"$tuple": items}
    if isinstance(value, ListArg):
        return {"$list": [encode(item) for item in value.items]}
    if isinstance(value, FrozenDict):
        return {"$dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, slice):
        return {"$slice": [encode(value.start), encode(value.stop), encode(value.step)]}
    if value is Ellipsis:
        return {"$ellipsis": True}
    if isinstance(value, _TORCH_ENUMS):
        return {"$torch": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"$device": str(value)}
    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        buffer = io.BytesIO()
        torch.save(value.detach(), buffer)
        return {"$tensor": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(value, Original):
        return {"$original": value.path}
    if isinstance(value, Build):
        return {"$build": value.factory, "args": encode(value.args), "kwargs": encode(value.kwargs)}
    if isinstance(value, Node):
        return {"$node": _node_json(value)}
    if isinstance(value, (torch.nn.Module, torch.nn.Parameter, torch._C.ScriptObject)):
        raise ChangeLogError(
            f"cannot write {type(value).__name__} into a change log: passes must describe new "
            "modules and weights as Build specs"
        )
    if isinstance(value, type) or callable(value):
        return {"$name": qualified_name(value)}
    raise ChangeLogError(f"cannot write a value of type {type(value).__name__} into a change log: {value!r}")


def decode(data: Any) -> Any:
    """The IR value `encode` wrote."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        raise ChangeLogError(f"untagged list in change log: {data!r}")
    if not isinstance(data, dict) or not data:
        raise ChangeLogError(f"unexpected value in change log: {data!r}")
    tag = next(key for key in data if key.startswith("$")) if any(k.startswith("$") for k in data) else None
    payload: Any = data.get(tag) if tag else None
    if tag == "$float":
        return float(payload)
    if tag == "$ref":
        return Ref(payload)
    if tag == "$tuple":
        return tuple(decode(item) for item in payload)
    if tag == "$namedtuple":
        cls = resolve(payload)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise ChangeLogError(f"{payload!r} in change log is not a namedtuple type")
        return cls(*(decode(item) for item in data["items"]))
    if tag == "$list":
        return ListArg(tuple(decode(item) for item in payload))
    if tag == "$dict":
        return FrozenDict((decode(key), decode(item)) for key, item in payload)
    if tag == "$slice":
        return slice(*(decode(item) for item in payload))
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$torch":
        return _torch_enum(payload)
    if tag == "$device":
        return torch.device(payload)
    if tag == "$size":
        return torch.Size(payload)
    if tag == "$tensor":
        return torch.load(io.BytesIO(base64.b64decode(payload)), weights_only=True)
    if tag == "$original":
        return Original(payload)
    if tag == "$build":
        args, kwargs = (decode(data[key]) if key in data else None for key in ("args", "kwargs"))
        if not isinstance(payload, str) or not isinstance(args, tuple) or not isinstance(kwargs, FrozenDict):
            raise ChangeLogError(f"malformed spec in change log: {data!r} (a factory name, an args tuple, a kwargs dict)")
        return Build(payload, args, kwargs)
    if tag == "$node":
        return _node_from(payload)
    if tag == "$name":
        return resolve(payload)
    raise ChangeLogError(f"unknown value tag in change log: {data!r}")


def _torch_enum(name: str) -> Any:
    value = getattr(torch, name, None)
    if not isinstance(value, _TORCH_ENUMS):
        raise ChangeLogError(f"unknown torch constant {name!r} in change log")
    return value


def _node_json(node: Node) -> dict[str, Any]:
    meta = {}
    for key, item in node.meta.items():
        try:
            meta[key] = encode(item)
        except ChangeLogError:
            continue  # meta that cannot be written (tracer values) is not part of replay
    return {
        "name": node.name,
        "op": node.op,
        "target": encode(node.target),
        "args": encode(node.args),
        "kwargs": encode(node.kwargs),
        "type": encode(node.type),
        "meta": meta,
    }


def _node_from(data: dict[str, Any]) -> Node:
    return Node(
        name=data["name"],
        op=data["op"],
        target=decode(data["target"]),
        args=decode(data["args"]),
        kwargs=decode(data["kwargs"]),
        meta=FrozenDict((key, decode(item)) for key, item in data["meta"].items()),
        type=decode(data["type"]),
    )


# --- records ---------------------------------------------------------------------------------

_EDIT_KINDS: dict[str, type] = {
    "add_node": AddNode,
    "move_node": MoveNode,
    "remove_node": RemoveNode,
    "set_args": SetArgs,
    "set_target": SetTarget,
    "replace_uses": ReplaceUses,
    "set_meta": SetMeta,
    "set_module": SetModule,
    "set_constant": SetConstant,
}
_KIND_OF_EDIT = {cls: kind for kind, cls in _EDIT_KINDS.items()}


def _edit_json(edit: Edit) -> dict[str, Any]:
    fields = {field.name: encode(getattr(edit, field.name)) for field in attrs.fields(type(edit))}
    return {"edit": _KIND_OF_EDIT[type(edit)], **fields}


def _edit_from(data: dict[str, Any]) -> Edit:
    kind = _EDIT_KINDS.get(str(data.get("edit")))
    if kind is None:
        raise ChangeLogError(f"unknown edit kind {data.get('edit')!r} in change log")
    values = {}
    for field in attrs.fields(kind):
        if field.name in data:
            values[field.name] = decode(data[field.name])
        elif field.default is attrs.NOTHING:
            raise ChangeLogError(f"edit {data['edit']!r} lacks its field {field.name!r}")
    return kind(**values)


def _entry_json(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, Change):
        return {
            "kind": "change",
            "step": entry.step,
            "pass": entry.pass_name,
            "rule": entry.rule,
            "anchor": entry.anchor,
            "bindings": dict(entry.bindings),
            "edits": [_edit_json(edit) for edit in entry.edits],
            "matched": entry.matched,
            "produced": entry.produced,
            "code": entry.code.value,
            "reason": entry.reason,
        }
    return {
        "kind": "skip",
        "step": entry.step,
        "pass": entry.pass_name,
        "rule": entry.rule,
        "node": entry.node,
        "reason": entry.reason,
        "code": entry.code.value,
    }


def _code_from(data: dict[str, Any], line: int) -> Code:
    """The entry's reason code; logs written before codes existed have none (as-torch)."""
    value = data.get("code", Code.AS_TORCH.value)
    if not isinstance(value, str) or value not in Code._value2member_map_:
        known = ", ".join(code.value for code in Code)
        raise ChangeLogError(f"change log line {line}: unknown reason code {value!r} (known: {known})")
    return Code(value)


def _entry_from(data: dict[str, Any], line: int) -> Entry:
    kind = data.get("kind")
    if kind in ("change", "skip") and not (isinstance(data.get("step"), int) and not isinstance(data["step"], bool)):
        raise ChangeLogError(f"change log line {line}: step must be an integer, got {data.get('step')!r}")
    if kind == "change":
        return Change(
            step=data["step"],
            pass_name=data["pass"],
            rule=data["rule"],
            anchor=data["anchor"],
            bindings=FrozenDict(data["bindings"]),
            edits=tuple(_edit_from(edit) for edit in data["edits"]),
            matched=data.get("matched", ""),
            produced=data.get("produced", ""),
            code=_code_from(data, line),
            reason=_text(data.get("reason", ""), "reason", line),
        )
    if kind == "skip":
        return Skip(
            step=data["step"],
            pass_name=data["pass"],
            rule=data["rule"],
            node=data["node"],
            reason=_text(data["reason"], "reason", line),
            code=_code_from(data, line),
        )
    raise ChangeLogError(f"change log line {line}: unknown entry kind {kind!r}")


def _text(value: Any, field: str, line: int) -> str:
    if not isinstance(value, str):
        raise ChangeLogError(f"change log line {line}: {field} must be a string, got {value!r}")
    return value


def _header_json(header: Header) -> dict[str, Any]:
    return {
        "kind": "header",
        "schema": header.schema,
        "versions": dict(header.versions),
        "input": header.input,
        "output": header.output,
        "passes": [[record.name, record.fingerprint] for record in header.passes],
    }


def _header_from(data: dict[str, Any]) -> Header:
    if not isinstance(data, dict) or data.get("kind") != "header":
        raise ChangeLogError("change log line 1 is not a header")
    schema = data.get("schema")
    if type(schema) is int and schema > SCHEMA:
        raise ChangeLogError(
            f"change log has schema {schema!r}; this fqlower reads schema {SCHEMA} and older: upgrade fqlower"
        )
    if type(schema) is not int or schema < 1:
        raise ChangeLogError(f"change log has schema {schema!r}, which no fqlower writes (schemas are 1 to {SCHEMA})")
    passes = data["passes"]
    well_formed = (
        isinstance(data["input"], str)
        and isinstance(data["output"], str)
        and isinstance(passes, list)
        and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in passes)
        and isinstance(data["versions"], dict)
    )
    if not well_formed:
        raise ChangeLogError("change log header is malformed: input/output must be fingerprints, passes [name, fingerprint] pairs")
    return Header(
        input=data["input"],
        output=data["output"],
        passes=tuple(PassRecord(name, digest) for name, digest in data["passes"]),
        versions=FrozenDict(data["versions"]),
        schema=schema,
    )


def _dump_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


# --- recording a change: hashes and provenance --------------------------------------------------

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
    or the model calls already (`fqlower.vocabulary`): replaying a log runs what it
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
