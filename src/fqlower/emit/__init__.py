"""Back to torch.fx: `to_fx` materialises specs and builds the GraphModule once
(`to_fx`), with quick module builders (`builders`) and the original weights a
lowered module can keep (`original_weights`).

`fqlower.emit.call_method` is the factory name folded weights record for method
calls in change logs: it stays importable here.
"""

from fqlower.emit.to_fx import call_method, materialize, to_fx

__all__ = ["call_method", "materialize", "to_fx"]
