"""Change logs: exact JSON round trip of every edit kind, replay, and refusal."""

from __future__ import annotations

import json
import math
import operator

import pytest
import torch
import torch.nn.functional as F
from helpers import call, tiny_program

import fqlower
from fqlower import (
    AddNode,
    Build,
    Change,
    ChangeLog,
    ChangeLogError,
    FrozenDict,
    ListArg,
    MoveNode,
    Original,
    Ref,
    RemoveNode,
    ReplaceUses,
    ReplayMismatch,
    SetArgs,
    SetConstant,
    SetModule,
    SetTarget,
    Skip,
    apply,
    apply_log,
)
from fqlower.log import SCHEMA, Header, PassRecord, decode, encode
from fqlower.compare import values_equal

EVERY_EDIT = (
    AddNode(
        fqlower.Node(
            "cat",
            "call_function",
            torch.cat,
            (ListArg((Ref("x"), Ref("x"))),),
            FrozenDict({"dim": -1}),
            meta=FrozenDict({"stack_trace": "File model.py, line 3"}),
        ),
        after="x",
    ),
    AddNode(fqlower.Node("view", "call_method", "view", (Ref("cat"), -1), type=torch.Tensor), after="cat"),
    AddNode(fqlower.Node("early", "call_method", "size", (Ref("x"),)), before="cat"),
    MoveNode("early", after="view"),
    RemoveNode("relu"),
    SetArgs("add", (Ref("fc"), (slice(None, 2, None), Ellipsis)), FrozenDict({"alpha": 0.5, "out": None})),
    SetTarget("add", "call_function", torch.ops.quantized.add),
    ReplaceUses("fc", "cat"),
    SetModule(
        "fc",
        Build(
            "torch.ao.nn.quantized.modules.linear.Linear.from_reference",
            (Original("fc"), 0.125, 3),
            FrozenDict({"dtype": torch.quint8, "device": torch.device("cpu")}),
        ),
    ),
    SetConstant("scale", torch.tensor([1.5, float("nan")])),
    SetConstant("zero_point", 7),
    SetConstant("odd", (float("inf"), -0.0, True, "text", torch.channels_last, torch.per_channel_affine)),
    SetConstant("function", F.linear),
)


def every_edit_log() -> ChangeLog:
    header = Header(input="a" * 64, output="b" * 64, passes=(PassRecord("demo-pass", "c" * 64),))
    entries = (
        Change(0, "demo-pass", "rule", "add", FrozenDict({"dequantize": "dq", "op": "add"}), EVERY_EDIT),
        Skip(0, "demo-pass", "rule", "relu", "qconfig is None"),
    )
    return ChangeLog(header, entries)


def test_every_edit_kind_survives_json_exactly():
    log = every_edit_log()
    text = log.dumps()
    again = ChangeLog.loads(text)
    assert again.header == log.header
    assert again.skips == log.skips
    (change,), (original,) = again.changes, log.changes
    for read, written in zip(change.edits, original.edits):
        if isinstance(written, SetConstant) and isinstance(written.value, torch.Tensor):
            assert values_equal(torch.nan_to_num(read.value), torch.nan_to_num(written.value))
        else:
            assert read == written
    assert change.edits[0].node.meta == {"stack_trace": "File model.py, line 3"}
    assert again.dumps() == text


def test_dumps_is_canonical_json_lines():
    text = every_edit_log().dumps()
    lines = text.splitlines()
    assert len(lines) == 3 and text.endswith("\n")
    header = json.loads(lines[0])
    assert header["kind"] == "header" and header["schema"] == SCHEMA
    assert set(header["versions"]) == {"fqlower", "torch", "python"}
    for line in lines:
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5, "s", (1, (2,)), ListArg((1,)), FrozenDict({1: "int key"}), slice(1, None), torch.float16,
     torch.device("cpu"), torch.Size([2, 3]), Ref("x"), Original("a.b"), operator.getitem, torch.ops.quantized.add.default],
)
def test_values_round_trip(value):
    assert decode(json.loads(json.dumps(encode(value)))) == value


