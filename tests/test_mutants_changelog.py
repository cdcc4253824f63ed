"""Change logs, down to the exact text: tests written against mutmut's survivors
in fqlower.log (`make mutation`, docs/mutation.md).

Each test pins one behaviour the rest of the suite only checked loosely: the exact
message of every refusal (users read them, and a fuzzer keys on them), the exact
JSON a value is written as, the line a bad entry is reported on, and the node and
program a replay error carries for its excerpt; and what recording a change leaves: the
header's versions, structural hashes that change with the subgraph a change matched or
produced and only with it, and the provenance meta `fqlower.lower` puts on each node.
"""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import urllib.parse

import pytest
import torch
from helpers import call, tiny_program

import fqlower
import fqlower.log.recording
from fqlower import (
    AddNode,
    Change,
    ChangeLog,
    ChangeLogError,
    FrozenDict,
    RemoveNode,
    ReplaceUses,
    ReplayMismatch,
    SetArgs,
    apply,
    apply_log,
)
from fqlower.log import Header, PassRecord, decode, encode
from fqlower.reasons import Code

HEADER = '{"kind":"header","schema":1,"versions":{},"input":"","output":"","passes":[]}'


def refusal(text: str) -> str:
    """The message ChangeLog.loads refuses `text` with."""
    with pytest.raises(ChangeLogError) as raised:
        ChangeLog.loads(text)
    return str(raised.value)


def replay_refusal(program: fqlower.Program, log: ChangeLog, *, trusted: bool = True) -> ReplayMismatch:
    with pytest.raises(ReplayMismatch) as raised:
        apply_log(program, log, trusted=trusted)
    return raised.value


def log_of(program: fqlower.Program, *changes: Change, output: str | None = None, passes: int = 1) -> ChangeLog:
    """A log of `changes` on `program` whose fingerprints are right, unless `output` says otherwise."""
    after = program
    for change in changes:
        after = apply(after, change.edits)
    end = fqlower.fingerprint(after)
    records = tuple(PassRecord(f"pass-{step}", end) for step in range(passes))
    return ChangeLog(Header(fqlower.fingerprint(program), output or end, records), changes)


def with_entries(log: ChangeLog, *entries: Change) -> ChangeLog:
    """`log`'s header over other entries: a log tampered with after it was written."""
    return ChangeLog(log.header, entries)


def neg_instead_of_relu(**fields) -> Change:
    """relu(fc(x)) -> neg(fc(x)), as change 0 of pass `swap-relu`."""
    edits = (AddNode(call("neg", torch.neg, fqlower.Ref("fc")), "relu"), ReplaceUses("relu", "neg"), RemoveNode("relu"))
    return Change(**{"step": 0, "pass_name": "swap-relu", "rule": "relu-to-neg", "anchor": "relu",
                     "bindings": FrozenDict(), "edits": edits, **fields})


# --- loading: exact messages and line numbers ------------------------------------------------


def test_an_empty_log_is_refused_with_the_exact_message():
    assert refusal("\n  \n") == "change log is empty: expected a header line"


def test_a_first_line_that_is_not_a_header_is_refused_with_the_exact_message():
    assert refusal('{"kind":"skip"}') == "change log line 1 is not a header"


@pytest.mark.parametrize(
    ("bad", "message"),
    [('"input":3,"output":"","passes":[],"versions":{}', "input: must be a string, got 3"),
     ('"input":"","output":3,"passes":[],"versions":{}', "output: must be a string, got 3"),
     ('"input":"","output":"","passes":"ab","versions":{}', "passes: must be a list, got 'ab'"),
     ('"input":"","output":"","passes":[["only-a-name"]],"versions":{}',
      "passes[0]: must be a [pass name, fingerprint] pair, got ['only-a-name']"),
     ('"input":"","output":"","passes":[["name",7]],"versions":{}', "passes[0]: must be a [pass name, fingerprint] pair, got ['name', 7]"),
     ('"input":"","output":"","passes":[],"versions":[]', "versions: must map names to strings, got []")],
    ids=["input-not-a-string", "output-not-a-string", "passes-not-a-list", "pass-not-a-pair", "pass-fingerprint-not-a-string",
         "versions-not-a-dict"],
)
def test_each_malformed_header_field_alone_is_refused_naming_the_field(bad, message):
    text = '{"kind":"header","schema":1,' + bad + "}"
    assert refusal(text) == f"change log line 1: {message}"


