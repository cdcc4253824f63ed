"""fqlower: lower PyTorch FX quantized reference models to the native quantized
backend as a pure-functional rewrite of an immutable IR.

    program = fqlower.from_fx(reference_gm, qconfig_map, node_name_to_scope)
    result, log = pipeline.run_logged(program)
    lowered = fqlower.to_fx(result.program)
"""

from fqlower.version import __version__

from fqlower.api import Lowering, lower, lower_to_native_backend, replay
from fqlower.log import Change, ChangeLog, Skip, apply_log
from fqlower.engine.edits import (
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
from fqlower.engine.draft import Draft, apply
from fqlower.convert import convert_fx
from fqlower.diff import NodeChanges, diff_dot, diff_text, node_changes, render_svg, snapshots
from fqlower.emit import to_fx
from fqlower.errors import (
    ChangeLogError,
    EmitError,
    FqlowerError,
    IRError,
    ReplayMismatch,
    UnsupportedInput,
)
from fqlower.log.fingerprint import fingerprint
from fqlower.ir import (
    Build,
    FrozenDict,
    ListArg,
    Node,
    Original,
    Program,
    Ref,
    format_program,
    from_fx,
)
from fqlower.engine.pipeline import (
    Instrument,
    Match,
    Miss,
    Pass,
    PassResult,
    Pipeline,
    Rule,
    RulePass,
    Snapshots,
    Timing,
    rule_pass,
)

from fqlower.passes import default_pipeline
from fqlower.validation import Validation, Verdict, validate
from fqlower.pt2e import lower_pt2e, pipeline_for, pt2e_pipeline

__all__ = [
    "__version__",
    "Lowering",
    "NodeChanges",
    "convert_fx",
    "diff_dot",
    "diff_text",
    "node_changes",
    "render_svg",
    "snapshots",
    "default_pipeline",
    "lower",
    "lower_to_native_backend",
    "lower_pt2e",
    "pt2e_pipeline",
    "pipeline_for",
    "replay",
    "validate",
    "Validation",
    "Verdict",
    "AddNode",
    "Build",
    "Change",
    "ChangeLog",
    "ChangeLogError",
    "Edit",
    "EmitError",
    "FqlowerError",
    "FrozenDict",
    "IRError",
    "Instrument",
    "ListArg",
    "Match",
    "MoveNode",
    "Miss",
    "Node",
    "Original",
    "Pass",
    "PassResult",
    "Pipeline",
    "Program",
    "Ref",
    "RemoveNode",
    "ReplaceUses",
    "ReplayMismatch",
    "Rule",
    "RulePass",
    "SetArgs",
    "SetConstant",
    "SetMeta",
    "SetModule",
    "SetTarget",
    "Skip",
    "Snapshots",
    "Timing",
    "UnsupportedInput",
    "Draft",
    "apply",
    "apply_log",
    "fingerprint",
    "format_program",
    "from_fx",
    "rule_pass",
    "to_fx",
]
