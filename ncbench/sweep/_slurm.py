"""The Slurm executor (submitit): jobs outlive the submitting process; a later call collects their results.

Bookkeeping lives beside the store, in ``<results folder>/slurm/<sweep>/``:

``pending/<job_id>.json``
    one file per submitted job (its Slurm job id, grid cell, submit time), written right after ``sbatch``
    returned and removed once the job's outcome is in the store;
``logs/<slurm job id>/``
    submitit's folder: the pickled job, its result, stdout and stderr.

Every ``ncbench sweep`` call first collects the pending jobs of its sweep: a result is stored (done or
failed with its error); a job Slurm ended without a result is stored as failed when Slurm says why (TIMEOUT,
OUT_OF_MEMORY, FAILED), or forgotten so that it is submitted again when it was cancelled, preempted or lost
its node; a job still queued or running is left alone and not submitted twice. The folder must be on a
filesystem the compute nodes share (as submitit requires), and the Python that runs ``ncbench sweep`` must
exist on them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .._errors import InputError
from ._executors import Outcome, require
from ._job import JobSpec

SLURM_OPTIONS = ("partition", "gpus_per_job", "cpus_per_job", "timeout_min", "mem_gb", "slurm_params", "wait",
                 "cluster", "poll_s")
#: Slurm's time limit per job when none is given (submitit's own default is 5 minutes)
DEFAULT_TIMEOUT_MIN = 240
#: Slurm end states without a result that are the job's own doing: stored as failed (``--retry-failed`` reruns)
FAILED_STATES = ("TIMEOUT", "OUT_OF_MEMORY", "FAILED", "DEADLINE")
#: states of a job that is queued or running (``UNKNOWN``: sacct does not know it yet)
ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "UNKNOWN",
                 "READY", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED")


def sweep_folder(store_folder: Path, sweep: str) -> Path:
    return Path(store_folder) / "slurm" / sweep


@dataclass
class Collected:
    """What collecting a sweep's pending Slurm jobs found."""

    done: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)  # job ids to submit again
    running: list[dict] = field(default_factory=list)  # pending entries still queued or running