def test_the_header_keeps_the_versions_the_log_was_written_with():
    text = '{"kind":"header","schema":1,"versions":{"fqlower":"0.0.1"},"input":"i","output":"o","passes":[["p","f"]]}'
    header = ChangeLog.loads(text).header
    assert header == Header("i", "o", (PassRecord("p", "f"),), FrozenDict({"fqlower": "0.0.1"}), 1)


@pytest.mark.parametrize("line", [2, 3])
def test_a_bad_entry_is_reported_on_its_own_line(line):
    skip = '{"kind":"skip","step":0,"pass":"p","rule":"r","node":"n","reason":"x"}'
    text = "\n".join([HEADER, *[skip] * (line - 2), '{"kind":"nope"}'])
    assert refusal(text) == f"change log line {line}: unknown entry kind 'nope'"


def test_a_change_with_a_string_step_is_refused_with_the_exact_message():
    change = '{"kind":"change","step":"0","pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[]}'
    assert refusal(HEADER + "\n" + change) == "change log line 2: step: must be an integer, got '0'"


def test_a_skip_with_a_list_step_is_refused_with_the_exact_message():
    skip = '{"kind":"skip","step":[],"pass":"p","rule":"r","node":"n","reason":"x"}'
    assert refusal(HEADER + "\n" + skip) == "change log line 2: step: must be an integer, got []"


def test_an_entry_missing_fields_is_refused_naming_each_by_its_key():
    missing = ("pass", "rule", "node", "reason")
    assert refusal(HEADER + '\n{"kind":"skip","step":0}') == "change log line 2: " + "; ".join(
        f"{key}: required field missing" for key in missing
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [("[1,2]", "must be a JSON object with its entry kind, got [1, 2]"),
     ('{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":{"edit":"remove_node"}}',
      "edits: must be a list, got {'edit': 'remove_node'}"),
     ('{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[3]}',
      "edits[0]: must be a JSON object with its edit kind, got 3"),
     ('{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{"a":1},"edits":[]}',
      "bindings: must map names to strings, got {'a': 1}")],
    ids=["entry-not-an-object", "edits-not-a-list", "edit-not-an-object", "binding-not-a-name"],
)
def test_an_entry_of_the_wrong_shape_is_refused_naming_the_field(entry, message):
    """cattrs would take any iterable for a tuple field and any value for a mapping one."""
    assert refusal(HEADER + "\n" + entry) == f"change log line 2: {message}"


def test_an_unknown_edit_kind_is_refused_with_the_exact_message():
    change = '{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[{"edit":"explode"}]}'
    assert refusal(HEADER + "\n" + change) == "change log line 2: edits[0]: unknown edit kind 'explode'"


def test_an_edit_missing_a_required_field_is_refused_naming_edit_and_field():
    change = '{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[{"edit":"remove_node"}]}'
    assert refusal(HEADER + "\n" + change) == "change log line 2: edits[0].name: required field missing"


def test_a_change_without_hashes_reads_back_with_empty_hashes_not_none():
    change = '{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[]}'
    log = ChangeLog.loads(HEADER + "\n" + change)
    assert (log.changes[0].matched, log.changes[0].produced) == ("", "")
    written = json.loads(log.dumps().splitlines()[1])
    assert (written["matched"], written["produced"]) == ("", "")


# --- values: the exact tagged JSON ---------------------------------------------------------------


def test_finite_floats_are_written_as_plain_json_numbers():
    assert encode(2.5) == 2.5 and encode(-0.0) == 0.0 and math.copysign(1, encode(-0.0)) == -1
    assert encode(float("-inf")) == {"$float": "-inf"}


def test_a_namedtuple_is_written_with_its_type_and_read_back_as_that_type():
    value = urllib.parse.SplitResult("https", "host", "/path", "q=1", "frag")
    written = encode(value)
    assert written == {"$namedtuple": "urllib.parse.SplitResult", "items": ["https", "host", "/path", "q=1", "frag"]}
    read = decode(json.loads(json.dumps(written)))
    assert type(read) is urllib.parse.SplitResult and read == value


