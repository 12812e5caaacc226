"""``ncbench sweep`` and ``ncbench results``: argument parsing and printing; the work is in ncbench.sweep/store."""

from __future__ import annotations

import argparse
import sys

from ._errors import InputError
from .store import DEFAULT_STORE, EXPORT_FORMATS


def _at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}; got {value}")
        return value

    return parse


_positive = _at_least(1)
_count = _at_least(0)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (an sbatch option, e.g. account=abc); got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


def register_sweep(subparsers) -> None:
    """Add ``ncbench sweep`` (``func``: :func:`cmd_sweep`)."""
    p = subparsers.add_parser("sweep", help="run every cell of a grid file (configs/sweeps/*.yaml) not yet in the "
                                            "results store")
    p.add_argument("grid", metavar="GRID.yaml", nargs="?", help="the grid: name, base config, dotted keys -> values, "
                                                                "exclude")
    p.add_argument("--list-keys", dest="list_keys", action="store_true", help="print the keys a grid may name "
                   "(dotted evaluate-config keys) and exit")
    p.add_argument("--store", default=DEFAULT_STORE, metavar="PATH", help=f"results store (default {DEFAULT_STORE})")
    p.add_argument("--executor", default="local", choices=("local", "process", "ray", "slurm"),
                   help="local: one job after another in this process (default); process: a pool of --workers "
                        "processes; ray: Ray tasks (pip install 'ncbench[ray]'); slurm: submitit jobs "
                        "(pip install 'ncbench[slurm]')")
    p.add_argument("--workers", type=_positive, metavar="N", help="process: pool size (default: the cores); ray: "
                   "tasks in flight at most; slurm: array tasks running at once")
    p.add_argument("--threads-per-job", dest="threads_per_job", type=_positive, metavar="N",
                   help="torch threads per job (process: default cores // workers; ray, slurm: --cpus-per-job)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the number of jobs, how many are "
                   "stored, and an estimated time; run nothing")
    p.add_argument("--no-estimate", dest="estimate", action="store_false", help="with --dry-run: skip the time "
                   "estimate (it may time a few training steps per model config)")
    p.add_argument("--retry-failed", dest="retry_failed", action="store_true", help="run the jobs stored as failed "
                                                                                  "again")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-job lines")
    dist = p.add_argument_group("ray and slurm")
    dist.add_argument("--cpus-per-job", dest="cpus_per_job", type=_positive, metavar="N", help="CPUs per job "
                      "(default 1)")
    dist.add_argument("--gpus-per-job", dest="gpus_per_job", type=_count, metavar="N", help="GPUs per job "
                      "(default 0)")
    ray = p.add_argument_group("ray")
    ray.add_argument("--address", metavar="ADDR", help="a Ray cluster: 'auto' or host:port (default: start a "
                     "local Ray for this sweep)")
    ray.add_argument("--ray-num-cpus", dest="ray_num_cpus", type=_positive, metavar="N", help="CPUs of the local "
                     "Ray (default: all)")
    slurm = p.add_argument_group("slurm")
    slurm.add_argument("--partition", metavar="NAME", help="Slurm partition")
    slurm.add_argument("--timeout-min", dest="timeout_min", type=_positive, metavar="MIN",
                       help="time limit per job in minutes (default 240)")
    slurm.add_argument("--mem-gb", dest="mem_gb", type=float, metavar="GB", help="memory per job")
    slurm.add_argument("--slurm-param", dest="slurm_params", type=_key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="another sbatch option, e.g. account=abc or qos=high (repeatable)")
    slurm.add_argument("--no-wait", dest="wait", action="store_false", help="submit and return; the next call "
                       "collects the results")
    p.set_defaults(func=cmd_sweep)


_RAY_FLAGS = {"address": "--address", "ray_num_cpus": "--ray-num-cpus"}
_SLURM_FLAGS = {"partition": "--partition", "timeout_min": "--timeout-min", "mem_gb": "--mem-gb",
                "slurm_params": "--slurm-param"}
