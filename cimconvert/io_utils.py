"""Writing output files so that a failure never leaves anything half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

__all__ = ["staged_directory"]


def _check_writable(target: Path) -> Path:
    """Raise :class:`OutputError` unless ``target`` is, or can become, a writable directory.

    Returns the nearest existing ancestor of ``target`` (``target`` itself when it exists).
    """
    if target.exists() and not target.is_dir():
        raise OutputError(f"Cannot write to {target}: it exists and is not a directory.")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"Cannot write to {target}: {existing} is not a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write to {target}: {existing} is not writable.")
    return existing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory whose files land in ``target`` only if the block succeeds.

    A new ``target`` is staged beside itself and renamed into place in one step; an existing one
    is staged inside itself (hidden) and each file then replaces its old version atomically
    (``os.replace``), so other files in ``target`` are left alone. On any error the staging
    directory is removed and ``target`` is as it was (new parent directories aside).

    Raises:
        OutputError: ``target`` cannot be created or written (the message names the path).
    """
    target = Path(target)
    existing = _check_writable(target)
    staging: Path | None = None
    try:
        if existing != target:
            target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-",
                                        dir=target if existing == target else target.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would become the new target's mode
    except OSError as exc:
        raise OutputError(f"Cannot write to {target}: {exc.strerror or exc}.") from exc
    try:
        yield staging
        if existing != target:
            os.rename(staging, target)
        else:
            for item in sorted(staging.iterdir()):
                os.replace(item, target / item.name)
            staging.rmdir()
    except OSError as exc:
        raise OutputError(f"Cannot write to {target}: {exc.strerror or exc}.") from exc
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
