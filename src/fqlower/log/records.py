"""The change log's records: `Change`, `Skip`, `Header` and `ChangeLog`, and how each
is written as one JSON line and read back (the format: fqlower.log)."""

from __future__ import annotations

import json
import platform
from typing import Any, Union

import attrs
import torch

from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetMeta, SetModule, SetTarget
from fqlower.log.values import decode, encode
from fqlower.errors import ChangeLogError
from fqlower.ir import FrozenDict
from fqlower.reasons import Code
from fqlower.version import __version__

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
    edit: Edit = kind(**values)
    return edit


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
