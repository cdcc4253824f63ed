"""Dead-code elimination, with torch.fx's notion of side effects.

    %unused = torch.neg(%x)        (no users, no side effects)
        becomes
    (nothing)

A node stays when it is a placeholder or the output, a call_function that
`torch._library.utils.is_impure` calls impure (mutable schema, random, effectful),
or a call_module whose module sets `_is_impure`. call_method nodes are never
impure, as in `torch.fx.Graph.eliminate_dead_code`. Walking the nodes backwards
removes whole dead chains in one pass.
"""

from __future__ import annotations

import attrs
from torch._library.utils import is_impure

from fqlower.log import Change, record_all
from fqlower.engine.draft import Draft
from fqlower.engine.edits import RemoveNode
from fqlower.ir import FrozenDict, Node, Program, ProgramView
from fqlower.engine.pipeline import PassResult


def has_side_effects(program: ProgramView, node: Node) -> bool:
    if node.op in ("placeholder", "output"):
        return True
    if node.op == "call_module":
        return bool(getattr(program.modules.get(node.target), "_is_impure", False))
    if node.op == "call_function":
        return is_impure(node.target, args=node.args, kwargs=dict(node.kwargs))
    return False


@attrs.frozen
class DeadCodeElimination:
    name: str = "eliminate-dead-code"

    def run(self, program: Program) -> PassResult:
        users = {name: len(program.graph.users[name]) for name in program.graph.order}
        dead: list[str] = []
        for name in reversed(program.graph.order):
            node = program.graph.nodes[name]
            if users[name] or has_side_effects(program, node):
                continue
            dead.append(name)
            for used in node.refs():
                users[used] -= 1
        changes = tuple(Change(0, self.name, "dead-code", name, FrozenDict(), (RemoveNode(name),)) for name in dead)
        draft = Draft(program)
        changes = record_all(draft, changes)
        return PassResult(draft.freeze(), changes)


ELIMINATE_DEAD_CODE = DeadCodeElimination()