def test_a_class_with_fields_that_is_no_tuple_is_not_read_as_a_namedtuple():
    # ast.Name has `_fields` but is not a tuple: calling it is not reading a value
    with pytest.raises(ChangeLogError) as raised:
        decode({"$namedtuple": "ast.Name", "items": []})
    assert str(raised.value) == "'ast.Name' in change log is not a namedtuple type"


def test_a_slice_is_written_with_start_stop_and_step():
    assert encode(slice(1, 10, 2)) == {"$slice": [1, 10, 2]}
    assert decode(encode(slice(1, 10, 2))) == slice(1, 10, 2)


def test_ellipsis_is_written_as_true():
    assert encode(Ellipsis) == {"$ellipsis": True}


def test_a_size_tag_reads_back_as_a_torch_size():
    read = decode({"$size": [2, 3]})
    assert type(read) is torch.Size and read == torch.Size([2, 3])


def test_regression_a_torch_size_round_trips_as_a_torch_size():
    """encode tested tuple before torch.Size (a tuple), so a Size came back a plain tuple."""
    assert type(decode(encode(torch.Size([2, 3])))) is torch.Size
    assert encode(torch.Size([2, 3])) == {"$size": [2, 3]}


def test_a_module_cannot_be_written_and_the_message_says_to_use_a_build_spec():
    with pytest.raises(ChangeLogError) as raised:
        encode(torch.nn.ReLU())
    assert str(raised.value) == (
        "cannot write ReLU into a change log: passes must describe new modules and weights as Build specs"
    )


def test_a_value_of_no_loggable_type_is_refused_naming_type_and_value():
    with pytest.raises(ChangeLogError) as raised:
        encode({1})
    assert str(raised.value) == "cannot write a value of type set into a change log: {1}"


@pytest.mark.parametrize(
    "data, message",
    [
        ([1], "untagged list in change log: [1]"),
        ({}, "unexpected value in change log: {}"),
        ({"a": 1}, "unknown value tag in change log: {'a': 1}"),
        ({"$torch": "no_such_dtype"}, "unknown torch constant 'no_such_dtype' in change log"),
        ({"$torch": "float32x"}, "unknown torch constant 'float32x' in change log"),
    ],
    ids=["untagged-list", "empty-dict", "no-tag", "unknown-torch-constant", "near-miss-torch-constant"],
)
def test_undecodable_values_are_refused_with_the_exact_message(data, message):
    with pytest.raises(ChangeLogError) as raised:
        decode(data)
    assert str(raised.value) == message


class _Payload:
    """Pickles as a call of print: what a tampered `$tensor` could run on load."""

    def __reduce__(self):
        return (print, ("unpickled and ran code",))


def test_a_tensor_payload_is_loaded_weights_only_and_runs_no_code(capsys):
    buffer = io.BytesIO()
    torch.save(_Payload(), buffer)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        decode({"$tensor": base64.b64encode(buffer.getvalue()).decode("ascii")})
    assert capsys.readouterr().out == ""


def test_meta_that_cannot_be_written_is_dropped_and_the_rest_kept():
    node = fqlower.Node("n", "placeholder", "n", meta=FrozenDict({"tracer_value": object(), "note": "kept"}))
    assert encode(node)["$node"]["meta"] == {"note": "kept"}


def test_dumps_refuses_non_json_floats_instead_of_writing_nan():
    log = ChangeLog(Header("i", "o", versions=FrozenDict({"odd": float("nan")})))
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        log.dumps()


# --- replay: exact messages, and the node and program an error carries ---------------------------


def test_replay_of_another_program_names_both_fingerprints_to_12_digits():
    program = tiny_program()
    log = log_of(program, neg_instead_of_relu())
    other = apply(program, [SetArgs("add", (fqlower.Ref("relu"), 1.0))])
    error = replay_refusal(other, log)
    assert error.message == (
        f"the log was recorded on a different program: input fingerprint {fqlower.fingerprint(other)[:12]} "
        f"!= the log's {log.header.input[:12]}"
    )


def test_replay_with_a_wrong_pass_fingerprint_names_both_to_12_digits():
    program = tiny_program()
    log = log_of(program, neg_instead_of_relu())
    tampered = ChangeLog(Header(log.header.input, log.header.output, (PassRecord("swap-relu", "f" * 64),)), log.entries)
    assert replay_refusal(program, tampered).message == (
        f"after pass 0 (swap-relu) the program's fingerprint {log.header.output[:12]} != the log's ffffffffffff"
    )


