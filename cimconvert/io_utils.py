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
        try:
            yield staging
        except OSError as exc:
            raise OutputError(f"Cannot write {_named(exc, staging, target)}: {_reason(exc)}.") from exc
        try:
            if existing != target:
                os.rename(staging, target)
            else:
                _replace_all(staging, target)
        except OSError as exc:
            raise OutputError(f"Cannot write to {target}: {_reason(exc)}.") from exc
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).rstrip(".")


def _named(exc: OSError, staging: Path, target: Path) -> Path:
    """The path of the output a failed write in ``staging`` was for (``target`` if unknown)."""
    if exc.filename is None:
        return target
    try:
        return target / Path(exc.filename).relative_to(staging)
    except ValueError:
        return Path(exc.filename)


def _replace_all(staging: Path, target: Path) -> None:
    """Move every entry of ``staging`` into the existing directory ``target``, replacing old ones.

    Every destination is checked before anything moves (a file cannot replace a directory, nor a
    directory a file), so a refused set leaves ``target`` as it was. An old directory is swapped
    out (into ``staging``, removed with it) and the new one renamed in its place.
    """
    items = sorted(staging.iterdir())
    for item in items:
        dest = target / item.name
        if dest.exists() and dest.is_dir() != item.is_dir():
            kind = "directory" if dest.is_dir() else "file"
            raise OutputError(f"Cannot write {dest}: a {kind} of that name is in the way; move it "
                              f"or choose another output directory.")
    old = staging / ".replaced"
    old.mkdir()
    for item in items:
        dest = target / item.name
        if item.is_dir() and dest.exists():
            os.rename(dest, old / item.name)
        os.replace(item, dest)
