"""The tensor-metadata pass, down to the exact skip: tests written against mutmut's
survivors in fqlower.passes.tensor_metadata (`make mutation`, docs/mutation.md).

The pass's own tests match the reasons of its refusals in part; these pin the
whole reason and the code (torch-crashes: torch's lowering raises on each of them).
"""

from __future__ import annotations

from test_pass_tensor_metadata import GETATTR_RULE, INFO_RULE, read_graph, run_pass, the_skip, without_args

from fqlower import Ref
from fqlower.passes.tensor_metadata import LOWER_TENSOR_METADATA


def test_a_size_read_without_receiver_is_skipped_with_the_exact_reason_and_code():
    program, _ = without_args(read_graph("call_method", "size", ()), ())
    skip = the_skip(LOWER_TENSOR_METADATA.run(program), INFO_RULE)
    assert (skip.reason, skip.code.value) == (
        ".size() 'reader' has no positional arguments (torch reads args[0]: IndexError)",
        "torch-crashes",
    )


def test_the_shape_of_a_constant_is_skipped_with_the_exact_reason_and_code():
    _, result = run_pass(read_graph("call_function", getattr, ("shape",), on=2.5))
    skip = the_skip(result, GETATTR_RULE)
    assert (skip.reason, skip.code.value) == (
        "getattr 'reader' reads 2.5, not a node (torch: AttributeError)",
        "torch-crashes",
    )


def test_a_getattr_without_an_attribute_name_is_skipped_with_the_exact_reason_and_code():
    program, _ = without_args(read_graph("call_function", getattr, ("shape",)), (Ref("dqx"),))
    skip = the_skip(LOWER_TENSOR_METADATA.run(program), GETATTR_RULE)
    assert (skip.reason, skip.code.value) == (
        "getattr 'reader' has no positional attribute name (torch reads args[1]: IndexError)",
        "torch-crashes",
    )