def test_replay_with_a_wrong_output_fingerprint_names_both_to_12_digits():
    program = tiny_program()
    log = log_of(program, output="e" * 64, passes=0)
    assert replay_refusal(program, log).message == (
        f"output fingerprint {fqlower.fingerprint(program)[:12]} != the log's eeeeeeeeeeee"
    )


def test_changes_for_a_pass_step_the_header_does_not_list_are_refused():
    program = tiny_program()
    log = log_of(program, neg_instead_of_relu(step=5), passes=1)
    assert replay_refusal(program, log).message == "the log has changes for pass steps [5] that its header does not list"


def test_untrusted_replay_lists_every_unknown_callable_and_says_how_to_trust_the_log():
    program = tiny_program()
    edits = (
        AddNode(call("neg", torch.neg, fqlower.Ref("fc")), "relu"),
        AddNode(call("erf", torch.erf, fqlower.Ref("neg")), "neg"),
        ReplaceUses("relu", "erf"),
        RemoveNode("relu"),
    )
    log = log_of(program, neg_instead_of_relu(edits=edits))
    assert replay_refusal(program, log, trusted=False).message == (
        "change 1 (swap-relu/relu-to-neg at 'relu') names torch.erf, torch.neg, which no fqlower pass writes and "
        "the model does not call: a change log is code when replayed, so fqlower refuses it "
        "(pass trusted=True for a log you trust)"
    )


def test_replay_counts_changes_across_the_log_in_its_messages():
    program = tiny_program()
    first = neg_instead_of_relu()
    second = Change(0, "swap-relu", "drop", "fc", FrozenDict(), (RemoveNode("fc"),))
    log = with_entries(log_of(program, first), first, second)
    error = replay_refusal(program, log)
    assert error.message.startswith("change 2 (swap-relu/drop at 'fc') does not apply: ")


def test_an_edit_that_does_not_apply_points_at_the_anchor_in_the_program_before_it():
    program = tiny_program()
    change = neg_instead_of_relu(edits=(RemoveNode("fc"),))
    error = replay_refusal(program, with_entries(log_of(program, neg_instead_of_relu()), change))
    assert error.message.startswith("change 1 (swap-relu/relu-to-neg at 'relu') does not apply: ")
    assert error.node == "relu" and error.program is program


def test_a_change_whose_matched_subgraph_differs_points_at_its_anchor():
    program = tiny_program()
    change = neg_instead_of_relu(matched="0" * 16)
    log = with_entries(log_of(program, neg_instead_of_relu()), change)
    error = replay_refusal(program, log)
    real = fqlower.log.recording._subgraph_hash(program, ["relu"])
    assert error.message == (
        f"change 1 (swap-relu/relu-to-neg at 'relu'): the subgraph it matched hashes to {real}, the log says 0000000000000000"
    )
    assert error.node == "relu" and error.program is program


def test_a_changed_subgraph_whose_anchor_is_gone_points_at_no_node():
    program = tiny_program()
    change = neg_instead_of_relu(anchor="ghost", matched="0" * 16)
    log = with_entries(log_of(program, neg_instead_of_relu()), change)
    error = replay_refusal(program, log)
    assert error.message.startswith("change 1 (swap-relu/relu-to-neg at 'ghost'): the subgraph it matched hashes to ")
    assert error.node is None and error.program is program


def test_a_change_with_unhashable_bindings_is_malformed_naming_the_python_error():
    program = tiny_program()
    change = neg_instead_of_relu(bindings=FrozenDict({"input": ["x"]}))
    log = with_entries(log_of(program, neg_instead_of_relu()), change)
    assert replay_refusal(program, log).message == (
        "change 1 (swap-relu/relu-to-neg at 'relu') is malformed: TypeError: unhashable type: 'list'"
    )


def test_an_edit_holding_a_value_of_the_wrong_type_is_malformed_naming_the_python_error():
    program = tiny_program()
    change = neg_instead_of_relu(edits=(SetArgs("add", 3),))
    log = with_entries(log_of(program, neg_instead_of_relu()), change)
    assert replay_refusal(program, log).message == (
        "change 1 (swap-relu/relu-to-neg at 'relu') is malformed: TypeError: 'int' object is not iterable"
    )


