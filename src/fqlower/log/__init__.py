"""The change log: what each pass did, as data that replays without matching
(`records`, `values`, `recording`, `replay`), with the fingerprints it checks
(`fingerprint`) and the callables a replay may call (`vocabulary`).

A log is JSON Lines: a header line (schema, versions, pipeline, fingerprints of the
input, after each pass, and of the output) and one line per entry, either a
`Change` (pass, rule, anchor node, bindings, edits), a `Skip` (pass, rule, node,
reason) or a `Caution` (check, nodes, message: fqlower.cautions). Writing is canonical (sorted keys, no spaces), so the same lowering gives
byte-identical logs in any process. Values are written with type tags
(`{"$ref": "x"}`, `{"$tuple": [...]}`, `{"$name": "operator.add"}`, ...) so that
`ChangeLog.loads(log.dumps()) == log`.
"""

from fqlower.log.records import SCHEMA, Caution, Change, ChangeLog, Entry, Header, PassRecord, Skip
from fqlower.log.recording import PROVENANCE, record_all, record_change, record_into, without_change_hashes
from fqlower.log.replay import apply_log
from fqlower.log.codec import decode, encode

__all__ = [
    "PROVENANCE",
    "SCHEMA",
    "Caution",
    "Change",
    "ChangeLog",
    "Entry",
    "Header",
    "PassRecord",
    "Skip",
    "apply_log",
    "decode",
    "encode",
    "record_all",
    "record_change",
    "record_into",
    "without_change_hashes",
]