_DIST_FLAGS = {"cpus_per_job": "--cpus-per-job", "gpus_per_job": "--gpus-per-job"}


def _executor_options(args) -> dict:
    given = lambda name: getattr(args, name) not in (None, [], False)  # noqa: E731
    own = {"ray": {**_RAY_FLAGS, **_DIST_FLAGS}, "slurm": {**_SLURM_FLAGS, **_DIST_FLAGS}}.get(args.executor, {})
    for name, flag in {**_RAY_FLAGS, **_SLURM_FLAGS, **_DIST_FLAGS}.items():
        if given(name) and name not in own:
            users = [e for e, flags in (("ray", {**_RAY_FLAGS, **_DIST_FLAGS}),
                                        ("slurm", {**_SLURM_FLAGS, **_DIST_FLAGS})) if name in flags]
            raise InputError(f"{flag} applies to --executor {' or '.join(users)}; got --executor {args.executor}")
    if not args.wait and args.executor != "slurm":
        raise InputError(f"--no-wait applies to --executor slurm; got --executor {args.executor}")
    opts: dict = {}
    if args.executor in ("ray", "slurm"):
        for name in _DIST_FLAGS:
            if given(name):
                opts[name] = getattr(args, name)
    if args.executor == "ray":
        if args.address:
            opts["address"] = args.address
        if args.ray_num_cpus:
            opts["num_cpus"] = args.ray_num_cpus
    if args.executor == "slurm":
        for name in ("partition", "timeout_min", "mem_gb"):
            if given(name):
                opts[name] = getattr(args, name)
        if args.slurm_params:
            opts["slurm_params"] = dict(args.slurm_params)
        opts["wait"] = args.wait
    return opts


def cmd_sweep(args) -> int:
    from .sweep import format_report, run_sweep

    if args.list_keys:
        from .sweep._grid import valid_keys

        print("\n".join(valid_keys()))
        print("(<argument>: any argument of the model's or dataset's factory, checked when the grid expands)")
        return 0
    if args.grid is None:
        raise InputError("ncbench sweep needs a grid file (GRID.yaml), or --list-keys")
    options = _executor_options(args)
    report = run_sweep(args.grid, store=args.store, executor=args.executor, workers=args.workers,
                       dry_run=args.dry_run, retry_failed=args.retry_failed, threads_per_job=args.threads_per_job,
                       progress=not args.quiet, executor_options=options, estimate=args.estimate)
    print(format_report(report))
    return report.exit_code


def register_results(subparsers) -> None:
    """Add ``ncbench results list|export|import`` (``func``: :func:`cmd_results`)."""
    p = subparsers.add_parser("results", help="list, export or import the results store")
    sub = p.add_subparsers(dest="results_command", required=True, metavar="{list,export,import}")
    ls = sub.add_parser("list", help="one line per sweep (jobs done and failed); with --sweep, one line per job")
    ex = sub.add_parser("export", help="the finished jobs as a table (csv, parquet: one row per job, the frame of "
                                       "ncbench.store.load_frame) or as records (jsonl: one full record per line)")
    im = sub.add_parser("import", help="read records into the store: a folder of the JSON records `ncbench evaluate` "
                                       "wrote, or a records.jsonl[.gz] export (another store's, or "
                                       "leaderboards/data/<sweep>/)")
    for q in (ls, ex, im):
        q.add_argument("--store", default=DEFAULT_STORE, metavar="PATH", help=f"results store (default "
                                                                               f"{DEFAULT_STORE})")
    ls.add_argument("--sweep", metavar="NAME", help="list this sweep's jobs")
    ex.add_argument("--sweep", metavar="NAME", help="only this sweep's jobs, with its axes as columns")
    ex.add_argument("--format", choices=EXPORT_FORMATS, help="csv, jsonl or parquet (default: from -o's name, e.g. "
                                                             "records.jsonl.gz)")
    ex.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output; parquet needs a "
                                                           "file); a name ending in .gz is gzip-compressed")
    ex.add_argument("--force", action="store_true", help="replace FILE if it exists")
    im.add_argument("source", metavar="PATH", help="a folder (its *.json records and *.jsonl[.gz] exports), or one "
                                                   "such file")
    im.add_argument("--sweep", metavar="NAME", help="also add the imported jobs to this sweep (each job keeps the "
                                                    "sweep that computed it either way)")
    ls.set_defaults(func=cmd_results_list)
    ex.set_defaults(func=cmd_results_export)
    im.set_defaults(func=cmd_results_import)