def test_nan_is_written_as_valid_json():
    assert math.isnan(decode(json.loads(json.dumps(encode(float("nan")), allow_nan=False))))


def test_torch_modules_cannot_be_logged():
    with pytest.raises(ChangeLogError, match="Build specs"):
        encode(torch.nn.ReLU())


def test_local_functions_cannot_be_logged():
    def local(x):
        return x

    with pytest.raises(ChangeLogError, match="cannot name"):
        encode(local)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ('{"kind":"header","schema":1', "line 1 is not valid JSON"),
        ('{"kind":"change"}', "not a header"),
        ('{"kind":"header","schema":99,"versions":{},"input":"","output":"","passes":[]}', "schema 99"),
        ('{"kind":"header","schema":0,"versions":{},"input":"","output":"","passes":[]}', "schema 0, which no fqlower writes"),
        ('{"kind":"header","schema":-1,"versions":{},"input":"","output":"","passes":[]}', "schema -1, which no fqlower writes"),
        ('{"kind":"header","schema":true,"versions":{},"input":"","output":"","passes":[]}', "schema True, which no fqlower writes"),
        ('{"kind":"header","schema":1.0,"versions":{},"input":"","output":"","passes":[]}', "schema 1.0, which no fqlower writes"),
        ('{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}\n{"kind":"nope"}', "unknown entry kind"),
        ('{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}\n{"kind":"skip","step":0}', "line 2: pass: required field missing; rule: required field missing"),
        (
            '{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}\n'
            '{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},'
            '"edits":[{"edit":"set_constant","attr":"f","value":{"$name":"torch.no_such_function"}}]}',
            "cannot resolve 'torch.no_such_function'",
        ),
        (
            '{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}\n'
            '{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[{"edit":"explode"}]}',
            "unknown edit kind",
        ),
    ],
    ids=["empty", "truncated", "no-header", "newer-schema", "schema-0", "schema-negative", "schema-bool", "schema-float", "unknown-entry", "missing-fields", "unknown-callable", "unknown-edit"],
)
def test_bad_logs_are_refused_with_a_precise_message(text, message):
    with pytest.raises(ChangeLogError, match=message):
        ChangeLog.loads(text)


def hand_written_log(program: fqlower.Program) -> str:
    """relu(fc(x)) + x  ->  neg(fc(x)) + x, written as a user would write the JSON."""
    after = apply(
        program,
        [AddNode(call("neg", torch.neg, Ref("fc")), "relu"), ReplaceUses("relu", "neg"), RemoveNode("relu")],
    )
    start, end = fqlower.fingerprint(program), fqlower.fingerprint(after)
    return "\n".join(
        [
            '{"kind":"header","schema":1,"versions":{"fqlower":"0.1.0"},'
            f'"input":"{start}","output":"{end}","passes":[["swap-relu","{end}"]]}}',
            '{"kind":"change","step":0,"pass":"swap-relu","rule":"relu-to-neg","anchor":"relu","bindings":{},"edits":['
            '{"edit":"add_node","after":"relu","node":{"$node":{"name":"neg","op":"call_function",'
            '"target":{"$name":"torch.neg"},"args":{"$tuple":[{"$ref":"fc"}]},"kwargs":{"$dict":[]},"type":null,"meta":{}}}},'
            '{"edit":"replace_uses","old":"relu","new":"neg"},'
            '{"edit":"remove_node","name":"relu"}]}',
        ]
    )


def test_replay_of_a_hand_written_log():
    program = tiny_program()
    replayed = apply_log(program, ChangeLog.loads(hand_written_log(program)), trusted=True)
    assert "relu" not in replayed and replayed.node("add").args == (Ref("neg"), Ref("x"))
    x = torch.randn(2, 4)
    expected = torch.neg(program.modules["fc"](x)) + x + program.constants["offset"]
    assert values_equal(fqlower.to_fx(replayed)(x), expected)


def test_replay_refuses_another_model():
    program = tiny_program()
    log = ChangeLog.loads(hand_written_log(program))
    other = apply(program, [SetArgs("add", (Ref("relu"), 1.0))])
    with pytest.raises(ReplayMismatch, match="recorded on a different program"):
        apply_log(other, log)


