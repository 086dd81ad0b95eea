"""Reading the YAML files users write (recipes, policy maps): strict about what PyYAML lets pass."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from .errors import CimConvertError

__all__ = ["read_yaml"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # keys merged in (<<: *base) may be overridden
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} is given twice (lines {lines[key]} and {line}); give it once")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str, error: type[CimConvertError]) -> Any:
    """The YAML document in the UTF-8 file ``path`` (a recipe, a policy map: ``what``).

    Raises:
        error: the file is unreadable, not UTF-8, not YAML, or repeats a key of a mapping.
    """
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise error(f"Cannot read {what} {str(path)!r}: not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                    f"at offset {exc.start}); save it as UTF-8.") from None
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"Cannot read {what} {str(path)!r}: {exc}") from None
