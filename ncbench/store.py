"""The results store: every result record of a results folder in one SQLite file, keyed on its job id.

One file (default ``ncbench-results/results.sqlite``, stdlib :mod:`sqlite3` in WAL mode) holds

``jobs``
    one row per ``job_id`` (unique): the record as JSON, and indexed columns ``sweep`` (the sweep that
    computed it), ``dataset``, ``model``, ``status`` (``'done'`` or ``'failed'``), ``created``, ``error``,
    ``wall_time_s``. A failed job keeps its config and error message instead of a record.
``sweep_jobs``
    which jobs belong to which sweep, with the job's grid cell (``axes``: dotted key -> value). A job
    belongs to every sweep that asked for it: a job one sweep computed is reused, not recomputed, by another.
``sweeps``
    each sweep's axes in grid order (what :func:`load_frame` names its axis columns after).

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) with a busy timeout, so several
processes may write at once and none loses a row; a process killed mid-write leaves the last committed state.
Writing the same job twice keeps one row: a ``'done'`` row is never replaced, a ``'failed'`` one is replaced
by ``'done'``.

>>> store = ResultsStore("ncbench-results/results.sqlite")      # doctest: +SKIP
>>> frame = load_frame(store, sweep="mnist1d-capacity")         # doctest: +SKIP
>>> frame.attrs["axes"]                                         # doctest: +SKIP
['model_args.channels', 'train.weight_decay', 'dataset_args.label_noise', 'seed']
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ._budget import eps_label
from ._errors import InputError

DEFAULT_STORE = "ncbench-results/results.sqlite"
#: the store's own layout version (``PRAGMA user_version``): a newer file is refused, not misread
STORE_VERSION = 1
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json(obj) -> str:
    """Compact JSON that refuses NaN/inf (a stored number must be a number)."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as err:
        raise InputError(f"cannot store a value that is not finite (NaN or inf): {err}") from None
    except TypeError as err:
        raise InputError(f"cannot store a value that is not JSON (numbers, strings, lists, mappings): {err}") from None


def _axes_json(axes: dict) -> str:
    """Axes keep their grid order (no key sorting)."""
    try:
        return json.dumps(dict(axes), separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"sweep axes must be JSON values; got {axes!r}: {err}") from None


