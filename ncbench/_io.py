"""Durable writes: through a temporary file in the same folder, then an atomic link or rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_tmp(folder: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes files private (0600); results are for others to read too
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(tmp)


def _publish(path: str | os.PathLike, data: bytes, place) -> Path:
    """A temporary file in ``path``'s folder, then ``place(tmp, path)`` (a link or a rename): whole or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(path.parent, data)
    try:
        place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_exclusive(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all, only if ``path`` does not exist (FileExistsError
    otherwise, also when another writer got there first): a hard link fails instead of overwriting."""
    return _publish(path, data, os.link)


def write_new(folder: str | os.PathLike, stem: str, data: bytes, suffix: str = ".json") -> Path:
    """Write ``data`` to ``folder/stem{suffix}`` (or ``stem-2``, ``stem-3``, ...): never over an existing file.

    The content appears whole or not at all: it is written to a temporary file, then hard-linked to a name
    that does not exist yet (``os.link`` fails instead of overwriting).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _write_tmp(folder, data)
    try:
        for k in range(1, 10_000):
            path = folder / (f"{stem}{suffix}" if k == 1 else f"{stem}-{k}{suffix}")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free file name for {stem} in {folder}")
    finally:
        tmp.unlink(missing_ok=True)


def write_replace(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all, replacing what is there (an atomic rename)."""
    return _publish(path, data, os.replace)


def dumps(obj) -> bytes:
    """JSON with sorted keys and a trailing newline; NaN/inf refused (a table must never hold a silent NaN)."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