def test_replay_refuses_a_log_whose_pass_fingerprint_is_wrong():
    program = tiny_program()
    log = ChangeLog.loads(hand_written_log(program))
    tampered = ChangeLog(
        Header(log.header.input, log.header.output, (PassRecord("swap-relu", "0" * 64),)), log.entries
    )
    with pytest.raises(ReplayMismatch, match=r"after pass 0 \(swap-relu\)"):
        apply_log(program, tampered, trusted=True)


def test_replay_refuses_edits_that_do_not_apply_and_names_the_change():
    program = tiny_program()
    log = ChangeLog.loads(hand_written_log(program).replace('"name":"relu"}]', '"name":"fc"}]'))
    with pytest.raises(ReplayMismatch, match=r"change 1 \(swap-relu/relu-to-neg at 'relu'\) does not apply") as raised:
        apply_log(program, log, trusted=True)
    assert "still used" in raised.value.message


def test_regression_a_log_cannot_make_loading_call_arbitrary_functions(capsys):
    # found by the fuzzer: "$namedtuple" called whatever it named while loading
    record = {"$namedtuple": "builtins.print", "items": ["called"]}
    with pytest.raises(ChangeLogError, match="not a namedtuple type"):
        decode(record)
    assert capsys.readouterr().out == ""


def test_regression_a_non_integer_step_is_refused():
    text = (
        '{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}\n'
        '{"kind":"skip","step":[],"pass":"p","rule":"r","node":"n","reason":"x"}'
    )
    with pytest.raises(ChangeLogError, match="step: must be an integer"):
        ChangeLog.loads(text)


def test_an_untrusted_log_naming_a_callable_no_pass_writes_is_refused():
    program = tiny_program()
    log = ChangeLog.loads(hand_written_log(program))
    with pytest.raises(ReplayMismatch, match=r"change 1 .* names torch\.neg, which no fqlower pass writes and the model does not call"):
        apply_log(program, log)


def test_an_untrusted_log_cannot_smuggle_a_factory_into_a_module_spec():
    # A `$build` spec is called when the lowered model is built: a log with the right
    # fingerprints could otherwise make fqlower call anything importable.
    program = tiny_program()
    spec = Build("builtins.exec", ("import os",))
    after = apply(program, [SetModule("fc", spec)])
    start, end = fqlower.fingerprint(program), fqlower.fingerprint(after)
    text = "\n".join(
        [
            '{"kind":"header","schema":1,"versions":{},'
            f'"input":"{start}","output":"{end}","passes":[["evil","{end}"]]}}',
            '{"kind":"change","step":0,"pass":"evil","rule":"evil","anchor":"fc","bindings":{},"edits":['
            '{"edit":"set_module","path":"fc","module":{"$build":"builtins.exec","args":{"$tuple":["import os"]},"kwargs":{"$dict":[]}}}]}',
        ]
    )
    log = ChangeLog.loads(text)
    with pytest.raises(ReplayMismatch, match="names builtins.exec"):
        apply_log(program, log)
    assert fqlower.fingerprint(apply_log(program, log, trusted=True)) == end  # the log itself is well-formed



@pytest.mark.parametrize(
    "spec",
    [
        {"$build": None, "args": {"$tuple": []}, "kwargs": {"$dict": []}},
        {"$build": [], "args": {"$tuple": []}, "kwargs": {"$dict": []}},
        {"$build": "torch.neg", "args": 3, "kwargs": {"$dict": []}},
        {"$build": "torch.neg", "args": {"$tuple": []}},
    ],
    ids=["factory-null", "factory-list", "args-not-a-tuple", "kwargs-missing"],
)
def test_regression_malformed_specs_are_refused_while_loading(spec):
    # found by the 10,000-input fuzz run: a `$build` of null or [] reached replay's
    # allow-list check and raised TypeError
    with pytest.raises(ChangeLogError, match="malformed spec in change log"):
        decode(spec)
