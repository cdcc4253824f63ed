"""Why quantize/dequantize nodes are left after lowering, and how much runs natively.

    explanation = fqlower.explain.explain(lowering, reference_gm)
    text = explanation.format()

`explain` reads a `Lowering` (and, for the coverage summary, the reference model it
was made from) and changes nothing.

Leftovers. Every `quantize_per_tensor`, `quantize_per_tensor_dynamic` and
`dequantize` node still in `lowering.program` is a conversion between float and
quantized values. Each is explained by the float ops on its float side:

- a dequantize: the ops that read it (its consumers) and, when it undoes a
  leftover quantize (or a `.to(float16)`), the op that quantize reads;
- a quantize: the op it reads (its producer) and the ops that read it through a
  dequantize.

For each such op the reasons are, in this order: the log's `Skip`s recorded at the
leftover itself, at the op, or at the op's users (and at the user of a relu right
after it), which is where rules anchor (a static-module rule looks at the quantize
after the module); else "qconfig of '<op>' is None" when the qconfig map says so
(torch's convert then leaves a plain float module, which no rule looks at, so no
skip exists); else "no lowering pattern covers <op>". A dequantize some of whose
users were lowered (a change bound it, or the reference model had more users) also
gets a reason saying it is shared and who still reads it in float.

A leftover whose float side is only model inputs, model outputs, constants or
native ops with float inputs/outputs (dynamic and weight-only modules) is a
*boundary*: expected in any lowered model, nothing to fix. `format()` lists those
apart.

Coverage. `reference` is the reference GraphModule `lowering` was made from; it
is checked against the log's input fingerprint (with the lowering's qconfig and
scope maps) and `UnsupportedInput` is raised when it is another model. Without it
`coverage` is None: a `Lowering` does not hold its input graph. Weighted ops are
counted in the reference (call_module of Linear, Conv*, ConvTranspose*,
LSTM/GRU/RNN and their cells, Embedding(Bag), reference and fused variants;
call_function F.linear/F.conv*/F.conv_transpose*). One runs natively when a node of
the lowered program that is a quantized module with weights, or a
`torch.ops.quantized.*` call reading a packed weight, has it as its source: same
name, or named in the node's provenance. Parameters are counted once per tensor
(a module called twice counts its weights once), as native when any op using
them runs natively.
"""

from fqlower.explain.coverage import coverage, is_weighted_module, reference_program, weighted_ops
from fqlower.explain.kinds import describe_op, leftover_kind, native_kind
from fqlower.explain.leftovers import explain, explain_leftover
from fqlower.explain.records import DEQUANTIZE, QUANTIZE, QUANTIZE_DYNAMIC, Coverage, Explanation, Leftover, WeightedOp

__all__ = [
    "DEQUANTIZE",
    "QUANTIZE",
    "QUANTIZE_DYNAMIC",
    "Coverage",
    "Explanation",
    "Leftover",
    "WeightedOp",
    "coverage",
    "describe_op",
    "explain",
    "explain_leftover",
    "is_weighted_module",
    "leftover_kind",
    "native_kind",
    "reference_program",
    "weighted_ops",
]