class ResultsStore:
    """A results store file. Opened (and created, with its folder, by the first write) on first use.

    Parameters
    ----------
    path : str or path-like
        The SQLite file, e.g. ``ncbench-results/results.sqlite``. Its folder also holds the sweeps'
        checkpoints (``checkpoints/<job_id>.safetensors``) and Slurm bookkeeping (``slurm/<sweep>/``).

    One object per process (a connection is not shared across processes; open another ``ResultsStore`` on
    the same path in each). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def folder(self) -> Path:
        """The results folder this store lives in."""
        return self.path.parent

    def exists(self) -> bool:
        return self.path.is_file()

    # ------------------------------------------------------------------------------------------ connection

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if not self.path.is_file():
            if not create:
                raise InputError(f"no results store at {str(self.path)!r} (run `ncbench sweep` or "
                                 "`ncbench results import` first, or pass --store PATH)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")  # a committed job survives a power cut, not only a crash
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            what = "not a results store" if "not a database" in str(err) else "cannot open the results store"
            raise InputError(f"{self.path}: {what} (SQLite says: {err})") from None
        if str(mode).lower() != "wal":
            conn.close()
            raise InputError(f"{self.path}: SQLite could not switch to WAL mode (got {mode!r}); the store must be "
                             "on a local filesystem")
        if version > STORE_VERSION:
            conn.close()
            raise InputError(f"{self.path} was written by a newer ncbench (store version {version}, this one reads "
                             f"up to {STORE_VERSION}); upgrade ncbench")
        with _transaction(conn):
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                conn.execute(f"PRAGMA user_version = {STORE_VERSION}")
        self._conn = conn
        return conn

    def _read(self) -> sqlite3.Connection:
        return self._connect(create=False)

    def _write(self) -> sqlite3.Connection:
        return self._connect(create=True)

    # ---------------------------------------------------------------------------------------------- queries

    def status(self, job_id: str) -> str | None:
        """``'done'``, ``'failed'``, or None when the job is not stored."""
        if not self.exists():
            return None
        row = self._read().execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def has(self, job_id: str) -> bool:
        """True when the job is stored as done (a failed job is stored but not done)."""
        return self.status(job_id) == "done"

    def statuses(self, job_ids=None) -> dict[str, str]:
        """``{job_id: status}`` of the stored jobs among ``job_ids`` (all stored jobs when None)."""
        if not self.exists():
            return {}
        rows = self._read().execute("SELECT job_id, status FROM jobs").fetchall()
        if job_ids is None:
            return dict(rows)
        wanted = set(job_ids)
        return {j: s for j, s in rows if j in wanted}

    def members(self, sweep: str) -> dict[str, dict]:
        """``{job_id: axes}`` of the jobs that belong to ``sweep`` (done or failed), in cell order."""
        if not self.exists():
            return {}
        rows = self._read().execute("SELECT job_id, axes FROM sweep_jobs WHERE sweep = ? "
                                    "ORDER BY cell IS NULL, cell, job_id", (sweep,)).fetchall()
        return {j: json.loads(a) for j, a in rows}

    def sweep_axes(self, sweep: str) -> list[str] | None:
        """The sweep's axes in grid order, as its last run wrote them (None when the store has no such sweep)."""
        if not self.exists():
            return None
        row = self._read().execute("SELECT axes FROM sweeps WHERE name = ?", (sweep,)).fetchone()
        if row:
            return list(json.loads(row[0]))
        keys: dict[str, None] = {}
        for axes in self.members(sweep).values():
            keys.update(dict.fromkeys(axes))
        return list(keys) if keys else None

    def sweeps(self) -> list[str]:
        """Names of the sweeps with at least one job or a registered grid, sorted."""
        if not self.exists():
            return []
        conn = self._read()
        names = {r[0] for r in conn.execute("SELECT DISTINCT sweep FROM sweep_jobs")}
        names |= {r[0] for r in conn.execute("SELECT name FROM sweeps")}
        return sorted(names)

    def wall_times(self) -> list[dict]:
        """``[{job_id, sweeps, dataset, model, wall_time_s}]`` of the done jobs that recorded a wall time."""
        if not self.exists():
            return []
        rows = self._read().execute(
            "SELECT j.job_id, j.dataset, j.model, j.wall_time_s, group_concat(m.sweep, char(31)) FROM jobs j "
            "LEFT JOIN sweep_jobs m ON m.job_id = j.job_id WHERE j.status = 'done' AND j.wall_time_s IS NOT NULL "
            "GROUP BY j.job_id").fetchall()
        return [{"job_id": j, "dataset": d, "model": m, "wall_time_s": float(w),
                 "sweeps": s.split(chr(31)) if s else []} for j, d, m, w, s in rows]

    def records(self, *, sweep: str | None = None, status: str = "done") -> list[dict]:
        """The stored records (``status='done'``) or failures (``status='failed'``), of one sweep or all.

        A failure is ``{job_id, kind: "ncbench.failure", sweep, dataset, model, created, error, config}``.
        Order: a sweep's jobs in grid order; all jobs by creation time, then job id.
        """
        if status not in STATUSES:
            raise InputError(f"status must be one of {STATUSES}; got {status!r}")
        if not self.exists():
            return []
        conn = self._read()
        if sweep is None:
            rows = conn.execute("SELECT job_id, sweep, dataset, model, created, error, config, record FROM jobs "
                                "WHERE status = ? ORDER BY created, job_id", (status,)).fetchall()
        else:
            rows = conn.execute(
                "SELECT j.job_id, j.sweep, j.dataset, j.model, j.created, j.error, j.config, j.record FROM jobs j "
                "JOIN sweep_jobs m ON m.job_id = j.job_id WHERE m.sweep = ? AND j.status = ? "
                "ORDER BY m.cell IS NULL, m.cell, j.job_id", (sweep, status)).fetchall()
        if status == "done":
            return [json.loads(r[7]) for r in rows]
        return [{"job_id": j, "kind": "ncbench.failure", "sweep": s, "dataset": d, "model": m, "created": c,
                 "error": e, "config": json.loads(cfg) if cfg else None} for j, s, d, m, c, e, cfg, _ in rows]

    def summary(self) -> list[dict]:
        """Per sweep: ``{sweep, done, failed, jobs}``; jobs in no sweep under ``sweep: None`` (last)."""
        if not self.exists():
            return []
        conn = self._read()
        out = []
        for name in self.sweeps():
            counts = dict(conn.execute(
                "SELECT j.status, count(*) FROM sweep_jobs m JOIN jobs j ON j.job_id = m.job_id "
                "WHERE m.sweep = ? GROUP BY j.status", (name,)).fetchall())
            out.append({"sweep": name, "done": counts.get("done", 0), "failed": counts.get("failed", 0),
                        "jobs": sum(counts.values())})
        loose = dict(conn.execute(
            "SELECT status, count(*) FROM jobs WHERE job_id NOT IN (SELECT job_id FROM sweep_jobs) "
            "GROUP BY status").fetchall())
        if loose:
            out.append({"sweep": None, "done": loose.get("done", 0), "failed": loose.get("failed", 0),
                        "jobs": sum(loose.values())})
        return out

    def jobs(self, *, sweep: str) -> list[dict]:
        """One sweep's jobs, done and failed, in grid order: ``{job_id, status, created, error, axes}``."""
        if not self.exists():
            return []
        rows = self._read().execute(
            "SELECT j.job_id, j.status, j.created, j.error, m.axes FROM sweep_jobs m JOIN jobs j "
            "ON j.job_id = m.job_id WHERE m.sweep = ? ORDER BY m.cell IS NULL, m.cell, j.job_id", (sweep,)).fetchall()
        return [{"job_id": j, "status": s, "created": c, "error": e, "axes": json.loads(a)} for j, s, c, e, a in rows]

    # ----------------------------------------------------------------------------------------------- writes

    def put_sweep(self, name: str, axes, *, job_ids=None) -> None:
        """Register (or update) a sweep's axes, in grid order.

        ``job_ids``: the jobs of the grid as it is now. Membership of jobs outside it (cells of an edited grid)
        is dropped, so that ``load_frame(sweep=name)`` is the current grid; the jobs themselves stay in the
        store, and a grid that brings a cell back reuses its job."""
        axes = [str(a) for a in axes]
        with _transaction(self._write()) as conn:
            conn.execute("INSERT INTO sweeps (name, axes, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                         "SET axes = excluded.axes, updated = excluded.updated", (name, json.dumps(axes), _now()))
            if job_ids is not None:
                keep = set(job_ids)
                old = [j for (j,) in conn.execute("SELECT job_id FROM sweep_jobs WHERE sweep = ?", (name,))]
                conn.executemany("DELETE FROM sweep_jobs WHERE sweep = ? AND job_id = ?",
                                 [(name, j) for j in old if j not in keep])

    def put_record(self, record: dict, *, sweep: str | None = None, axes: dict | None = None,
                   cell: int | None = None) -> bool:
        """Store a finished job's record (one transaction). Idempotent.

        Parameters
        ----------
        record : dict
            A current-schema record (``provenance.job_id`` is the key; upgrade older ones with
            :func:`ncbench.record.upgrade_record` first).
        sweep, axes, cell : optional
            Add the job to this sweep with this grid cell (default: the record's ``provenance.sweep``).

        Returns
        -------
        bool
            True when the record was written (new, or replacing a failure); False when the job was already
            stored as done (that row is kept as it was; the sweep membership is still added).
        """
        job_id, prov = _record_key(record)
        own = prov.get("sweep") if isinstance(prov.get("sweep"), dict) else {}
        computed_by = own.get("name")
        if sweep is None and computed_by is not None:
            sweep = computed_by
        if sweep is not None and axes is None:
            axes = own.get("axes") if computed_by == sweep else {}
        wall = (prov.get("wall_time_s") or {}).get("total") if isinstance(prov.get("wall_time_s"), dict) else None
        dataset = (prov.get("dataset") or {}).get("name")
        model = (prov.get("model") or {}).get("arch")
        body = _json(record)
        config = _json(prov.get("config")) if prov.get("config") is not None else None
        with _transaction(self._write()) as conn:
            cur = conn.execute(
                "INSERT INTO jobs (job_id, sweep, dataset, model, status, created, error, wall_time_s, config, record) "
                "VALUES (?, ?, ?, ?, 'done', ?, NULL, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                "sweep = excluded.sweep, dataset = excluded.dataset, model = excluded.model, status = 'done', "
                "created = excluded.created, error = NULL, wall_time_s = excluded.wall_time_s, "
                "config = excluded.config, record = excluded.record WHERE jobs.status = 'failed'",
                (job_id, computed_by if computed_by is not None else sweep, dataset, model,
                 str(record.get("created") or _now()), _number_or_none(wall), config, body))
            written = cur.rowcount > 0
            if sweep is not None:
                _add_member(conn, sweep, job_id, axes or {}, cell)
        return written

    def put_failure(self, job_id: str, *, sweep: str | None, axes: dict | None, dataset: str | None,
                    model: str | None, config: dict | None, error: str, cell: int | None = None) -> bool:
        """Store a job that raised, with its error message (one transaction).

        A job already stored as done is left as it is (returns False); a failure replaces an earlier failure
        of the same job (the newest message is kept).
        """
        _check_job_id(job_id)
        with _transaction(self._write()) as conn:
            cur = conn.execute(
                "INSERT INTO jobs (job_id, sweep, dataset, model, status, created, error, config) "
                "VALUES (?, ?, ?, ?, 'failed', ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                "created = excluded.created, error = excluded.error, config = excluded.config "
                "WHERE jobs.status = 'failed'",
                (job_id, sweep, dataset, model, _now(), str(error), _json(config) if config is not None else None))
            written = cur.rowcount > 0
            if sweep is not None:
                _add_member(conn, sweep, job_id, axes or {}, cell)
        return written

    def link(self, job_id: str, *, sweep: str, axes: dict, cell: int | None = None) -> None:
        """Add a stored job to ``sweep`` (a job another sweep computed, reused here)."""
        with _transaction(self._write()) as conn:
            _add_member(conn, sweep, job_id, axes, cell)


class _transaction:
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


def _add_member(conn, sweep: str, job_id: str, axes: dict, cell: int | None) -> None:
    conn.execute("INSERT INTO sweep_jobs (sweep, job_id, axes, cell) VALUES (?, ?, ?, ?) ON CONFLICT (sweep, job_id) "
                 "DO UPDATE SET axes = excluded.axes, cell = coalesce(excluded.cell, sweep_jobs.cell)",
                 (sweep, job_id, _axes_json(axes), cell))


def _check_job_id(job_id) -> None:
    if not (isinstance(job_id, str) and len(job_id) == 64 and all(c in "0123456789abcdef" for c in job_id)):
        raise InputError(f"a job id is 64 lowercase hex digits (provenance.job_id); got {job_id!r}")


def _record_key(record) -> tuple[str, dict]:
    if not isinstance(record, dict) or record.get("kind") != "ncbench.evaluate":
        raise InputError("not a result record: expected a mapping with kind 'ncbench.evaluate' (docs/records.md)")
    from .record import SCHEMA_VERSION

    if record.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"the store takes schema_version {SCHEMA_VERSION} records; got "
                         f"{record.get('schema_version')!r} (upgrade it with ncbench.record.upgrade_record)")
    from .record import validate_record

    validate_record(record)  # the shape of docs/records.md, numbers finite: what the frame can rely on
    prov = record["provenance"]
    _check_job_id(prov.get("job_id"))
    return prov["job_id"], prov


