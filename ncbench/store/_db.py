"""The store file's SQLite layout, opening a connection, and the one-transaction-per-write rule.

Tables (``user_version`` is :data:`STORE_VERSION`; a newer file is refused, not misread):

``jobs``
    one row per ``job_id`` (unique): the record as JSON, and indexed columns ``sweep`` (the sweep that
    computed it), ``dataset``, ``model``, ``status`` (``'done'`` or ``'failed'``), ``created``, ``error``,
    ``wall_time_s``. A failed job keeps its config and error message instead of a record.
``sweep_jobs``
    which jobs belong to which sweep, with the job's grid cell (``axes``: dotted key -> value). A job
    belongs to every sweep that asked for it: a job one sweep computed is reused, not recomputed, by another.
``sweeps``
    each sweep's axes in grid order (what :func:`ncbench.store.load_frame` names its axis columns after).
``sweep_cells`` (layout 2)
    each sweep's grid as its last run registered it: one row per cell (``cell``, ``job_id``, ``axes``),
    finished or not, so that what is missing can be counted against the grid. A sweep registered by
    layout 1 has no rows here: its grid is unknown until the sweep runs again.

A file of an older layout is migrated when it is opened (one transaction, :data:`MIGRATIONS`).

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) with a busy timeout, so several
processes may write at once and none loses a row; a process killed mid-write leaves the last committed state.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from .._errors import InputError

DEFAULT_STORE = "ncbench-results/results.sqlite"
#: the store's own layout version (``PRAGMA user_version``): a newer file is refused, not misread
STORE_VERSION = 2
STATUSES = ("done", "failed")
#: seconds a writer waits for another writer's transaction before giving up (SQLite ``busy_timeout``)
BUSY_TIMEOUT_S = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY NOT NULL,
    sweep       TEXT,
    dataset     TEXT,
    model       TEXT,
    status      TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    created     TEXT NOT NULL,
    error       TEXT,
    wall_time_s REAL,
    config      TEXT,
    record      TEXT
);
CREATE INDEX IF NOT EXISTS jobs_sweep ON jobs (sweep);
CREATE INDEX IF NOT EXISTS jobs_dataset ON jobs (dataset);
CREATE INDEX IF NOT EXISTS jobs_model ON jobs (model);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created);
CREATE TABLE IF NOT EXISTS sweep_jobs (
    sweep  TEXT NOT NULL,
    job_id TEXT NOT NULL,
    axes   TEXT NOT NULL,
    cell   INTEGER,
    PRIMARY KEY (sweep, job_id)
);
CREATE INDEX IF NOT EXISTS sweep_jobs_job ON sweep_jobs (job_id);
CREATE TABLE IF NOT EXISTS sweeps (
    name    TEXT PRIMARY KEY NOT NULL,
    axes    TEXT NOT NULL,
    updated TEXT NOT NULL
);
"""

#: ``{from_version: statements}`` that take a file from layout ``from_version`` to ``from_version + 1``; a new
#: file gets the layout-1 tables above, then every migration, so each migration runs in every test that opens
#: a store
MIGRATIONS = {
    1: """
CREATE TABLE IF NOT EXISTS sweep_cells (
    sweep  TEXT NOT NULL,
    cell   INTEGER,
    job_id TEXT NOT NULL,
    axes   TEXT NOT NULL,
    PRIMARY KEY (sweep, job_id)
);
CREATE INDEX IF NOT EXISTS sweep_cells_cell ON sweep_cells (sweep, cell);
""",
}


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the ``created`` / ``updated`` columns)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_json(obj) -> str:
    """Compact JSON that refuses NaN/inf (a stored number must be a number)."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as err:
        raise InputError(f"cannot store a value that is not finite (NaN or inf): {err}") from None
    except TypeError as err:
        raise InputError(f"cannot store a value that is not JSON (numbers, strings, lists, mappings): {err}") from None


def axes_json(axes: dict) -> str:
    """Axes keep their grid order (no key sorting)."""
    try:
        return json.dumps(dict(axes), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"sweep axes must be JSON values; got {axes!r}: {err}") from None


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken up front, so two
    writers queue on the busy timeout instead of failing on a lock upgrade."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def connect(path: str | os.PathLike, *, create: bool) -> sqlite3.Connection:
    """Open the store file in WAL mode with the busy timeout, creating its tables (and, with ``create``, the
    file and its folder) or migrating an older layout to :data:`STORE_VERSION`.

    Raises
    ------
    InputError
        No file and not ``create``; not a SQLite file; a filesystem without WAL; a newer layout version.
    """
    path = Path(path)
    if not path.is_file():
        if not create:
            raise InputError(f"no results store at {str(path)!r} (run `ncbench sweep` or "
                             "`ncbench results import` first, or pass --store PATH)")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = _switch_to_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")  # a committed job survives a power cut, not only a crash
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as err:
        what = "not a results store" if "not a database" in str(err) else "cannot open the results store"
        raise InputError(f"{path}: {what} (SQLite says: {err})") from None
    if mode == "locked":
        conn.close()
        raise InputError(f"{path}: another process kept the new store locked for {BUSY_TIMEOUT_S:g} s while it "
                         "was being set up; try again")
    if str(mode).lower() != "wal":
        conn.close()
        raise InputError(f"{path}: SQLite could not switch to WAL mode (got {mode!r}); the store must be "
                         "on a local filesystem")
    if version > STORE_VERSION:
        conn.close()
        raise InputError(f"{path} was written by a newer ncbench (store version {version}, this one reads "
                         f"up to {STORE_VERSION}); upgrade ncbench")
    if version < STORE_VERSION:
        with transaction(conn):
            # read again under the write lock: another process may have created or migrated the file meanwhile
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                _run(conn, _SCHEMA)
                version = 1
            for step in range(version, STORE_VERSION):
                _run(conn, MIGRATIONS[step])
            conn.execute(f"PRAGMA user_version = {STORE_VERSION}")
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, retried: on a new file that other processes open at the same moment the
    switch needs a lock that SQLite does not wait for (it reports "locked", or answers the old mode), so the
    first opener may lose the race. A "locked" answer is retried until the busy timeout (then "locked" is
    returned); an old mode for a few seconds only, since a filesystem without WAL answers it every time."""
    start = time.monotonic()
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            mode = None
        waited = time.monotonic() - start
        if mode is not None and (str(mode).lower() == "wal" or waited > _OLD_MODE_RETRY_S):
            return str(mode)
        if mode is None and waited > BUSY_TIMEOUT_S:
            return "locked"
        time.sleep(0.05)


#: seconds an old journal mode is retried: the race lasts milliseconds, a filesystem without WAL forever
_OLD_MODE_RETRY_S = 3.0


def _run(conn: sqlite3.Connection, script: str) -> None:
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement)