# --- reason codes and reasons of entries -------------------------------------------------------------


def test_an_unknown_reason_code_is_refused_listing_the_known_ones():
    skip = '{"kind":"skip","step":0,"pass":"p","rule":"r","node":"n","reason":"x","code":"nope"}'
    known = ", ".join(code.value for code in Code)
    assert known.startswith("as-torch, ")
    assert refusal(HEADER + "\n" + skip) == f"change log line 2: code: unknown reason code 'nope' (known: {known})"


def test_a_change_with_a_non_string_reason_is_refused_naming_the_field():
    change = '{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},"edits":[],"reason":3}'
    assert refusal(HEADER + "\n" + change) == "change log line 2: reason: must be a string, got 3"


# --- the header's versions -----------------------------------------------------------------------


def test_the_header_records_the_versions_it_was_written_with_torch_without_its_build_suffix(monkeypatch):
    import platform

    monkeypatch.setattr(torch, "__version__", "2.13.0+cu126")  # a local build: `+` and the build after it
    assert dict(Header("i", "o").versions) == {
        "fqlower": fqlower.__version__,
        "torch": "2.13.0",
        "python": platform.python_version(),
    }
    monkeypatch.setattr(torch, "__version__", "2.13.0")  # a release build has no suffix to drop
    assert Header("i", "o").versions["torch"] == "2.13.0"


# --- structural hashes: what `record_change` writes into `matched` and `produced` ----------------------


