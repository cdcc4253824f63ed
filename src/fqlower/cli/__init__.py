"""The `fqlower` command.

    fqlower demo
    fqlower lower --model net.py:Net --qconfig fbgemm --input-shape 1,3,32,32 \\
                  --save-reference ref.pt -o lowered.pt --log changes.jsonl
    fqlower lower ref.pt -o lowered.pt --log changes.jsonl
    fqlower replay ref.pt changes.jsonl -o lowered.pt
    fqlower explain ref.pt [--log changes.jsonl]
    fqlower bisect ref.pt changes.jsonl --tolerance 0.05
    fqlower diff ref.pt [--pass lower-binary-ops] [--dot diff.dot] [--svg diff.svg]

A saved reference is two files: REF.pt (the reference GraphModule, `torch.save`d) and
REF.maps.pt (a `torch.save`d dict with "qconfig_map", "node_name_to_scope" and,
optionally, "example_inputs"); commands look for the maps beside the model unless
--maps names them. Exit codes: 0 ok, 1 error or failed check, 2 usage. Errors print
`fqlower: error: ...` (with --debug, the traceback); progress goes to stderr.
"""

from fqlower.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