def _number_or_none(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _as_store(store) -> tuple[ResultsStore, bool]:
    """``store`` as a ResultsStore, and whether this call opened it (and so closes it)."""
    if isinstance(store, ResultsStore):
        return store, False
    if isinstance(store, (str, os.PathLike)):
        return ResultsStore(store), True
    raise InputError(f"store must be a path or a ResultsStore; got {type(store).__name__}")


# ------------------------------------------------------------------------------------------------- frame

#: the frame's fixed columns after the axes, in order (docs/records.md, "the frame")
_ID_COLUMNS = ("job_id", "sweep", "dataset", "model", "seed")
_ACCURACY_COLUMNS = ("train_accuracy", "test_accuracy", "generalization_gap")
_MEASURE_COLUMNS = ("num_parameters", "sum_squared_weights", "train_margin_p10", "final_train_loss",
                    "terminal_phase_epoch")
_TAIL_COLUMNS = ("reliable", "wall_time_s")


def _flat_axis_value(value):
    """Axis values become frame cells: numbers and strings as they are; lists and mappings as compact JSON
    (hashable, so the analysis can group by them)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _num(value) -> float:
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _attack_key(att: dict) -> str:
    return f"{str(att.get('name', 'attack')).lower()}_{att.get('norm', '')}".rstrip("_")


def _row(record: dict, sweep: str | None, axes: dict, by_attack: bool = False) -> tuple[dict, list[str], list[str]]:
    """One frame row from a record; also the budget and extra-attack column names it produced, in order.

    The main attack's columns are ``robust_accuracy@<eps>``; ``by_attack`` (set when the frame's rows ran
    different main attacks, e.g. a sweep over ``attack.norm``) names them by their attack instead
    (``<name>_<norm>_accuracy@<eps>``), so one column never mixes two threat models."""
    prov = record.get("provenance") or {}
    acc = record.get("accuracy") or {}
    measures = record.get("measures") or {}
    training = record.get("training") or {}
    row = {f"__axis__{k}": _flat_axis_value(v) for k, v in axes.items()}
    row.update({
        "job_id": prov.get("job_id"),
        "sweep": sweep if sweep is not None else ((prov.get("sweep") or {}).get("name")
                                                  if isinstance(prov.get("sweep"), dict) else None),
        "dataset": (prov.get("dataset") or {}).get("name"),
        "model": (prov.get("model") or {}).get("arch"),
        "seed": prov.get("seed"),
        "train_accuracy": _num(acc.get("train")),
        "test_accuracy": _num(acc.get("test")),
    })
    row["generalization_gap"] = row["train_accuracy"] - row["test_accuracy"]
    collapse = record.get("collapse") or {}
    for split in ("train", "test"):
        for metric, value in (collapse.get(split) or {}).items():
            row[f"{split}.{metric}"] = _num(value)
    budgets, extras = [], []
    main = record.get("robustness") or {}
    reliable = bool(main.get("reliable", False)) if main else False
    if main:
        row["attack"] = main.get("label") or main.get("name")
        prefix = _attack_key(main) if by_attack else "robust"
        for point in main.get("curve") or []:
            if _num(point.get("eps")) > 0:
                col = f"{prefix}_accuracy@{eps_label(point['eps'])}"
                row[col] = _num(point.get("robust_accuracy"))
                budgets.append(col)
        margin = main.get("margin")
        if isinstance(margin, dict):
            row["fab_margin"] = _num(margin.get("mean_min_perturbation"))
            row["fab_margin_median"] = _num(margin.get("median_min_perturbation"))
    for extra in record.get("extra_robustness") or []:
        name = _attack_key(extra)
        reliable = reliable and bool(extra.get("reliable", False))
        for point in extra.get("curve") or []:
            if _num(point.get("eps")) > 0:
                col = f"{name}_accuracy@{eps_label(point['eps'])}"
                row[col] = _num(point.get("robust_accuracy"))
                extras.append(col)
    model = prov.get("model") or {}
    for key in _MEASURE_COLUMNS:
        value = measures.get(key)
        if value is None and key == "num_parameters":
            value = model.get("num_parameters")
        if value is None and key == "final_train_loss":
            value = training.get("final_loss")
        if key == "terminal_phase_epoch":
            value = training.get("terminal_phase_epoch")
        row[key] = _num(value)
    row["reliable"] = reliable
    wall = prov.get("wall_time_s")
    row["wall_time_s"] = _num(wall.get("total") if isinstance(wall, dict) else wall)
    return row, budgets, extras


def _budget_order(col: str) -> tuple:
    name, _, label = col.partition("@")
    from ._budget import canonical_eps

    try:
        return (name, canonical_eps(label))
    except InputError:
        return (name, math.inf)


def load_frame(store, sweep: str | None = None):
    """One row per finished job, numbers as numbers (docs/records.md, "the frame").

    Parameters
    ----------
    store : path or ResultsStore
    sweep : str, optional
        Only this sweep's jobs, with its axes (also the jobs it reused from other sweeps). Default: every
        done job, with the axes its record carries (``provenance.sweep.axes``).

    Returns
    -------
    pandas.DataFrame
        Columns: the axes by their dotted keys (grid order), ``job_id``, ``sweep``, ``dataset``, ``model``,
        ``seed``, ``train_accuracy``, ``test_accuracy``, ``generalization_gap`` (train - test, fractions),
        ``train.<metric>`` and ``test.<metric>`` per collapse metric, ``attack`` (the main attack's label),
        ``robust_accuracy@<eps label>`` per budget > 0 (ascending; when the rows ran different main attacks,
        e.g. a sweep over ``attack.norm``, these are ``<name>_<norm>_accuracy@<eps label>`` instead, so a column
        never mixes two threat models), ``<name>_<norm>_accuracy@<eps label>`` per
        extra attack's budget (``pgd_L2_accuracy@0.1``), ``fab_margin`` / ``fab_margin_median`` where measured, ``num_parameters``,
        ``sum_squared_weights``, ``train_margin_p10``, ``final_train_loss``, ``terminal_phase_epoch`` (float:
        NaN when training never reached zero error), ``reliable`` (bool: every attack's checks passed),
        ``wall_time_s``. A value a record lacks is NaN. ``frame.attrs["axes"]``: the axis columns, in order.
        Rows: a sweep's jobs in grid order.
    """
    import pandas as pd

    if sweep is not None and not isinstance(sweep, str):
        raise InputError(f"sweep must be a sweep name (str) or None; got {sweep!r}")
    st, opened = _as_store(store)
    try:
        if not st.exists():
            st._read()  # raises the "no results store" message
        if sweep is None:
            records = st.records()
            members = [(None, (r["provenance"].get("sweep") or {}).get("axes") or {}
                        if isinstance(r["provenance"].get("sweep"), dict) else {}) for r in records]
            axes_order: dict[str, None] = {}
            for _, axes in members:
                axes_order.update(dict.fromkeys(axes))
            axis_names = list(axes_order)
        else:
            known = st.sweeps()
            if sweep not in known:
                raise InputError(f"the store {str(st.path)!r} has no sweep {sweep!r}; it has: "
                                 f"{', '.join(known) if known else 'none'}")
            records = st.records(sweep=sweep)
            membership = st.members(sweep)
            members = [(sweep, membership.get(r["provenance"]["job_id"], {})) for r in records]
            axis_names = st.sweep_axes(sweep) or []
            for _, axes in members:  # an axis a job has that the registered grid no longer names: keep it
                axis_names += [a for a in axes if a not in axis_names]
    finally:
        if opened:
            st.close()
    rows, budgets, extras, metrics = [], {}, {}, {}
    mains = {_attack_key(r["robustness"]) for r in records if r.get("robustness")}
    by_attack = len(mains) > 1
    for record, (name, axes) in zip(records, members):
        row, b, e = _row(record, name, axes, by_attack)
        rows.append(row)
        budgets.update(dict.fromkeys(b))
        extras.update(dict.fromkeys(e))
        metrics.update(dict.fromkeys(k for k in row if k.startswith(("train.", "test."))))
    metric_cols = [m for split in ("train.", "test.") for m in metrics if m.startswith(split)]
    margin_cols = [c for c in ("fab_margin", "fab_margin_median") if any(c in r for r in rows)]
    fixed = (list(_ID_COLUMNS) + list(_ACCURACY_COLUMNS) + metric_cols
             + (["attack"] if any("attack" in r for r in rows) else [])
             + sorted(budgets, key=_budget_order) + sorted(extras, key=_budget_order) + margin_cols
             + list(_MEASURE_COLUMNS) + list(_TAIL_COLUMNS))
    # an axis named like a fixed column (seed, model, dataset) is that column: the grid's value, once
    columns = list(axis_names) + [c for c in fixed if c not in axis_names]
    data = {}
    for col in columns:
        if col in axis_names:
            data[col] = [r.get(f"__axis__{col}") for r in rows]
        else:
            data[col] = [r.get(col, math.nan if _is_numeric_column(col) else None) for r in rows]
    frame = pd.DataFrame(data, columns=columns)
    for col in columns:
        if col in axis_names:
            frame[col] = frame[col].infer_objects()
            if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (int, float))
                                                              and not isinstance(v, bool)).all():
                frame[col] = pd.to_numeric(frame[col])
            continue
        if col == "reliable":
            frame[col] = frame[col].astype(bool)
        elif col in ("seed", "num_parameters"):
            values = pd.to_numeric(frame[col], errors="coerce")
            frame[col] = values.astype("int64") if len(values) and values.notna().all() else values.astype(float)
        elif _is_numeric_column(col):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame.attrs["axes"] = list(axis_names)
    if sweep is not None:
        frame.attrs["sweep"] = sweep
    return frame


def _is_numeric_column(col: str) -> bool:
    return col not in ("job_id", "sweep", "dataset", "model", "attack", "reliable")


# ------------------------------------------------------------------------------------------ import/export

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
    from .record import upgrade_record

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
            return "".join(_json(r) + "\n" for r in records).encode(), len(records)
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
    from ._io import write_replace

    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path} exists; choose another -o or pass --force to replace it")
    return write_replace(path, data)
