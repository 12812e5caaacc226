"""The sweep driver: job ids first, skip what is stored, hand the rest to an executor, store each result.

The driver is the only writer of the store during a sweep: executors return records (or errors) to it and
it writes each job in one transaction as it finishes. So a ``kill -9`` of the driver or of a worker loses at
most the jobs that were running, and never duplicates one (the store keeps one row per job id); the next call
skips what is stored and runs the rest.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from .._errors import InputError, NcbenchError
from ._executors import cpu_count, run_local, run_process
from ._grid import Sweep, expand_grid, format_axes
from ._job import JobSpec, run_job

EXECUTORS = ("local", "process", "ray", "slurm")


def job_id_of(cfg) -> str:
    """The job id of a validated config (:func:`ncbench.identity.compute_job_id`)."""
    from ..identity import compute_job_id

    return compute_job_id(cfg)


@dataclass
class SweepReport:
    """What a sweep call found and did.

    total : jobs in the grid. already_done : stored as done before this call (``linked`` of them computed by
    another sweep and added to this one now). failed_before : stored as failed and not retried.
    submitted_earlier : jobs submitted to Slurm by an earlier call and still running there.
    to_run : jobs this call ran or would run. done, failed : finished in this call.
    interrupted : every job this call set out to run that neither finished nor is still running on Slurm
    (running when the call stopped, or not started yet); they run again next call. still_running : Slurm
    jobs left running. grid_done, grid_failed, grid_missing : the whole grid after this call, as the store
    holds it (missing: not stored at all).
    stopped : why the call ended early, or None. estimate_s / estimate_method : the dry run's estimate
    (total run time of ``to_run``, one job after another) and how it was made. parallel : jobs at once.
    """

    name: str
    total: int
    already_done: int = 0
    linked: int = 0
    failed_before: int = 0
    submitted_earlier: int = 0
    collected: int = 0
    to_run: int = 0
    done: int = 0
    failed: int = 0
    interrupted: list[dict] = field(default_factory=list)
    still_running: int = 0
    stopped: str | None = None
    user_interrupt: bool = False
    dry_run: bool = False
    estimate_s: float | None = None
    estimate_method: str | None = None
    parallel: int | None = None
    executor: str = "local"
    wall_time_s: float = 0.0
    failures: list[dict] = field(default_factory=list)
    grid_done: int | None = None
    grid_failed: int | None = None
    grid_missing: int | None = None

    @property
    def exit_code(self) -> int:
        """0: every job is done or was left running on Slurm; 1: a job failed or did not finish; 130: Ctrl-C."""
        if self.user_interrupt:
            return 130
        if self.failed or self.interrupted or (self.stopped and not self.still_running):
            return 1
        return 0


class _Progress:
    """One bar over the jobs (done / failed / left, ETA) on a terminal; else one plain line per finished job."""

    def __init__(self, total: int, name: str, *, enabled: bool, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.monotonic()
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        self.plain = enabled and not tty and total > 0
        if enabled and tty and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=name, unit="job", file=self.stream, dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        left = self.total - self.done - self.failed
        self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, left {left}", refresh=True)

    def finished(self, spec: JobSpec, status: str, note: str) -> None:
        if status == "done":
            self.done += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
        elif self.plain:
            k = self.done + self.failed
            elapsed = time.monotonic() - self.start
            eta = elapsed / k * (self.total - k)
            print(f"[{k}/{self.total}] {status} cell {spec.cell} {format_axes(spec.axes)} {note} "
                  f"(done {self.done}, failed {self.failed}, left {self.total - k}, eta {_duration(eta)})",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _error_text(error) -> str:
    if isinstance(error, BaseException):
        text = str(error).strip()
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return str(error)


class _Sink:
    """Writes each finished job to the store (one transaction), in the driver process, and shows progress."""

    def __init__(self, store, sweep: str, meta: dict, progress: _Progress, after_job=None) -> None:
        self.store, self.sweep, self.meta, self.progress = store, sweep, meta, progress
        self.after_job = after_job
        self.done, self.failed = 0, 0
        self.failures: list[dict] = []
        self.finished: set[str] = set()  # job ids stored (done or failed) by this call

    def result(self, spec: JobSpec, record) -> None:
        got = (record or {}).get("provenance", {}).get("job_id") if isinstance(record, dict) else None
        if got != spec.job_id:
            self.failure(spec, f"the job returned a record with job id {got!r}, expected {spec.job_id} (do the "
                               "driver and the worker run the same ncbench?)")
            return
        try:
            self.store.put_record(record, sweep=self.sweep, axes=spec.axes, cell=spec.cell)
        except InputError as err:
            self.failure(spec, f"the record could not be stored: {err}")
            return
        self.done += 1
        self.finished.add(spec.job_id)
        wall = (record.get("provenance", {}).get("wall_time_s") or {})
        total = wall.get("total") if isinstance(wall, dict) else None
        acc = (record.get("accuracy") or {}).get("test")
        note = ", ".join(p for p in (f"{total:.1f} s" if isinstance(total, (int, float)) else "",
                                     f"test accuracy {acc:.3f}" if isinstance(acc, (int, float)) else "") if p)
        self.progress.finished(spec, "done", note)
        self._after()

    def _after(self) -> None:
        if self.after_job is not None:
            self.after_job(self.done + self.failed)

    def failure(self, spec: JobSpec, error) -> None:
        message = _error_text(error)[:4000]
        dataset, model = self.meta.get(spec.job_id, (spec.config.get("dataset"), spec.config.get("model")))
        self.store.put_failure(spec.job_id, sweep=self.sweep, axes=spec.axes, dataset=dataset, model=model,
                               config=spec.config or None, error=message, cell=spec.cell)
        self.failed += 1
        self.finished.add(spec.job_id)
        self.failures.append({"cell": spec.cell, "axes": spec.axes, "job_id": spec.job_id, "error": message})
        self.progress.finished(spec, "FAILED", message.splitlines()[0][:200] if message else "")
        self._after()


_OPTIONS = {
    "local": (),
    "process": (),
    "ray": ("address", "cpus_per_job", "gpus_per_job", "num_cpus", "max_retries"),
    "slurm": ("partition", "gpus_per_job", "cpus_per_job", "timeout_min", "mem_gb", "slurm_params", "wait",
              "cluster", "poll_s"),
}


def _check_int(name: str, value, minimum: int = 1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return value


def _plan(sweep: Sweep):
    """``[(SweepJob, cfg, job_id)]``; refuses two cells that are the same computation."""
    from ..config import build_config

    planned, seen = [], {}
    for job in sweep.jobs:
        try:
            cfg = build_config(job.config)
        except (NcbenchError, TypeError, ValueError) as err:
            raise InputError(f"cell {job.cell} {format_axes(job.axes)}: {err}") from None
        job_id = job_id_of(cfg)
        if job_id in seen:
            other = seen[job_id]
            differ = [k for k in job.axes if job.axes[k] != other.axes.get(k)]
            raise InputError(f"cells {other.cell} {format_axes(other.axes)} and {job.cell} {format_axes(job.axes)} are "
                             f"the same computation (job id {job_id[:12]}): {', '.join(differ)} does not change the "
                             "result there; drop one of them with exclude:")
        seen[job_id] = job
        planned.append((job, cfg, job_id))
    return planned


def run_sweep(sweep, *, store, executor: str = "local", workers: int | None = None, dry_run: bool = False,
              retry_failed: bool = False, threads_per_job: int | None = None, progress: bool = True,
              executor_options: dict | None = None, estimate: bool = True, job_fn=None,
              after_job=None) -> SweepReport:
    """Run the jobs of a grid that the store does not hold yet.

    Parameters
    ----------
    sweep : Sweep, grid file path or grid mapping (:func:`expand_grid`).
    store : path or ResultsStore. Checkpoints go to ``<store folder>/checkpoints/<job_id>.safetensors``.
    executor : "local" (in this process, one job after another), "process" (a pool of ``workers``
        processes), "ray" or "slurm" (see ``executor_options``).
    workers : processes of the pool (default: the cores); Ray: tasks in flight at most (default: all);
        Slurm: array tasks running at once (default: submitit's 256). Ignored by "local".
    dry_run : only count and estimate: nothing runs and nothing is written.
    retry_failed : run the jobs stored as failed again (default: skip them).
    threads_per_job : torch threads per job (process: default ``max(1, cores // workers)``; Ray and Slurm:
        ``cpus_per_job``; local: torch's default).
    progress : a bar on a terminal, else a line per finished job, on stderr.
    executor_options : Ray: ``address`` (None starts a local Ray; "auto" or "host:port" connects),
        ``cpus_per_job``, ``gpus_per_job``, ``num_cpus`` (local Ray), ``max_retries``. Slurm: ``partition``,
        ``gpus_per_job``, ``cpus_per_job``, ``timeout_min``, ``mem_gb``, ``slurm_params`` (more sbatch
        options), ``wait`` (False: submit and return).
    estimate : with ``dry_run``, estimate the time (may time a few training steps per model config).
    job_fn : the job function (default :func:`ncbench.sweep.run_job`); must be importable by workers.
    after_job : called in this process after each job of this call is stored (done or failed), with the
        number stored so far in this call (``ncbench leaderboard build --export-every`` exports from it).

    Returns
    -------
    SweepReport
        Counts, the cells that failed or did not finish, and (dry run) the estimate; ``exit_code`` for a CLI.
    """
    from ..store import _as_store

    t0 = time.monotonic()
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {EXECUTORS}; got {executor!r}")
    options = dict(executor_options or {})
    unknown = sorted(set(options) - set(_OPTIONS[executor]))
    if unknown:
        valid = ", ".join(_OPTIONS[executor]) or "none"
        raise InputError(f"executor {executor!r} takes no option(s) {unknown}; its options: {valid}")
    _check_int("workers", workers)
    _check_int("threads_per_job", threads_per_job)
    for key in ("cpus_per_job", "num_cpus", "timeout_min"):
        _check_int(key, options.get(key))
    _check_int("gpus_per_job", options.get("gpus_per_job"), minimum=0)
    _check_int("max_retries", options.get("max_retries"), minimum=0)
    if not isinstance(sweep, Sweep):
        sweep = expand_grid(sweep)
    st, opened = _as_store(store)
    try:
        return _run(sweep, st, executor, workers, dry_run, retry_failed, threads_per_job, progress, options,
                    estimate, job_fn or run_job, t0, after_job)
    finally:
        if opened:
            st.close()


def _run(sweep, st, executor, workers, dry_run, retry_failed, threads, progress, options, estimate, job_fn, t0,
         after_job=None):
    from . import _slurm

    planned = _plan(sweep)
    report = SweepReport(name=sweep.name, total=len(planned), dry_run=dry_run, executor=executor)
    slurm_folder = _slurm.sweep_folder(st.folder, sweep.name)
    running_entries: list[dict] = []
    if (slurm_folder / "pending").is_dir():
        if dry_run:
            running_entries = _slurm.read_pending(slurm_folder)
        else:
            collected = _slurm.collect(st, sweep.name, slurm_folder)
            report.collected = collected.done + collected.failed
            running_entries = collected.running
    on_slurm = {e["job_id"] for e in running_entries}
    report.submitted_earlier = len(on_slurm)
    statuses = st.statuses([job_id for _, _, job_id in planned])
    members = st.cells(sweep.name)
    if executor == "process":
        workers = workers or cpu_count()
        threads = threads or max(1, cpu_count() // workers)
    elif executor in ("ray", "slurm"):
        threads = threads or options.get("cpus_per_job") or 1
        options.setdefault("cpus_per_job", threads)
    checkpoints = str((st.folder / "checkpoints").absolute())
    todo, to_link = [], []
    for job, cfg, job_id in planned:
        state = statuses.get(job_id)
        if state == "done":
            report.already_done += 1
            if members.get(job_id) != (job.cell, list(job.axes.items())):
                # another sweep's job, or one imported from an export (no cell, axes in the record's key order)
                to_link.append((job, job_id))
            continue
        if job_id in on_slurm:
            continue
        if state == "failed" and not retry_failed:
            report.failed_before += 1
            continue
        todo.append((JobSpec(job_id=job_id, config=job.config, sweep=sweep.name, axes=dict(job.axes), cell=job.cell,
                             checkpoint_dir=checkpoints, threads=threads), cfg))
    report.linked = sum(1 for _, job_id in to_link if job_id not in members)
    report.to_run = len(todo)
    if executor in ("local", "process"):
        report.parallel = 1 if executor == "local" else min(workers, max(1, len(todo)))
    elif executor == "ray" and not options.get("address"):
        cores = options.get("num_cpus") or cpu_count()
        report.parallel = max(1, cores // int(options.get("cpus_per_job") or 1))
    if dry_run:
        if estimate and todo:
            from ._estimate import estimate as estimate_time

            est = estimate_time(todo, st, sweep.name, threads=threads)
            report.estimate_s, report.estimate_method = est.seconds, est.method
        report.wall_time_s = time.monotonic() - t0
        return report
    st.put_sweep(sweep.name, sweep.axes, cells=[(job.cell, job_id, job.axes) for job, _, job_id in planned])
    st.link_all(sweep.name, [(job_id, job.axes, job.cell) for job, job_id in to_link])
    meta = {job_id: (cfg.dataset, cfg.model) for _, cfg, job_id in planned}
    total = len(todo) + (len(running_entries) if executor == "slurm" else 0)
    bar = _Progress(total, sweep.name, enabled=progress)
    sink = _Sink(st, sweep.name, meta, bar, after_job)
    specs = [spec for spec, _ in todo]
    try:
        if executor == "local":
            outcome = run_local(specs, sink, job_fn=job_fn)
        elif executor == "process":
            outcome = run_process(specs, sink, job_fn=job_fn, workers=workers)
        elif executor == "ray":
            from ._ray import run_ray

            outcome = run_ray(specs, sink, job_fn=job_fn, workers=workers, options=options)
        else:
            outcome = _slurm.run_slurm(specs, sink, job_fn=job_fn, workers=workers, options=options,
                                       folder=slurm_folder, sweep=sweep.name, running=running_entries)
    finally:
        bar.close()
    report.done, report.failed, report.failures = sink.done, sink.failed, sink.failures
    # counted here, against what this call set out to run, not from the executor's list: a job queued behind
    # the running ones when Ctrl-C came did not finish either
    elsewhere = {s.job_id for s in outcome.still_running} | on_slurm
    report.interrupted = [{"cell": s.cell, "axes": s.axes, "job_id": s.job_id} for s in specs
                          if s.job_id not in sink.finished and s.job_id not in elsewhere]
    report.still_running = len(outcome.still_running)
    now = st.statuses([job_id for _, _, job_id in planned])
    report.grid_done = sum(1 for v in now.values() if v == "done")
    report.grid_failed = sum(1 for v in now.values() if v == "failed")
    report.grid_missing = report.total - report.grid_done - report.grid_failed
    report.stopped = outcome.reason
    report.user_interrupt = outcome.user_interrupt
    report.wall_time_s = time.monotonic() - t0
    return report


def format_report(report: SweepReport) -> str:
    """The report as lines for a person (the CLI prints it)."""
    r = report
    head = f"sweep {r.name}: {r.total} jobs"
    stored = f"{r.already_done} already done" + (f" ({r.linked} reused from other sweeps)" if r.linked else "")
    parts = [stored]
    if r.failed_before:
        parts.append(f"{r.failed_before} failed before (not retried; --retry-failed reruns them)")
    if r.submitted_earlier:
        parts.append(f"{r.submitted_earlier} submitted to Slurm earlier and still running")
    if r.collected:
        parts.append(f"{r.collected} collected from Slurm")
    lines = [f"{head}: {', '.join(parts)}"]
    if r.dry_run:
        lines.append(f"would run {r.to_run} job(s) with --executor {r.executor}")
        if r.estimate_s is not None:
            serial = _duration(r.estimate_s)
            if r.parallel and r.parallel > 1:
                lines.append(f"estimated time: {_duration(r.estimate_s / r.parallel)} with {r.parallel} jobs at once "
                             f"({serial} one after another)")
            else:
                lines.append(f"estimated time: {serial}" + (" one after another (divide by the jobs the cluster runs "
                                                            "at once)" if r.executor in ("ray", "slurm") else ""))
            lines.append(f"estimated from: {r.estimate_method}")
        return "\n".join(lines)
    verb = "submitted to Slurm" if r.executor == "slurm" else "ran"
    lines.append(f"{verb} {r.to_run} job(s); finished in this call: {r.done} done, {r.failed} failed "
                 f"({_duration(r.wall_time_s)})")
    for f in r.failures[:20]:
        lines.append(f"  failed: cell {f['cell']} {format_axes(f['axes'])}: {f['error'].splitlines()[0][:300]}")
    if len(r.failures) > 20:
        lines.append(f"  ... and {len(r.failures) - 20} more (ncbench results list --sweep {r.name})")
    if r.still_running:
        lines.append(f"{r.still_running} job(s) running on Slurm: run the same command again to collect them")
    if r.stopped:
        lines.append(f"stopped: {r.stopped}")
    if r.interrupted:
        cells = ", ".join(f"{i['cell']} {format_axes(i['axes'])}" for i in r.interrupted[:10])
        more = f" and {len(r.interrupted) - 10} more" if len(r.interrupted) > 10 else ""
        lines.append(f"{len(r.interrupted)} job(s) did not finish and run again on the next call: cells {cells}{more}")
    if r.grid_done is not None and (r.grid_done < r.total):
        lines.append(f"the grid now: {r.grid_done} of {r.total} jobs done, {r.grid_failed} failed, {r.grid_missing} "
                     f"not stored (ncbench results list --sweep {r.name})")
    return "\n".join(lines)

