"""Mutations of change logs: truncate, flip, reorder lines, change the schema,
rename callables, retype values. See test_fuzz.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import attrs
from hypothesis import strategies as st
from fuzz_graph import Draw
from fuzz_inputs import PrintsByLine, numbered
from fuzz_subject import CASE_IDS, pick, undamaged_log


# --- damaged logs ------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class Truncate:
    at: int

    def __repr__(self) -> str:
        return f"truncate at byte {self.at}"

    def apply(self, text: str) -> str:
        return text[: self.at]

    @staticmethod
    def draw(draw: Draw, text: str) -> Truncate:
        return Truncate(draw(st.integers(0, max(len(text) - 1, 0))))


FLIP_CHARS = "0123456789abcdefxyzAZ_$.,:;{}[]\"\\ -+eE\té\x00\x0c"


@attrs.frozen(repr=False)
class Flip:
    at: int
    char: str

    def __repr__(self) -> str:
        return f"replace the character at {self.at} by {self.char!r}"

    def apply(self, text: str) -> str:
        at = min(self.at, len(text) - 1)
        return text[:at] + self.char + text[at + 1 :] if text else text

    @staticmethod
    def draw(draw: Draw, text: str) -> Flip:
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        chars = [c for c in FLIP_CHARS if not text or c != text[at]]
        return Flip(at, pick(draw, chars))


@attrs.frozen(repr=False)
class Lines:
    how: str  # drop | duplicate | swap | move to end | blank line | trailing spaces | leading spaces | crlf
    first: int
    second: int = 0

    NULL = ("blank line", "trailing spaces", "leading spaces", "crlf")

    def __repr__(self) -> str:
        where = f"lines {self.first} and {self.second}" if self.how == "swap" else f"line {self.first}"
        return f"{self.how}: {where} (1-based)"

    def apply(self, text: str) -> str:
        lines = text.split("\n")
        ending = lines.pop() if lines and lines[-1] == "" else None
        if not lines:
            return text
        i, j = (self.first - 1) % len(lines), (self.second - 1) % len(lines)
        if self.how == "drop":
            del lines[i]
        elif self.how == "duplicate":
            lines.insert(i, lines[i])
        elif self.how == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif self.how == "move to end":
            lines.append(lines.pop(i))
        elif self.how == "blank line":
            lines.insert(i, "   ")
        elif self.how == "trailing spaces":
            lines[i] += " \t "
        elif self.how == "leading spaces":
            lines[i] = "  " + lines[i]
        elif self.how == "crlf":
            lines = [line + "\r" for line in lines]
        if ending is not None:
            lines.append(ending)
        return "\n".join(lines)

    @staticmethod
    def draw(draw: Draw, text: str) -> Lines:
        count = max(text.count("\n"), 1)
        how = pick(draw, ("drop", "duplicate", "swap", "move to end", *Lines.NULL))
        return Lines(how, draw(st.integers(1, count)), draw(st.integers(1, count)))


SCHEMAS = (0, 2, -1, 99, "1", 1.5, None, True)


@attrs.frozen(repr=False)
class Schema:
    value: Any

    def __repr__(self) -> str:
        return f"header schema -> {self.value!r}"

    def apply(self, text: str) -> str:
        header, sep, rest = text.partition("\n")
        try:
            record = json.loads(header)
        except ValueError:
            return text
        if not isinstance(record, dict):
            return text
        record["schema"] = self.value
        return json.dumps(record, sort_keys=True, separators=(",", ":")) + sep + rest

    @staticmethod
    def draw(draw: Draw, text: str) -> Schema:
        return Schema(pick(draw, SCHEMAS))


NAMES = ("torch.no_such_op", "operator.no_such_function", "no_such_module.at_all", "", "torch", "operator.mul", "torch.relu", "math.pi")
_NAME_FIELD = re.compile(r'"\$(name|build)":"((?:[^"\\]|\\.)*)"')


@attrs.frozen(repr=False)
class Rename:
    occurrence: int
    name: str

    def __repr__(self) -> str:
        return f"qualified name #{self.occurrence} ($name or $build) -> {self.name!r}"

    def apply(self, text: str) -> str:
        found = list(_NAME_FIELD.finditer(text))
        if not found:
            return text
        match = found[self.occurrence % len(found)]
        return text[: match.start(2)] + self.name + text[match.end(2) :]

    @staticmethod
    def draw(draw: Draw, text: str) -> Rename:
        return Rename(draw(st.integers(0, 50)), pick(draw, NAMES))


DAMAGES = (Truncate, Flip, Flip, Lines, Lines, Schema, Rename)


class DamagedLog(PrintsByLine):
    def __init__(self, case: str, damages: tuple[Any, ...], text: str):
        self.case, self.damages, self.text = case, damages, text

    @property
    def null(self) -> bool:
        """Whitespace only: the log reads the same."""
        return all(isinstance(d, Lines) and d.how in Lines.NULL for d in self.damages)

    def __repr__(self) -> str:
        return numbered(f"log of {self.case} with {len(self.damages)} damage(s):", self.damages)



@st.composite
def damaged_logs(draw: Draw) -> DamagedLog:
    case = pick(draw, CASE_IDS)
    text = undamaged_log(case)[0]
    damages = []
    for _ in range(draw(st.integers(1, 3))):
        damage = pick(draw, DAMAGES).draw(draw, text)
        text = damage.apply(text)
        damages.append(damage)
    return DamagedLog(case, tuple(damages), text)


JSON_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    "",
    "x",
    [],
    ["x"],
    {},
    {"$ref": ["x"]},
    {"$ref": "no_such_node"},
    {"$device": "cpux"},
    {"$tensor": "AAAA"},
    {"$float": "nan"},
    {"$torch": "no_such_dtype"},
    {"$namedtuple": "no.such.type", "items": []},
    {"$unknown": 1},
)


def json_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a JSON value, the value itself first."""
    yield path
    if isinstance(value, dict):
        for key in sorted(value):
            yield from json_paths(value[key], (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*path, index))


def _json_replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _json_replace(value[head], rest, new)}
    items = list(value)
    items[head] = _json_replace(items[head], rest, new)
    return items


@attrs.frozen(repr=False)
class Retype:
    """One JSON value of one line replaced by a value of another type or form."""

    line: int  # 0-based
    path: tuple[Any, ...]
    value: Any

    def __repr__(self) -> str:
        where = "".join(f"[{part!r}]" for part in self.path) or " (the whole record)"
        return f"line {self.line + 1}{where} -> {json.dumps(self.value)}"

    def apply(self, text: str) -> str:
        lines = text.split("\n")
        try:
            record = json.loads(lines[self.line])
        except (ValueError, IndexError):
            return text
        lines[self.line] = json.dumps(_json_replace(record, self.path, self.value), sort_keys=True, separators=(",", ":"))
        return "\n".join(lines)

    @staticmethod
    def draw(draw: Draw, text: str) -> Retype | None:
        lines = text.split("\n")
        readable = []
        for index, line in enumerate(lines):
            try:
                readable.append((index, json.loads(line)))
            except ValueError:
                continue
        if not readable:
            return None
        index, record = pick(draw, readable)
        return Retype(index, pick(draw, list(json_paths(record))), pick(draw, JSON_VALUES))


@st.composite
def retyped_logs(draw: Draw) -> DamagedLog:
    case = pick(draw, CASE_IDS)
    text = undamaged_log(case)[0]
    damages = []
    for _ in range(draw(st.integers(1, 2))):
        damage = Retype.draw(draw, text)
        if damage is None:
            break
        text = damage.apply(text)
        damages.append(damage)
    return DamagedLog(case, tuple(damages), text)