def reads_of_x(*ops, extra=False) -> fqlower.Program:
    """x; one call_function node per (name, function) of `ops` on x, in that order; an
    unrelated `extra` node (tanh) when asked; output all of them."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    nodes = [graph.create_node("call_function", function, (x,), name=name) for name, function in ops]
    if extra:
        nodes.append(graph.create_node("call_function", torch.tanh, (x,), name="extra"))
    graph.output(tuple(nodes))
    root = torch.nn.Module()
    root.register_buffer("table", torch.zeros(2))
    return fqlower.from_fx(torch.fx.GraphModule(root, graph))


def hashes(program: fqlower.Program, change: Change) -> tuple[str, str]:
    """(matched, produced) of `change` recorded on `program`."""
    _, recorded = fqlower.log.record_change(program, change)
    return recorded.matched, recorded.produced


def reading(anchor: str, *edits, **bindings) -> Change:
    return Change(0, "p", "r", anchor, FrozenDict(bindings), tuple(edits))


def test_the_matched_hash_changes_with_the_subgraph_the_change_matched_and_only_with_it():
    change = reading("b", other="a")
    neg = hashes(reads_of_x(("a", torch.sigmoid), ("b", torch.neg)), change)[0]
    relu = hashes(reads_of_x(("a", torch.sigmoid), ("b", torch.relu)), change)[0]
    assert neg != relu  # `b` calls another function
    assert hashes(reads_of_x(("a", torch.sigmoid), ("b", torch.neg), extra=True), change)[0] == neg  # a node it did not match


def test_the_matched_hash_sees_the_order_of_the_nodes_it_covers_not_the_order_of_their_names():
    # the same two nodes, in graph order b, a (against the alphabet) and a, b
    change = reading("b", other="a")
    b_first = hashes(reads_of_x(("b", torch.neg), ("a", torch.sigmoid)), change)[0]
    a_first = hashes(reads_of_x(("a", torch.sigmoid), ("b", torch.neg)), change)[0]
    assert b_first != a_first
    # the order the change names them in does not matter: the program's order does
    assert hashes(reads_of_x(("b", torch.neg), ("a", torch.sigmoid)), reading("a", other="b"))[0] == b_first


def test_the_produced_hash_covers_the_constants_a_change_sets():
    program = reads_of_x(("a", torch.sigmoid))
    ones = hashes(program, reading("a", fqlower.SetConstant("table", torch.ones(2))))[1]
    twos = hashes(program, reading("a", fqlower.SetConstant("table", torch.full((2,), 2.0))))[1]
    assert ones != twos
    assert hashes(program, reading("a", fqlower.SetConstant("table", torch.ones(2))))[1] == ones


def test_the_produced_hash_covers_the_modules_a_change_sets():
    program = reads_of_x(("a", torch.sigmoid))
    relu = hashes(program, reading("a", fqlower.SetModule("act", fqlower.Build("torch.nn.ReLU"))))[1]
    tanh = hashes(program, reading("a", fqlower.SetModule("act", fqlower.Build("torch.nn.Tanh"))))[1]
    assert relu != tanh


def test_the_produced_hash_does_not_see_the_rest_of_the_program():
    change = reading("a", SetArgs("a", (fqlower.Ref("x"),)), fqlower.SetConstant("table", torch.ones(2)))
    plain = hashes(reads_of_x(("a", torch.sigmoid)), change)
    with_extra = hashes(reads_of_x(("a", torch.sigmoid), extra=True), change)
    assert plain == with_extra


def test_changes_that_only_remove_nodes_get_their_matched_hashes_when_hashes_are_on():
    from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE

    def dead(function):
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        graph.create_node("call_function", function, (x,), name="unused")
        graph.output(x)
        return fqlower.from_fx(torch.fx.GraphModule(torch.nn.Module(), graph))

    (neg,), (relu,) = (ELIMINATE_DEAD_CODE.run(dead(function)).changes for function in (torch.neg, torch.relu))
    assert neg.anchor == relu.anchor == "unused"
    assert neg.matched != relu.matched  # the node each removes differs
    assert ELIMINATE_DEAD_CODE.run(dead(torch.neg)).changes[0].matched == neg.matched


# --- provenance: the meta `fqlower.lower` leaves on every node a change made -----------------------


def test_a_node_a_change_made_records_that_change_and_the_reference_nodes_it_came_from():
    # one test, no module-scoped fixture: mutmut runs a mutant's tests by the functions each
    # test reached, and a cached fixture reaches nothing in the tests after the first
    import zoo

    from fqlower.log import PROVENANCE

    reference = zoo.case_by_id("FunctionalConvLinear-static_fbgemm").build()
    lowering = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope)
    nodes = {node.name: node for node in lowering.module.graph.nodes}
    conv = next(c for c in lowering.log.changes if c.pass_name == "lower-static-functionals" and c.bindings["function"] == "conv2d")
    # every node the conv's change matched is a node of the reference model: its own source
    sources = tuple(sorted({conv.anchor, *conv.bindings.values()}))
    assert dict(nodes["conv2d"].meta[PROVENANCE]) == {
        "pass": "lower-static-functionals",
        "rule": conv.rule,
        "anchor": conv.anchor,
        "from": sources,
    }

    # fold-weights then matched the prepack and the conv, both made by the conv's change: the
    # packed weight it adds comes from what they came from, not from them
    fold = next(c for c in lowering.log.changes if c.pass_name == "fold-weights" and c.bindings["reader"] == "conv2d")
    assert set(fold.bindings.values()) | {fold.anchor} == {"conv2d_prepack", "conv2d"}
    assert "conv2d_prepack" in [edit.node.name for edit in conv.edits if isinstance(edit, AddNode)]
    (added,) = [edit.node.name for edit in fold.edits if isinstance(edit, AddNode)]
    assert dict(nodes[added].meta[PROVENANCE]) == {
        "pass": "fold-weights",
        "rule": fold.rule,
        "anchor": fold.anchor,
        "from": sources,
    }


# --- the cattrs codec's messages (mutation run on log/codec.py and log/records.py) ------------


def test_an_error_other_than_the_codecs_own_is_named_by_its_type_at_its_field():
    change = ('{"kind":"change","step":0,"pass":"p","rule":"r","anchor":"a","bindings":{},'
              '"edits":[{"edit":"set_constant","attr":"f","value":{"$float":"not a number"}}]}')
    assert refusal(HEADER + "\n" + change) == (
        "change log line 2: edits[0].value: ValueError: could not convert string to float: 'not a number'"
    )


def test_a_message_that_itself_holds_an_at_sign_keeps_its_field_name_first():
    """cattrs writes `message @ path`; the path is after the last ` @ `, not the first."""
    skip = '{"kind":"skip","step":0,"pass":"p","rule":"r","node":"n","reason":[" @ x"]}'
    assert refusal(HEADER + "\n" + skip) == "change log line 2: reason: must be a string, got [' @ x']"
