"""Import and export formats: records from a folder into the store; the store out as csv, jsonl or parquet."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import InputError
from ._db import to_json
from ._frame import load_frame
from ._jobs import _as_store


@dataclass
class ImportReport:
    """What :func:`import_records` did: records written, records already stored, files skipped (and why)."""

    imported: int = 0
    already_stored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def import_records(store, folder, *, sweep: str | None = None) -> ImportReport:
    """Read the JSON records ``ncbench evaluate`` wrote into ``folder`` (``*.json``, not recursive) into the store.

    Each file is upgraded to the current schema first (:func:`ncbench.record.upgrade_record`). A file that
    is not a record (other JSON, invalid JSON, a newer schema) is skipped and counted with its reason; a job
    already stored is not duplicated. With ``sweep``, every imported job is also added to that sweep (its
    axes: the record's own ``provenance.sweep.axes`` when it has them, else none).
    """
    from ..record import upgrade_record

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder of JSON records")
    st, opened = _as_store(store)
    report = ImportReport()
    try:
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                report.skipped.append((str(path), f"not JSON: {str(err).splitlines()[0][:120]}"))
                continue
            if not isinstance(data, dict) or data.get("kind") != "ncbench.evaluate":
                report.skipped.append((str(path), "not an ncbench result record (no kind 'ncbench.evaluate')"))
                continue
            try:
                written = st.put_record(upgrade_record(data), sweep=sweep)
            except InputError as err:
                report.skipped.append((str(path), str(err)))
                continue
            if written:
                report.imported += 1
            else:
                report.already_stored += 1
    finally:
        if opened:
            st.close()
    return report


EXPORT_FORMATS = ("csv", "jsonl", "parquet")


def export_results(store, *, fmt: str, sweep: str | None = None) -> tuple[bytes, int]:
    """The store's done jobs as bytes: ``csv`` / ``parquet`` = :func:`load_frame`'s table, ``jsonl`` = one full
    record per line (compact JSON, sorted keys). Returns the bytes and the number of jobs."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"format must be one of {EXPORT_FORMATS}; got {fmt!r}")
    st, opened = _as_store(store)
    try:
        if fmt == "jsonl":
            if sweep is not None and sweep not in st.sweeps():
                raise InputError(f"the store {str(st.path)!r} has no sweep {sweep!r}; it has: "
                                 f"{', '.join(st.sweeps()) or 'none'}")
            if not st.exists():
                st._read()
            records = st.records(sweep=sweep)
            return "".join(to_json(r) + "\n" for r in records).encode(), len(records)
        frame = load_frame(st, sweep=sweep)
    finally:
        if opened:
            st.close()
    if fmt == "csv":
        return frame.to_csv(index=False).encode(), len(frame)
    import io

    frame = frame.copy()
    frame.attrs = {}  # pyarrow would store attrs as pandas metadata; the axes are the leading columns anyway
    buf = io.BytesIO()
    try:
        frame.to_parquet(buf, index=False)
    except ImportError as err:
        raise InputError(f"parquet export needs pyarrow (pip install pyarrow): {err}") from None
    return buf.getvalue(), len(frame)


def write_export(data: bytes, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write an export atomically (temporary file, then rename); refuse to replace a file unless ``force``."""
    from .._io import write_replace

    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} exists; choose another -o or pass --force to replace it")
    return write_replace(path, data)
