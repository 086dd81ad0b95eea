"""cimconvert: convert any PyTorch vision model to a bit-sliced memristive crossbar simulation."""

from .crossbar import ProgrammedWeights, crossbar_matmul, program_weights
from .errors import (
    CimConvertError,
    DataError,
    FormatError,
    MappingError,
    ModelError,
    OutputError,
    PolicyError,
    ProfileError,
    TraceError,
)
from .layers import CrossbarConv1d, CrossbarConv2d, CrossbarLayer, CrossbarLinear
from .policy import Policy
from .registry import get_policy, is_policy, list_policies, register_policy

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Policy",
    "get_policy",
    "is_policy",
    "list_policies",
    "register_policy",
    "CrossbarLayer",
    "CrossbarLinear",
    "CrossbarConv1d",
    "CrossbarConv2d",
    "ProgrammedWeights",
    "program_weights",
    "crossbar_matmul",
    "CimConvertError",
    "PolicyError",
    "TraceError",
    "MappingError",
    "ProfileError",
    "ModelError",
    "DataError",
    "OutputError",
    "FormatError",
]
