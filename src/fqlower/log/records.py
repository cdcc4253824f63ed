"""The change log's records: `Change`, `Skip`, `Header` and `ChangeLog`, and the JSON
layout of each: one object per line, its fields by name (`pass_name` as "pass", a pass
record as a [name, fingerprint] pair), entries and edits tagged with their kind
(`"kind": "change"`, `"edit": "set_args"`). The format: fqlower.log."""

from __future__ import annotations

import json
import platform
from typing import Any, Union

import attrs
import torch
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from fqlower.engine.edits import AddNode, Edit, MoveNode, RemoveNode, ReplaceUses, SetArgs, SetConstant, SetMeta, SetModule, SetTarget
from fqlower.log.codec import CONVERTER, list_field, validation_message, value_field
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


@attrs.frozen
class Caution:
    """Something about the lowered model a user must know although every rewrite is
    right: `check` found it at `nodes`, and `message` says what and what to do.

    (`recipe-engine`: ops calibrated for 8-bit activations, lowered for an engine
    whose kernels can saturate on them; fqlower.cautions.)"""

    check: str
    nodes: tuple[str, ...]
    message: str
    # as every entry, how the lowering relates to torch's: a caution's lowering is torch's
    code: Code = Code.AS_TORCH


Entry = Union[Change, Skip, Caution]


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

    @property
    def cautions(self) -> tuple[Caution, ...]:
        return tuple(entry for entry in self.entries if isinstance(entry, Caution))

    def dumps(self) -> str:
        """The log as JSON Lines (canonical: byte-identical for equal logs)."""
        lines = [_dump_json({"kind": "header", **CONVERTER.unstructure(self.header)})]
        lines += [_dump_json(CONVERTER.unstructure(entry, Entry)) for entry in self.entries]
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
        header = _header_from(records[0])
        entries = tuple(_structured(record, Entry, number) for number, record in enumerate(records[1:], start=2))
        return cls(header=header, entries=entries)


# --- the JSON layout of each record (fqlower.log.codec holds the converter) ---------------

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
_ENTRY_KINDS: dict[str, type] = {"change": Change, "skip": Skip, "caution": Caution}


def _layout(cls: type, **fields: Any) -> None:
    """Write and read `cls` as a JSON object of its fields, with these overrides."""
    attrs.resolve_types(cls)
    CONVERTER.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, CONVERTER, **fields))
    CONVERTER.register_structure_hook(cls, make_dict_structure_fn(cls, CONVERTER, **fields))


def _tagged_union(union: Any, tag: str, kinds: dict[str, type], what: str) -> None:
    """Members of `union` carry their kind under `tag`; an unknown kind is named as such."""
    kind_of = {cls: kind for kind, cls in kinds.items()}
    configure_tagged_union(union, CONVERTER, tag_generator=kind_of.__getitem__, tag_name=tag)
    structure = CONVERTER.get_structure_hook(union)

    def structure_known(data: Any, _: Any) -> Any:
        if not isinstance(data, dict):
            raise ChangeLogError(f"must be a JSON object with its {what}, got {data!r}")
        kind = data.get(tag)
        if not isinstance(kind, str) or kind not in kinds:
            raise ChangeLogError(f"unknown {what} {kind!r}")
        return structure(data, union)

    CONVERTER.register_structure_hook(union, structure_known)


def _read_code(value: Any, _: Any) -> Code:
    if not isinstance(value, str) or value not in Code._value2member_map_:
        known = ", ".join(code.value for code in Code)
        raise ChangeLogError(f"unknown reason code {value!r} (known: {known})")
    return Code(value)


def _read_names(value: Any, _: Any) -> FrozenDict:
    if not (isinstance(value, dict) and all(isinstance(item, str) for item in value.values())):
        raise ChangeLogError(f"must map names to strings, got {value!r}")
    return FrozenDict(value)


def _read_pass_record(value: Any, _: Any) -> PassRecord:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(item, str) for item in value)):
        raise ChangeLogError(f"must be a [pass name, fingerprint] pair, got {value!r}")
    return PassRecord(*value)


_names = override(unstruct_hook=dict, struct_hook=_read_names)
_RENAMED = {"pass_name": "pass"}
CONVERTER.register_structure_hook(Code, _read_code)
CONVERTER.register_unstructure_hook(PassRecord, lambda record: [record.name, record.fingerprint])
CONVERTER.register_structure_hook(PassRecord, _read_pass_record)
for _edit in _EDIT_KINDS.values():
    _layout(_edit, **{field.name: value_field() for field in attrs.fields(_edit) if field.type not in (str, str | None)})
_tagged_union(Edit, "edit", _EDIT_KINDS, "edit kind")
_layout(Change, pass_name=override(rename=_RENAMED["pass_name"]), bindings=_names, edits=list_field(tuple[Edit, ...]))
_layout(Skip, pass_name=override(rename=_RENAMED["pass_name"]))
_layout(Caution, nodes=list_field(tuple[str, ...]))
_tagged_union(Entry, "kind", _ENTRY_KINDS, "entry kind")
_layout(Header, versions=_names, passes=list_field(tuple[PassRecord, ...]))


def _header_from(data: Any) -> Header:
    if not isinstance(data, dict) or data.get("kind") != "header":
        raise ChangeLogError("change log line 1 is not a header")
    schema = data.get("schema")
    if type(schema) is int and schema > SCHEMA:
        raise ChangeLogError(
            f"change log has schema {schema!r}; this fqlower reads schema {SCHEMA} and older: upgrade fqlower"
        )
    if type(schema) is not int or schema < 1:
        raise ChangeLogError(f"change log has schema {schema!r}, which no fqlower writes (schemas are 1 to {SCHEMA})")
    header: Header = _structured(data, Header, 1)
    return header


def _structured(data: Any, cls: Any, line: int) -> Any:
    try:
        return CONVERTER.structure(data, cls)
    except Exception as error:  # a field of the wrong type or form, e.g. a broken tensor
        raise ChangeLogError(f"change log line {line}: {validation_message(error, _RENAMED)}") from None


def _dump_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
