"""The immutable program representation and its import from torch.fx.

A `Program` is a value: a `Graph` of `Node` records plus the tables a GraphModule
carries (modules by path, get_attr constants, the qconfig and scope maps). Node
references inside args/kwargs are `Ref(name)`; lists are `ListArg`, dicts are
`FrozenDict`, so every arg is immutable. Torch modules and tensors are held by
reference and never mutated.

Only `fqlower.engine.draft.apply` builds a changed program; this module builds the first
one (`from_fx`) and answers queries.
"""

from fqlower.ir.importer import from_fx, gc_paused, import_arg
from fqlower.ir.program import (
    OPS,
    FxContext,
    Graph,
    Node,
    Position,
    Program,
    ProgramView,
    format_arg,
    format_build,
    format_node,
    format_program,
    format_program_around,
    format_target,
)
from fqlower.ir.values import EMPTY, Build, FrozenDict, ListArg, Original, Ref, map_arg, ref_names, refs_in

__all__ = [
    "EMPTY",
    "OPS",
    "Build",
    "FrozenDict",
    "FxContext",
    "Graph",
    "ListArg",
    "Node",
    "Original",
    "Position",
    "Program",
    "ProgramView",
    "Ref",
    "format_arg",
    "format_build",
    "format_node",
    "format_program",
    "format_program_around",
    "format_target",
    "from_fx",
    "gc_paused",
    "import_arg",
    "map_arg",
    "ref_names",
    "refs_in",
]
