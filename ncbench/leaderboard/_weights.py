"""Committed weights: every board entry's model as a safetensors file under ``leaderboards/weights/``.

A file is named after its content, ``weights/<first 16 hex digits of its sha256>.safetensors``, so the Linf and
L2 boards of one model share one file, and an entry names its file and the file's sha256
(``weights_file``). :func:`ncbench.leaderboard.verify` re-evaluates these files; ``ncbench leaderboard check``
checks that each one is there, unchanged, and holds the entry's model (its ``weights_sha256`` and parameter
count), and that no file is left that no entry names.

The file is the checkpoint the entry was measured on, byte for byte (a sweep's checkpoint or a submitted
``.safetensors``, with ncbench's metadata: the architecture spec and, for ncbench-trained models, the recipe);
a weights-only ``.pt`` is rewritten as safetensors with the same tensors. A ``torch.export`` archive cannot be
written as safetensors (its graph is code): its entry has ``weights_file: null``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .._errors import InputError

WEIGHTS_DIR = "weights"
PREFIX_HEX = 16


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safetensors_bytes(checkpoint: Path, trust: bool) -> bytes | None:
    """The checkpoint as safetensors bytes: a .safetensors file as it is; a .pt rewritten; a .pt2: None."""
    if checkpoint.suffix == ".safetensors":
        return checkpoint.read_bytes()
    if checkpoint.suffix == ".pt2":
        return None
    from ..models import load_checkpoint, save_checkpoint

    model = load_checkpoint(checkpoint, trust=trust)
    with tempfile.TemporaryDirectory(prefix="ncbench-weights-") as tmp:
        path = save_checkpoint(model, Path(tmp) / "w.safetensors", training=getattr(model, "trained_by", None))
        return path.read_bytes()


def prepare_weights(checkpoint: str | os.PathLike, *, trust: bool = False) -> tuple[dict | None, bytes | None]:
    """The entry's ``weights_file`` (``{"path", "sha256", "bytes"}``) for ``checkpoint``, and the bytes to
    commit; ``(None, None)`` for a ``torch.export`` archive. Writes nothing."""
    data = _safetensors_bytes(Path(checkpoint), trust)
    if data is None:
        return None, None
    digest = hashlib.sha256(data).hexdigest()
    return {"path": f"{WEIGHTS_DIR}/{digest[:PREFIX_HEX]}.safetensors", "sha256": digest, "bytes": len(data)}, data


def write_weights(weights_file: dict, data: bytes, leaderboards: str | os.PathLike) -> bool:
    """Write the prepared bytes under ``<leaderboards>/<weights_file.path>`` unless that file is there already
    (the same name is the same content); True when this call wrote it. Raises InputError when a different file
    holds the name (a 64-bit prefix collision)."""
    from .._io import write_exclusive

    digest = weights_file["sha256"]
    path = Path(leaderboards) / weights_file["path"]
    if path.is_file():
        if sha256_file(path) != digest:
            raise InputError(f"{path} exists with other content (sha256 {sha256_file(path)[:16]}...); remove it "
                             "if no entry names it (`ncbench leaderboard check` lists such files)")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_exclusive(path, data)
    except FileExistsError:  # written by another build in the meantime: the same name is the same content
        return False
    return True


def commit_weights(checkpoint: str | os.PathLike, leaderboards: str | os.PathLike, *,
                   trust: bool = False) -> dict | None:
    """Copy ``checkpoint`` to ``<leaderboards>/weights/<sha256[:16]>.safetensors`` (once; atomic).

    Returns the entry's ``weights_file``, or None for a ``torch.export`` archive (nothing written).
    """
    weights_file, data = prepare_weights(checkpoint, trust=trust)
    if weights_file is not None:
        write_weights(weights_file, data, leaderboards)
    return weights_file


def weights_path(entry: dict, leaderboards: str | os.PathLike) -> Path | None:
    """The committed file of an entry (None when it has none)."""
    wf = entry.get("weights_file")
    return None if not wf else Path(leaderboards) / wf["path"]


def check_weights(entry: dict, leaderboards: str | os.PathLike) -> list[str]:
    """What is wrong with an entry's committed weights, as lines ``field: committed ..., found ...``; [] if nothing.

    The file is there, its sha256 and size are the entry's, it loads (safetensors, never unpickled), and the
    model it holds has the entry's ``weights_sha256`` (:func:`ncbench.models.model_checksum`) and
    ``num_parameters``.
    """
    wf = entry.get("weights_file")
    if not wf:
        return []
    path = weights_path(entry, leaderboards)
    if not path.is_file():
        return [f"weights_file.path: {wf['path']} is not committed (no file {path})"]
    problems = []
    digest = sha256_file(path)
    if digest != wf["sha256"]:
        problems.append(f"weights_file.sha256: committed {wf['sha256']}, the file's is {digest}")
    size = path.stat().st_size
    if size != wf["bytes"]:
        problems.append(f"weights_file.bytes: committed {wf['bytes']}, the file has {size}")
    if problems:
        return problems
    from .._errors import NcbenchError
    from ..models import load_checkpoint, model_checksum

    try:
        model = load_checkpoint(path)
    except NcbenchError as err:
        return [f"weights_file: {path} does not load: {err}"]
    checksum = model_checksum(model)
    if checksum != entry["weights_sha256"]:
        problems.append(f"weights_sha256: committed {entry['weights_sha256']}, the committed file's model has "
                        f"{checksum}")
    n = sum(p.numel() for p in model.parameters())
    if n != entry["num_parameters"]:
        problems.append(f"num_parameters: committed {entry['num_parameters']}, the committed file's model has {n}")
    return problems


def entry_files(leaderboards: str | os.PathLike):
    """``(path, parsed JSON)`` of every entry file of every board, unvalidated (an entry of an older schema
    still names its weights); unreadable files are left out (``ncbench leaderboard check`` reports them)."""
    import json

    from ._boards import list_boards

    for board_id in list_boards(leaderboards):
        for path in sorted((Path(leaderboards) / board_id).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                yield path, data


def referenced(leaderboards: str | os.PathLike) -> set[str]:
    """The ``weights_file.path`` of every entry file that names one."""
    out = set()
    for _, entry in entry_files(leaderboards):
        wf = entry.get("weights_file")
        if isinstance(wf, dict) and isinstance(wf.get("path"), str):
            out.add(wf["path"])
    return out


def stray_weights(leaderboards: str | os.PathLike) -> list[Path]:
    """Files under ``<leaderboards>/weights/`` that no entry names (left by a rebuild or a removed entry)."""
    folder = Path(leaderboards) / WEIGHTS_DIR
    keep = referenced(leaderboards)
    return sorted(p for p in folder.glob("*") if p.is_file() and f"{WEIGHTS_DIR}/{p.name}" not in keep)
