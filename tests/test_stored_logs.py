"""Change logs written by an earlier fqlower still read, write and replay byte for byte.

tests/logs/*.jsonl were recorded with the log codec as it stood at the draft engine
(schema 1; torch 2.13, python 3.11). Whatever implements the codec, a stored log
must load and dump back to the very same text, today's lowering of the same model
must write the same entries, and the log must replay on that model to its recorded
output fingerprint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import zoo

import fqlower
from fqlower import ChangeLog

LOGS = Path(__file__).resolve().parent / "logs"
STORED = sorted(LOGS.glob("*.jsonl"))
CASES = {case.id: case for case in zoo.ALL_CASES}


def test_there_are_stored_logs_of_zoo_cases():
    assert len(STORED) >= 5 and all(path.stem in CASES for path in STORED)


@pytest.mark.parametrize("path", STORED, ids=lambda path: path.stem)
def test_a_stored_log_loads_and_dumps_back_to_the_same_text(path):
    text = path.read_text()
    assert ChangeLog.loads(text).dumps() == text


@pytest.mark.parametrize("path", STORED, ids=lambda path: path.stem)
def test_todays_lowering_writes_the_stored_entries_and_fingerprints(path):
    stored = path.read_text().splitlines()
    reference = CASES[path.stem].build()
    today = fqlower.lower(reference.module, reference.qconfig_map, reference.node_name_to_scope).log.dumps().splitlines()
    assert today[1:] == stored[1:]  # every entry, byte for byte
    # the header's fingerprints and passes; its versions name the machine that wrote it
    ours, theirs = json.loads(today[0]), json.loads(stored[0])
    assert {key: value for key, value in ours.items() if key != "versions"} == {
        key: value for key, value in theirs.items() if key != "versions"
    }


@pytest.mark.parametrize("path", STORED, ids=lambda path: path.stem)
def test_a_stored_log_replays_to_its_output_fingerprint(path):
    log = ChangeLog.loads(path.read_text())
    reference = CASES[path.stem].build()
    replayed = fqlower.replay(reference.module, log, reference.qconfig_map, reference.node_name_to_scope)
    assert fqlower.fingerprint(replayed.program) == log.header.output


def test_the_codec_bench_measures_a_log_it_can_read_back():
    """`make bench` runs bench/codec.py; a small model keeps it from rotting unseen."""
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import codec as codec_bench  # bench/codec.py

    name, nodes, entries, ms = codec_bench.bench_size(300, repeats=1)
    assert name == "residual-0k" and nodes > 100 and entries > 10
    assert set(ms) == {"dumps", "loads", "replay"} and all(value > 0 for value in ms.values())
