"""Import and export formats: records from a folder into the store; the store out as csv, jsonl or parquet."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import InputError
from ._db import to_json
from ._frame import load_frame
from ._jobs import _as_store


@dataclass
class ImportReport:
    """What :func:`import_records` did: records written, records already stored, what was skipped (and why).

    ``skipped``: ``(where, why)`` with ``where`` a file, or ``file:line`` for a line of a ``.jsonl`` file.
    """

    imported: int = 0
    already_stored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


#: what an import reads: single records (``ncbench evaluate``), and record exports (one record per line,
#: ``ncbench results export --format jsonl`` and ``ncbench leaderboard build``'s ``records.jsonl.gz``)
IMPORT_SUFFIXES = (".json", ".jsonl", ".jsonl.gz")


def _import_kind(path: Path) -> str | None:
    name = path.name
    return next((s for s in (".jsonl.gz", ".jsonl", ".json") if name.endswith(s)), None)


def _read_items(path: Path):
    """``(where, parsed JSON or an error text)`` for each record the file holds (one, or one per line)."""
    kind = _import_kind(path)
    try:
        if kind == ".json":
            text = path.read_text(encoding="utf-8")
            try:
                yield str(path), json.loads(text)
            except json.JSONDecodeError as err:
                yield str(path), f"not JSON: {str(err).splitlines()[0][:120]}"
            return
        raw = path.read_bytes()
        if kind == ".jsonl.gz":
            raw = gzip.decompress(raw)
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        yield str(path), f"cannot read it: {str(err).splitlines()[0][:120]}"
        return
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{i}", json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{path}:{i}", f"not JSON: {str(err).splitlines()[0][:120]}"


def import_records(store, source, *, sweep: str | None = None) -> ImportReport:
    """Read result records into the store: a folder, or one file.

    Parameters
    ----------
    store : path or ResultsStore.
    source : path
        A folder: its ``*.json`` records (``ncbench evaluate`` writes one per job) and its ``*.jsonl`` /
        ``*.jsonl.gz`` exports, not recursive. A file: one of those. An export holds one record per line
        (``ncbench results export --format jsonl``, ``leaderboards/data/<sweep>/records.jsonl.gz``).
    sweep : str, optional
        Also add every imported job to this sweep (axes: the record's own ``provenance.sweep.axes``, else none).

    Each record is upgraded to the current schema first (:func:`ncbench.record.upgrade_record`) and keeps its
    sweep membership (``provenance.sweep``: the sweep that computed it, with its cell's axes), so that the
    sweep's next run (or ``--dry-run``) counts it as done and runs nothing twice. What is not a record (other
    JSON, invalid JSON, a newer schema) is skipped and counted with its reason; a job already stored is not
    duplicated.
    """
    from ..record import upgrade_record

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and _import_kind(p) is not None)
    elif source.is_file() and _import_kind(source) is not None:
        files = [source]
    elif source.is_file():
        raise InputError(f"{source} is not a record file: expected a folder, or a file ending in "
                         f"{', '.join(IMPORT_SUFFIXES)}")
    else:
        raise InputError(f"{str(source)!r} does not exist (expected a folder of records or a records.jsonl[.gz] "
                         "export)")
    st, opened = _as_store(store)
    report = ImportReport()
    try:
        for path in files:
            for where, data in _read_items(path):
                if isinstance(data, str):
                    report.skipped.append((where, data))
                    continue
                if not isinstance(data, dict) or data.get("kind") != "ncbench.evaluate":
                    report.skipped.append((where, "not an ncbench result record (no kind 'ncbench.evaluate')"))
                    continue
                try:
                    record = upgrade_record(data)
                    written = st.put_record(record)  # membership of the sweep that computed it
                    if sweep is not None:
                        own = record["provenance"].get("sweep")
                        axes = own.get("axes") if isinstance(own, dict) else None
                        st.link(record["provenance"]["job_id"], sweep=sweep, axes=axes or {})
                except InputError as err:
                    report.skipped.append((where, str(err)))
                    continue
                if written:
                    report.imported += 1
                else:
                    report.already_stored += 1
    finally:
        if opened:
            st.close()
    return report


# ------------------------------------------------------------------------------------------------ export

#: significant digits of an exported number. float64 holds 15.95 decimal digits; what the 16th and 17th
#: digits of a shortest round-trip repr add is the rounding of the arithmetic (1 - 0.683 = 0.31699999999999995),
#: not information
EXPORT_DIGITS = 15


def denoise(value):
    """A float at :data:`EXPORT_DIGITS` significant digits (0.31699999999999995 -> 0.317); others unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{EXPORT_DIGITS}g}")
    return value


def frame_table(frame):
    """A copy of a :func:`load_frame` table with every float column at :data:`EXPORT_DIGITS` significant
    digits (exports only: the frame itself keeps full float64)."""
    import numpy as np

    out = frame.copy()
    for col in out.columns:
        if out[col].dtype in (np.float64, object):  # object: an axis column may hold floats among strings
            out[col] = out[col].map(denoise)
    return out


def frame_csv(frame) -> bytes:
    """The table as CSV (``\n`` line ends, shortest round-trip floats at :data:`EXPORT_DIGITS` digits)."""
    return frame_table(frame).to_csv(index=False, lineterminator="\n").encode()


def records_jsonl(records) -> bytes:
    """One record per line: compact JSON, sorted keys, numbers exactly as stored (a record is data, kept
    bit for bit: importing the export gives the same records)."""
    return "".join(to_json(r) + "\n" for r in records).encode()


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a timestamp or file name: the same bytes give the same file (commits stay quiet)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:
        f.write(data)
    return buf.getvalue()


EXPORT_FORMATS = ("csv", "jsonl", "parquet")


def export_results(store, *, fmt: str, sweep: str | None = None) -> tuple[bytes, int]:
    """The store's done jobs as bytes, and their number.

    ``csv`` / ``parquet``: :func:`load_frame`'s table, floats at :data:`EXPORT_DIGITS` significant digits
    (:func:`frame_table`); ``jsonl``: one full record per line, as stored (:func:`records_jsonl`), which
    ``ncbench results import`` reads back.
    """
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
            return records_jsonl(records), len(records)
        frame = load_frame(st, sweep=sweep)
    finally:
        if opened:
            st.close()
    if fmt == "csv":
        return frame_csv(frame), len(frame)
    table = frame_table(frame)
    table.attrs = {}  # pyarrow would store attrs as pandas metadata; the axes are the leading columns anyway
    buf = io.BytesIO()
    try:
        table.to_parquet(buf, index=False)
    except ImportError as err:
        raise InputError(f"parquet export needs pyarrow (pip install pyarrow): {err}") from None
    return buf.getvalue(), len(frame)


def format_of(path: str | os.PathLike) -> str | None:
    """The export format a file name asks for (``x.csv``, ``x.jsonl.gz``, ``x.parquet``), or None."""
    name = Path(path).name
    name = name[:-3] if name.endswith(".gz") else name
    return next((f for f in EXPORT_FORMATS if name.endswith("." + f)), None)


def write_export(data: bytes, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write an export atomically (temporary file, then rename); refuse to replace a file unless ``force``.

    A path ending in ``.gz`` is gzip-compressed without a timestamp (:func:`gzip_bytes`), so exporting the
    same jobs twice gives the same bytes.
    """
    from .._io import write_replace

    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} exists; choose another -o or pass --force to replace it")
    if path.name.endswith(".parquet.gz"):
        raise InputError(f"{path}: parquet is compressed already; write it to a .parquet file")
    return write_replace(path, gzip_bytes(data) if path.suffix == ".gz" else data)