def register(subparsers) -> None:
    """Both command groups: ``sweep`` and ``results``."""
    register_sweep(subparsers)
    register_results(subparsers)


def _summary_line(row: dict) -> str:
    """One sweep's line of ``ncbench results list``: counted against its grid where the store knows it."""
    if row["sweep"] is None:
        return f"(no sweep): {row['jobs']} jobs, {row['done']} done, {row['failed']} failed"
    if row["grid"] is None:
        return (f"{row['sweep']}: {row['jobs']} jobs stored, {row['done']} done, {row['failed']} failed; its grid is "
                "not recorded in this store (`ncbench sweep GRID.yaml --dry-run` counts against the grid)")
    line = (f"{row['sweep']}: {row['grid']} jobs in the grid: {row['done']} done, {row['failed']} failed, "
            f"{row['missing']} missing")
    if row["outside"]:
        line += f"; {row['outside']} more stored outside the grid"
    return line


def _job_line(job: dict) -> str:
    from .sweep._grid import format_axes

    error = f"  {job['error'].splitlines()[0][:200]}" if job.get("error") else ""
    status = job["status"] or "missing"
    return f"{job['job_id'][:12]}  {status:<7}  {job.get('created') or '-':<25}  {format_axes(job['axes'])}{error}"


def cmd_results_list(args) -> int:
    from .store import ResultsStore

    with ResultsStore(args.store) as store:
        if not store.exists():
            store._read()  # the "no results store" message
        if args.sweep is None:
            rows = store.summary()
            if not rows:
                print(f"{args.store}: empty")
            for row in rows:
                print(_summary_line(row))
            return 0
        if args.sweep not in store.sweeps():
            raise InputError(f"the store {args.store!r} has no sweep {args.sweep!r}; it has: "
                             f"{', '.join(store.sweeps()) or 'none'}")
        grid = store.grid(args.sweep) or []
        in_grid = {c["job_id"] for c in grid}
        for job in grid + [j for j in store.jobs(sweep=args.sweep) if j["job_id"] not in in_grid]:
            print(_job_line(job))
        (row,) = [r for r in store.summary() if r["sweep"] == args.sweep]
        print(_summary_line(row))
    return 0


def cmd_results_export(args) -> int:
    from .store import export_results, format_of, write_export

    fmt, named = args.format, format_of(args.output) if args.output else None
    if fmt is not None and named is not None and named != fmt:
        raise InputError(f"--format {fmt} but -o {args.output!r} names a {named} file; give one or make them agree")
    if fmt is None:
        fmt = named
        if fmt is None:
            raise InputError("--format is needed (csv, jsonl or parquet)" + (
                f": -o {args.output!r} does not end in .csv, .jsonl or .parquet (optionally .gz)" if args.output
                else " when writing to standard output"))
    data, n = export_results(args.store, fmt=fmt, sweep=args.sweep)
    if args.output is None:
        if fmt == "parquet":
            raise InputError("parquet is binary: write it to a file with -o FILE")
        sys.stdout.write(data.decode())
        return 0
    path = write_export(data, args.output, force=args.force)
    print(f"wrote {n} job(s) to {path}", file=sys.stderr)
    return 0


def cmd_results_import(args) -> int:
    from .store import import_records

    report = import_records(args.store, args.source, sweep=args.sweep)
    print(f"imported {report.imported} record(s) into {args.store}; {report.already_stored} already stored; "
          f"{len(report.skipped)} skipped")
    for where, why in report.skipped[:20]:
        print(f"  skipped {where}: {why}")
    if len(report.skipped) > 20:
        print(f"  ... and {len(report.skipped) - 20} more")
    return 0