def read_pending(folder: Path) -> list[dict]:
    """The pending entries of a sweep's Slurm folder (unreadable files are skipped: they are rewritten whole)."""
    out = []
    for path in sorted((Path(folder) / "pending").glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        entry["_path"] = str(path)
        out.append(entry)
    return out


def _write_pending(folder: Path, spec: JobSpec, slurm_id: str, cluster: str, logs: Path) -> None:
    from .._io import write_replace

    target = Path(folder) / "pending"
    entry = {"job_id": spec.job_id, "slurm_job_id": str(slurm_id), "cluster": cluster, "cell": spec.cell,
             "axes": spec.axes, "sweep": spec.sweep, "config": spec.config, "logs": str(logs),
             "submitted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_replace(target / f"{spec.job_id}.json", json.dumps(entry, indent=1).encode())


def _forget(entry: dict) -> None:
    Path(entry["_path"]).unlink(missing_ok=True)


def _spec_of(entry: dict) -> JobSpec:
    return JobSpec(job_id=entry["job_id"], config=entry.get("config") or {}, sweep=entry.get("sweep"),
                   axes=entry.get("axes") or {}, cell=entry.get("cell"))


def _job_object(entry: dict):
    require("submitit", "slurm")
    folder = Path(entry["logs"]) / "%j"
    if entry.get("cluster") == "local":
        from submitit.local.local import LocalJob

        return LocalJob(folder=folder, job_id=entry["slurm_job_id"])
    from submitit.slurm.slurm import SlurmJob

    return SlurmJob(folder=folder, job_id=entry["slurm_job_id"])


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _error_line(text: str) -> str:
    """The exception line of a submitit failure trace (``InputError: ...``)."""
    body = text.split("-" * 22)
    trace = body[1] if len(body) > 2 else text
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text.strip()[:500]


def _state(job, entry: dict) -> str:
    """The job's scheduler state, first word upper-case (``RUNNING``, ``TIMEOUT``, ``CANCELLED``...)."""
    if entry.get("cluster") == "local":
        process = getattr(job, "_process", None)
        if process is not None:
            code = process.poll()
            return "RUNNING" if code is None else ("FAILED" if code > 0 else "CANCELLED")
        return "RUNNING" if _pid_alive(entry["slurm_job_id"]) else "CANCELLED"
    state = job.watcher.get_state(job.job_id, mode="cache")
    return (state or "UNKNOWN").split()[0].upper()


def _outcome(job, entry: dict) -> tuple[str, object]:
    """("done", record) | ("failed", message) | ("running", state) | ("lost", state)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if job.paths.result_pickle.exists():
        try:
            return "done", job.result()
        except FailedJobError as err:
            return "failed", f"{_error_line(str(err))} (Slurm job {entry['slurm_job_id']}; log {job.paths.stderr})"
        except UncompletedJobError as err:
            return "lost", str(err).splitlines()[0]
    state = _state(job, entry)
    if state in ACTIVE_STATES:
        return "running", state
    if state in FAILED_STATES:
        return "failed", (f"Slurm job {entry['slurm_job_id']} ended {state} without a result (log "
                          f"{job.paths.stderr}; raise --timeout-min or --mem-gb if it ran out)")
    return "lost", state


def _refresh_states(jobs, entries) -> None:
    """One sacct call for every Slurm job (not the local stand-ins)."""
    slurm_jobs = [j for j, e in zip(jobs, entries) if e.get("cluster") != "local"]
    if slurm_jobs:
        for j in slurm_jobs:
            j.watcher.register_job(j.job_id)
        slurm_jobs[0].watcher.update()


def collect(store, sweep: str, folder: Path) -> Collected:
    """Store the outcome of every finished pending job of ``sweep``; say which are still running or lost."""
    entries = read_pending(folder)
    out = Collected()
    if not entries:
        return out
    entries_left = []
    for entry in entries:
        if store.status(entry["job_id"]) == "done":  # collected by someone else already
            _forget(entry)
        else:
            entries_left.append(entry)
    jobs = [_job_object(e) for e in entries_left]
    _refresh_states(jobs, entries_left)
    for job, entry in zip(jobs, entries_left):
        kind, value = _outcome(job, entry)
        spec = _spec_of(entry)
        if kind == "done":
            store.put_record(value, sweep=spec.sweep, axes=spec.axes, cell=spec.cell)
            out.done += 1
            _forget(entry)
        elif kind == "failed":
            _store_failure(store, spec, str(value))
            out.failed += 1
            _forget(entry)
        elif kind == "lost":
            out.lost.append(entry["job_id"])
            _forget(entry)
        else:
            out.running.append(entry)
    return out


def _store_failure(store, spec: JobSpec, message: str) -> None:
    config = spec.config or {}
    store.put_failure(spec.job_id, sweep=spec.sweep, axes=spec.axes, dataset=config.get("dataset"),
                      model=config.get("model"), config=config or None, error=message, cell=spec.cell)


def make_executor(folder: Path, sweep: str, options: dict, workers: int | None):
    """A submitit AutoExecutor for Slurm (or, for tests, submitit's ``local`` cluster; never ``debug``)."""
    submitit = require("submitit", "slurm")
    cluster = options.get("cluster") or "slurm"
    if cluster == "debug":
        raise InputError("submitit's debug executor runs jobs in this process under pdb; use --executor local")
    if cluster not in ("slurm", "local"):
        raise InputError(f"cluster must be 'slurm' (or 'local' for tests); got {cluster!r}")
    logs = Path(folder).absolute() / "logs"
    try:
        ex = submitit.AutoExecutor(folder=logs / "%j", cluster=cluster)
    except RuntimeError as err:  # no srun on PATH
        raise InputError(f"--executor slurm: {err} (run ncbench sweep on a Slurm login node)") from None
    params = {"name": f"ncbench-{sweep}", "timeout_min": int(options.get("timeout_min") or DEFAULT_TIMEOUT_MIN),
              "cpus_per_task": int(options.get("cpus_per_job") or 1), "nodes": 1, "tasks_per_node": 1}
    if options.get("gpus_per_job"):
        params["gpus_per_node"] = int(options["gpus_per_job"])
    if options.get("mem_gb"):
        params["mem_gb"] = float(options["mem_gb"])
    if options.get("partition"):
        params["slurm_partition"] = str(options["partition"])
    if workers is not None:
        params["slurm_array_parallelism"] = int(workers)
    for key, value in dict(options.get("slurm_params") or {}).items():
        params[f"slurm_{key}"] = value
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError, AssertionError) as err:
        raise InputError(f"bad Slurm parameter: {' '.join(str(err).split())[:400]}") from None
    return ex, logs, cluster


def run_slurm(specs, sink, *, job_fn, workers=None, options=None, folder: Path, sweep: str,
              running: list[dict] = ()) -> Outcome:
    """Submit ``specs`` as one job array, record them as pending, then (unless ``wait`` is False) wait and
    collect each result as it lands, together with the ``running`` entries submitted by earlier calls.

    Ctrl-C stops the waiting, not the jobs: they keep running on the cluster and the next call collects them.
    """
    options = dict(options or {})
    folder = Path(folder)
    entries = list(running)
    jobs = [_job_object(e) for e in entries]
    if specs:
        ex, logs, cluster = make_executor(folder, sweep, options, workers)
        with ex.batch():
            submitted = [ex.submit(job_fn, spec) for spec in specs]
        for spec, job in zip(specs, submitted):
            _write_pending(folder, spec, job.job_id, cluster, logs)
        fresh = {e["job_id"]: e for e in read_pending(folder)}
        for spec, job in zip(specs, submitted):
            entries.append(fresh[spec.job_id])
            jobs.append(job)
    specs_of = [_spec_of(e) for e in entries]
    by_id = {s.job_id: s for s in specs}
    specs_of = [by_id.get(s.job_id, s) for s in specs_of]
    if not options.get("wait", True):
        return Outcome(still_running=specs_of)
    poll = float(options.get("poll_s") or 15.0)
    lost = []
    waiting = list(zip(jobs, entries, specs_of))
    last_sacct = 0.0
    try:
        while waiting:
            if time.monotonic() - last_sacct > max(poll, 60.0):
                _refresh_states([j for j, _, _ in waiting], [e for _, e, _ in waiting])
                last_sacct = time.monotonic()
            still = []
            for job, entry, spec in waiting:
                kind, value = _outcome(job, entry)
                if kind == "done":
                    sink.result(spec, value)
                    _forget(entry)
                elif kind == "failed":
                    sink.failure(spec, str(value))
                    _forget(entry)
                elif kind == "lost":
                    lost.append(spec)
                    _forget(entry)
                else:
                    still.append((job, entry, spec))
            waiting = still
            if waiting:
                time.sleep(poll)
    except KeyboardInterrupt:
        return Outcome(still_running=[s for _, _, s in waiting], reason="stopped waiting (Ctrl-C); the jobs keep "
                       "running on the cluster: run the same command again to collect them", user_interrupt=True)
    if lost:
        return Outcome(interrupted=lost, reason=f"{len(lost)} Slurm job(s) ended without a result (cancelled, "
                                                "preempted or lost their node); they are submitted again next call")
    return Outcome()
