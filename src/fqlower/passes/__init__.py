"""The lowering passes, one per file, and the default pipeline that orders them."""

from fqlower.passes.binary_ops import LOWER_BINARY_OPS
from fqlower.passes.dead_code import ELIMINATE_DEAD_CODE
from fqlower.passes.dynamic_functionals import LOWER_DYNAMIC_FUNCTIONALS
from fqlower.passes.dynamic_modules import LOWER_DYNAMIC_MODULES
from fqlower.passes.fold_weights import FOLD_WEIGHTS
from fqlower.passes.special_patterns import LOWER_SPECIAL_PATTERNS
from fqlower.passes.static_functionals import LOWER_STATIC_FUNCTIONALS
from fqlower.passes.static_modules import LOWER_STATIC_MODULES
from fqlower.passes.tensor_metadata import LOWER_TENSOR_METADATA
from fqlower.passes.two_input_modules import LOWER_TWO_INPUT_MODULES
from fqlower.passes.weight_only_modules import LOWER_WEIGHT_ONLY_MODULES
from fqlower.engine.pipeline import Pipeline


def default_pipeline() -> Pipeline:
    """The passes in torch's order."""
    return Pipeline(
        "lower-to-native-backend",
        (
            LOWER_STATIC_MODULES,
            LOWER_TWO_INPUT_MODULES,
            LOWER_DYNAMIC_MODULES,
            LOWER_WEIGHT_ONLY_MODULES,
            LOWER_STATIC_FUNCTIONALS,
            LOWER_DYNAMIC_FUNCTIONALS,
            LOWER_BINARY_OPS,
            LOWER_TENSOR_METADATA,
            LOWER_SPECIAL_PATTERNS,
            ELIMINATE_DEAD_CODE,
            FOLD_WEIGHTS,
            ELIMINATE_DEAD_CODE,
        ),
    )


__all__ = [
    "ELIMINATE_DEAD_CODE",
    "FOLD_WEIGHTS",
    "LOWER_BINARY_OPS",
    "LOWER_TENSOR_METADATA",
    "LOWER_DYNAMIC_FUNCTIONALS",
    "LOWER_STATIC_FUNCTIONALS",
    "LOWER_DYNAMIC_MODULES",
    "LOWER_SPECIAL_PATTERNS",
    "LOWER_STATIC_MODULES",
    "LOWER_TWO_INPUT_MODULES",
    "LOWER_WEIGHT_ONLY_MODULES",
    "default_pipeline",
]
