"""Job bookkeeping: :class:`ResultsStore` writes finished and failed jobs and sweep membership, and answers
what is stored.

Writing the same job twice keeps one row: a ``'done'`` row is never replaced, a ``'failed'`` one is replaced
by ``'done'``. The file's layout and its connection are in :mod:`ncbench.store._db`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

from .._errors import InputError
from ._db import STATUSES, axes_json, connect, now, to_json, transaction


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
        if self._conn is None:
            self._conn = connect(self.path, create=create)
        return self._conn

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

    def find(self, prefix: str) -> list[str]:
        """The stored job ids (done or failed) that start with ``prefix`` (lowercase hex), sorted."""
        if not isinstance(prefix, str) or not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise InputError(f"a job id prefix is lowercase hex digits (the first characters of provenance.job_id, "
                             f"as `ncbench results list --sweep NAME` shows them); got {prefix!r}")
        if not self.exists():
            return []
        rows = self._read().execute("SELECT job_id FROM jobs WHERE substr(job_id, 1, ?) = ? ORDER BY job_id",
                                    (len(prefix), prefix)).fetchall()
        return [j for (j,) in rows]

    def record(self, job_id: str) -> dict | None:
        """The record of a job stored as done, or None."""
        if not self.exists():
            return None
        row = self._read().execute("SELECT record FROM jobs WHERE job_id = ? AND status = 'done'",
                                   (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

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

    def cells(self, sweep: str) -> dict[str, tuple[int | None, list]]:
        """``{job_id: (cell, [(axis, value), ...])}`` of the jobs that belong to ``sweep``, the axes in their
        stored order (a record's own ``provenance.sweep.axes`` are key-sorted; the grid's order is the sweep's)."""
        if not self.exists():
            return {}
        rows = self._read().execute("SELECT job_id, cell, axes FROM sweep_jobs WHERE sweep = ?", (sweep,)).fetchall()
        return {j: (c, list(json.loads(a).items())) for j, c, a in rows}

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
        """Per sweep, counted against its grid: ``{sweep, grid, done, failed, missing, outside, jobs}``.

        ``grid``: jobs in the sweep's grid as its last run registered it (None: not recorded, a sweep stored
        by store layout 1 or made by ``ncbench results import --sweep``); ``done`` / ``failed``: grid jobs
        stored so; ``missing``: grid jobs not stored at all (never run, or interrupted; None when the grid is
        unknown); ``outside``: stored members that are not in the grid (added by an import); ``jobs``: stored
        members. Without a grid, done and failed count the stored members. Jobs in no sweep come last, under
        ``sweep: None``.
        """
        if not self.exists():
            return []
        conn = self._read()
        out = []
        for name in self.sweeps():
            members = dict(conn.execute(
                "SELECT m.job_id, j.status FROM sweep_jobs m JOIN jobs j ON j.job_id = m.job_id "
                "WHERE m.sweep = ?", (name,)).fetchall())
            grid = self.grid(name)
            row = {"sweep": name, "jobs": len(members), "grid": None, "missing": None, "outside": 0}
            if grid is None:
                states = list(members.values())
            else:
                states = [c["status"] for c in grid]
                in_grid = {c["job_id"] for c in grid}
                row.update(grid=len(grid), missing=states.count(None), outside=len(set(members) - in_grid))
            row.update(done=states.count("done"), failed=states.count("failed"))
            out.append(row)
        loose = dict(conn.execute(
            "SELECT status, count(*) FROM jobs WHERE job_id NOT IN (SELECT job_id FROM sweep_jobs) "
            "GROUP BY status").fetchall())
        if loose:
            out.append({"sweep": None, "done": loose.get("done", 0), "failed": loose.get("failed", 0),
                        "jobs": sum(loose.values()), "grid": None, "missing": None, "outside": 0})
        return out

    def grid(self, sweep: str) -> list[dict] | None:
        """The sweep's grid as its last run registered it, in cell order: ``{cell, job_id, axes, status,
        created, error}`` per job, ``status`` None for a job that is not stored (never ran, or interrupted).
        None when the store does not know the sweep's grid (see :meth:`summary`)."""
        if not self.exists():
            return None
        rows = self._read().execute(
            "SELECT c.cell, c.job_id, c.axes, j.status, j.created, j.error FROM sweep_cells c LEFT JOIN jobs j "
            "ON j.job_id = c.job_id WHERE c.sweep = ? ORDER BY c.cell IS NULL, c.cell, c.job_id", (sweep,)).fetchall()
        if not rows:
            return None
        return [{"cell": c, "job_id": j, "axes": json.loads(a), "status": s, "created": t, "error": e}
                for c, j, a, s, t, e in rows]

    def jobs(self, *, sweep: str) -> list[dict]:
        """One sweep's jobs, done and failed, in grid order: ``{job_id, status, created, error, axes}``."""
        if not self.exists():
            return []
        rows = self._read().execute(
            "SELECT j.job_id, j.status, j.created, j.error, m.axes FROM sweep_jobs m JOIN jobs j "
            "ON j.job_id = m.job_id WHERE m.sweep = ? ORDER BY m.cell IS NULL, m.cell, j.job_id", (sweep,)).fetchall()
        return [{"job_id": j, "status": s, "created": c, "error": e, "axes": json.loads(a)} for j, s, c, e, a in rows]

    # ----------------------------------------------------------------------------------------------- writes

    def put_sweep(self, name: str, axes, *, cells=None) -> None:
        """Register (or update) a sweep's axes, in grid order, and its grid.

        ``cells``: the grid as it is now, ``[(cell, job_id, axes)]`` (every job of the grid, finished or
        not). It replaces the grid recorded before, so that :meth:`summary` counts what is missing against it;
        membership of stored jobs outside it (cells of an edited grid) is dropped, so that
        ``load_frame(sweep=name)`` is the current grid. The jobs themselves stay in the store, and a grid that
        brings a cell back reuses its job."""
        axes = [str(a) for a in axes]
        cells = None if cells is None else [(c, str(j), axes_json(a)) for c, j, a in cells]
        with transaction(self._write()) as conn:
            conn.execute("INSERT INTO sweeps (name, axes, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                         "SET axes = excluded.axes, updated = excluded.updated", (name, json.dumps(axes), now()))
            if cells is not None:
                keep = {j for _, j, _ in cells}
                old = [j for (j,) in conn.execute("SELECT job_id FROM sweep_jobs WHERE sweep = ?", (name,))]
                conn.executemany("DELETE FROM sweep_jobs WHERE sweep = ? AND job_id = ?",
                                 [(name, j) for j in old if j not in keep])
                conn.execute("DELETE FROM sweep_cells WHERE sweep = ?", (name,))
                conn.executemany("INSERT INTO sweep_cells (sweep, cell, job_id, axes) VALUES (?, ?, ?, ?)",
                                 [(name, c, j, a) for c, j, a in cells])

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
        body = to_json(record)
        config = to_json(prov.get("config")) if prov.get("config") is not None else None
        with transaction(self._write()) as conn:
            cur = conn.execute(
                "INSERT INTO jobs (job_id, sweep, dataset, model, status, created, error, wall_time_s, config, record) "
                "VALUES (?, ?, ?, ?, 'done', ?, NULL, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                "sweep = excluded.sweep, dataset = excluded.dataset, model = excluded.model, status = 'done', "
                "created = excluded.created, error = NULL, wall_time_s = excluded.wall_time_s, "
                "config = excluded.config, record = excluded.record WHERE jobs.status = 'failed'",
                (job_id, computed_by if computed_by is not None else sweep, dataset, model,
                 str(record.get("created") or now()), _number_or_none(wall), config, body))
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
        with transaction(self._write()) as conn:
            cur = conn.execute(
                "INSERT INTO jobs (job_id, sweep, dataset, model, status, created, error, config) "
                "VALUES (?, ?, ?, ?, 'failed', ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                "created = excluded.created, error = excluded.error, config = excluded.config "
                "WHERE jobs.status = 'failed'",
                (job_id, sweep, dataset, model, now(), str(error), to_json(config) if config is not None else None))
            written = cur.rowcount > 0
            if sweep is not None:
                _add_member(conn, sweep, job_id, axes or {}, cell)
        return written

    def link(self, job_id: str, *, sweep: str, axes: dict, cell: int | None = None) -> None:
        """Add a stored job to ``sweep`` (a job another sweep computed, reused here)."""
        self.link_all(sweep, [(job_id, axes, cell)])

    def link_all(self, sweep: str, members) -> None:
        """Add (or update) the membership of stored jobs in ``sweep``, ``[(job_id, axes, cell)]``, in one
        transaction: the grid's cell number and axes (in grid order) replace what an import recorded."""
        with transaction(self._write()) as conn:
            for job_id, axes, cell in members:
                _add_member(conn, sweep, job_id, axes, cell)



def _add_member(conn, sweep: str, job_id: str, axes: dict, cell: int | None) -> None:
    conn.execute("INSERT INTO sweep_jobs (sweep, job_id, axes, cell) VALUES (?, ?, ?, ?) ON CONFLICT (sweep, job_id) "
                 "DO UPDATE SET axes = excluded.axes, cell = coalesce(excluded.cell, sweep_jobs.cell)",
                 (sweep, job_id, axes_json(axes), cell))


def _check_job_id(job_id) -> None:
    if not (isinstance(job_id, str) and len(job_id) == 64 and all(c in "0123456789abcdef" for c in job_id)):
        raise InputError(f"a job id is 64 lowercase hex digits (provenance.job_id); got {job_id!r}")


def _record_key(record) -> tuple[str, dict]:
    if not isinstance(record, dict) or record.get("kind") != "ncbench.evaluate":
        raise InputError("not a result record: expected a mapping with kind 'ncbench.evaluate' (docs/records.md)")
    from ..record import SCHEMA_VERSION

    if record.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"the store takes schema_version {SCHEMA_VERSION} records; got "
                         f"{record.get('schema_version')!r} (upgrade it with ncbench.record.upgrade_record)")
    from ..record import validate_record

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

