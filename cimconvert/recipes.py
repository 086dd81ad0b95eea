"""Recipe files: one job (or one sweep) described in YAML, run by ``cimconvert run RECIPE.yaml``.

A recipe's keys are :class:`cimconvert.RunConfig` fields (``model``, ``policy``, ``checkpoint``,
``data_dir``, ``limit``, ``trials``, ...) plus an optional ``sweep:`` grid over policy fields
(:mod:`cimconvert.sweep`). ``policy`` is a preset name, a policy-map file, or a policy map written
inline (``{default: ..., op_type: {linear: {...}}}``, see :meth:`cimconvert.PolicyMap.from_dict`).

Paths: the input files a recipe names (``checkpoint``, ``data_dir``, ``calib_dir`` and a
``policy`` ending in ``.yaml``/``.yml``) are relative to the folder holding the recipe, so a
recipe runs from any working directory; ``builtin:`` data names and absolute paths are kept, and
``~`` is expanded. ``out`` (an output) is relative to the working directory, like the default
``runs/<model>-<policy>-<time>``. Values given on the command line are relative to the working
directory, as usual.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import BUILTIN_PREFIX
from .errors import CimConvertError
from .models import model_source
from .runner import POLICY_FILE_SUFFIXES, JobResult, RunConfig, build_policy_map, run_job
from .sweep import SweepResult, check_sweep, expand_grid, run_sweep
from .yaml_files import read_yaml

__all__ = ["Recipe", "load_recipe", "recipe_from_dict", "run_recipe", "RECIPE_INPUT_PATHS"]

RECIPE_INPUT_PATHS = ("checkpoint", "data_dir", "calib_dir")
"""Recipe keys holding input paths, resolved against the recipe's folder (``policy`` too when it
names a ``.yaml``/``.yml`` file)."""


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: the job and its sweep grid."""

    config: RunConfig
    """The job, with input paths resolved."""
    sweep: dict[str, tuple[Any, ...]]
    """Policy field -> values; empty for a single run."""

    def replace(self, sweep: dict[str, Any] | None = None, **changes: Any) -> Recipe:
        """The recipe with :class:`RunConfig` fields changed (command-line overrides) and, when
        ``sweep`` is given, that grid instead of its own (validated by
        :func:`cimconvert.sweep.check_sweep`)."""
        return Recipe(config=dataclasses.replace(self.config, **changes),
                      sweep=self.sweep if sweep is None else check_sweep(sweep))


def _resolve(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or value.startswith(BUILTIN_PREFIX):
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def recipe_from_dict(data: Any, base_dir: str | Path = ".") -> Recipe:
    """Validate a recipe mapping; relative input paths are taken from ``base_dir``.

    Checks, before any heavy work: the keys (:meth:`RunConfig.from_dict`), that the model name
    resolves (zoo, timm or torchvision; :func:`cimconvert.models.model_source`), the sweep grid
    (:func:`cimconvert.sweep.check_sweep`), and that the policy map of every grid point builds
    (preset names, field names and values).

    Raises:
        CimConvertError: the first problem found, naming the key or value.
    """
    if not isinstance(data, dict):
        raise CimConvertError(f"A recipe must be a mapping of settings, got {type(data).__name__}.")
    data = dict(data)
    sweep = check_sweep(data.pop("sweep")) if "sweep" in data else {}
    base = Path(base_dir)
    for key in RECIPE_INPUT_PATHS:
        if key in data:
            data[key] = _resolve(data[key], base)
    policy = data.get("policy")
    if isinstance(policy, str) and Path(policy).suffix in POLICY_FILE_SUFFIXES:
        data["policy"] = _resolve(policy, base)
    config = RunConfig.from_dict(data)
    model_source(config.model)
    for point in expand_grid(sweep) if sweep else [{}]:
        build_policy_map(config.policy, {**config.overrides, **point},
                         first_last_digital=config.first_last_digital)
    return Recipe(config=config, sweep=sweep)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (see :func:`recipe_from_dict`).

    Raises:
        CimConvertError: the file is unreadable, not UTF-8, not YAML (a key given twice included),
            or not a valid recipe.
    """
    path = Path(path)
    data = read_yaml(path, "recipe", CimConvertError)
    try:
        return recipe_from_dict(data, path.parent)
    except CimConvertError as exc:
        raise type(exc)(f"Recipe {str(path)!r}: {exc}") from None


def run_recipe(recipe: Recipe) -> JobResult | SweepResult:
    """Run a recipe: :func:`cimconvert.run_job` without a sweep, :func:`cimconvert.sweep.run_sweep`
    with one."""
    return run_sweep(recipe.config, recipe.sweep) if recipe.sweep else run_job(recipe.config)
