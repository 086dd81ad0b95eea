"""cimconvert: convert any PyTorch vision model to a bit-sliced memristive crossbar simulation."""

from .calibration import calibrate
from .convert import ConversionInfo, conversion_info, convert, crossbar_layers, digital_ops, set_chunk_budget
from .crossbar import ProgrammedWeights, crossbar_matmul, program_weights
from .devices import DeviceModel, get_device, list_devices, register_device
from .drift import set_time
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
    TraceWarning,
    UnusedRuleWarning,
)
from .evaluate import evaluate, evaluate_trials
from .finetune import finetune
from .layers import CrossbarConv1d, CrossbarConv2d, CrossbarLayer, CrossbarLinear
from .matching import DigitalOp
from .models import create_model, list_models, load_checkpoint
from .onnx_export import export_onnx
from .policy import Policy
from .policy_map import PolicyMap
from .profiles import HardwareProfile, get_profile, list_profiles
from .recipes import Recipe, load_recipe, run_recipe
from .registry import get_policy, is_policy, list_policies, register_policy
from .report import DeploymentReport, build_report
from .runner import RunConfig, run_job
from .serialization import load, save
from .sweep import SweepResult, run_sweep

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "convert",
    "calibrate",
    "create_model",
    "list_models",
    "load_checkpoint",
    "evaluate",
    "evaluate_trials",
    "RunConfig",
    "run_job",
    "Recipe",
    "load_recipe",
    "run_recipe",
    "run_sweep",
    "SweepResult",
    "crossbar_layers",
    "digital_ops",
    "conversion_info",
    "ConversionInfo",
    "DigitalOp",
    "PolicyMap",
    "Policy",
    "get_policy",
    "is_policy",
    "list_policies",
    "register_policy",
    "build_report",
    "DeploymentReport",
    "HardwareProfile",
    "get_profile",
    "list_profiles",
    "DeviceModel",
    "get_device",
    "list_devices",
    "register_device",
    "set_time",
    "set_chunk_budget",
    "finetune",
    "save",
    "load",
    "export_onnx",
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
    "TraceWarning",
    "UnusedRuleWarning",
    "MappingError",
    "ProfileError",
    "ModelError",
    "DataError",
    "OutputError",
    "FormatError",
]
