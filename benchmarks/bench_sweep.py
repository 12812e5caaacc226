"""Sweep throughput: one `ncbench evaluate` process per job against `ncbench sweep --executor process`.

    python benchmarks/bench_sweep.py [--grid configs/sweeps/mnist1d-grid.yaml] [--workdir DIR]

The slice: the committed grid with its weight-decay and seed axes held at their first value (16 of its 64
jobs on the committed mnist1d grid: every capacity, training-set size and label noise). Runs, one after the
other, on a quiet machine:

- ``per-process``: each job as its own ``python -m ncbench evaluate --config JOB.yaml`` process, one at a time,
  torch's default thread count (what a user running jobs by hand gets);
- ``per-process, 1 thread``: the same with ``--threads 1`` (the numerics of the sweep's jobs: a job's float
  rounding depends on its thread count, so this is the run whose numbers must be identical);
- ``sweep 2 x 1``: ``ncbench sweep --executor process --workers 2 --threads-per-job 1`` (the default on 2 cores);
- ``sweep 1 x 2``: ``--workers 1 --threads-per-job 2``.

Prints models per minute, the ratio to the per-process baseline, where a job's time goes (interpreter and
import start-up, data, training, attacks), and checks that every job's numbers (accuracies, every collapse
metric, both robustness curves) are identical between the per-process 1-thread run and each sweep run of the
same thread count, and how far the default-thread run is from them. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def slice_grid(grid_path: Path) -> dict:
    grid = yaml.safe_load(grid_path.read_text())
    held = {k: v[:1] for k, v in grid["grid"].items() if k in ("train.weight_decay", "seed")}
    return {**grid, "name": grid["name"] + "-bench", "grid": {**grid["grid"], **held}}


def numbers(record: dict) -> dict:
    """What must agree: accuracies, every collapse metric, every robustness curve."""
    curves = [[r["robust_accuracy"] for r in a["curve"]]
              for a in [record["robustness"], *record.get("extra_robustness", [])]]
    return {"accuracy": record["accuracy"], "collapse": record["collapse"], "curves": curves}


def max_diff(a, b) -> float:
    if isinstance(a, dict):
        return max(max_diff(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return max((max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return abs(float(a) - float(b))


def per_process(jobs, out: Path, threads: int | None) -> tuple[float, dict, list[float]]:
    """Each job as its own process, one at a time. Returns (seconds, job_id -> record, per-job process s)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    process_s = []
    for i, job in enumerate(jobs):
        cfg = out / f"job{i}.yaml"
        cfg.write_text(yaml.safe_dump(job.config))
        cmd = [sys.executable, "-m", "ncbench", "evaluate", "--config", str(cfg), "--output", str(out / "records"),
               "--quiet"] + (["--threads", str(threads)] if threads else [])
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        process_s.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    records = {}
    for path in (out / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        records[rec["provenance"]["job_id"]] = rec
    return seconds, records, process_s


def sweep(grid_file: Path, store: Path, workers: int, threads: int) -> tuple[float, dict]:
    from ncbench.store import ResultsStore

    cmd = [sys.executable, "-m", "ncbench", "sweep", str(grid_file), "--store", str(store), "--executor", "process",
           "--workers", str(workers), "--threads-per-job", str(threads), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    return seconds, {r["provenance"]["job_id"]: r for r in ResultsStore(store).records()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=Path, default=REPO / "configs/sweeps/mnist1d-grid.yaml")
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    from ncbench.sweep import expand_grid

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    grid = slice_grid(args.grid)
    grid_file = work / "slice.yaml"
    grid_file.write_text(yaml.safe_dump(grid, sort_keys=False))
    jobs = expand_grid(grid_file).jobs
    n = len(jobs)
    print(f"{n} jobs: {args.grid.name} with {', '.join(k for k in ('train.weight_decay', 'seed') if k in grid['grid'])}"
          f" held at their first value; {os.cpu_count()} cores; work in {work}", flush=True)

    runs = {}
    runs["per-process (default threads)"] = per_process(jobs, work / "pp-default", None)
    runs["per-process, 1 thread"] = per_process(jobs, work / "pp-1", 1)
    s21, r21 = sweep(grid_file, work / "sweep-2x1" / "results.sqlite", 2, 1)
    s12, r12 = sweep(grid_file, work / "sweep-1x2" / "results.sqlite", 1, 2)
    base_s = runs["per-process (default threads)"][0]
    rows = [(name, s) for name, (s, _, _) in runs.items()] + [("sweep 2 workers x 1 thread", s21),
                                                              ("sweep 1 worker x 2 threads", s12)]
    print(f"\n{'run':<32}{'wall s':>9}{'models/min':>12}{'ratio':>8}")
    for name, s in rows:
        print(f"{name:<32}{s:>9.1f}{60 * n / s:>12.1f}{base_s / s:>8.2f}")

    pp1 = runs["per-process, 1 thread"][1]
    ppd = runs["per-process (default threads)"][1]
    same_1 = sum(numbers(pp1[j]) == numbers(r21[j]) for j in r21 if j in pp1)
    print(f"\nidentical numbers, per-process 1 thread vs sweep 2 x 1: {same_1} of {n} jobs "
          f"(job ids shared: {len(set(pp1) & set(r21))})")
    same_2 = sum(numbers(ppd[j]) == numbers(r12[j]) for j in r12 if j in ppd)
    print(f"identical numbers, per-process default threads ({ppd[next(iter(ppd))]['provenance']['environment']['threads']})"
          f" vs sweep 1 x 2: {same_2} of {n} jobs")
    worst = max(max_diff(numbers(ppd[j]), numbers(pp1[j])) for j in pp1 if j in ppd)
    print(f"default threads vs 1 thread, same jobs: largest difference of any number {worst:.3g} "
          "(thread count changes float rounding; records say the thread count)")

    # where a job's time goes, in the per-process run with 1 thread
    parts = {}
    for rec in pp1.values():
        for k, v in rec["provenance"]["wall_time_s"].items():
            parts.setdefault(k, []).append(v)
    proc = runs["per-process, 1 thread"][2]
    inside = statistics.mean(parts["total"])
    print(f"\nper job (per-process, 1 thread; means): process {statistics.mean(proc):.2f} s = start-up and imports "
          f"{statistics.mean(proc) - inside:.2f} s + evaluate {inside:.2f} s ("
          + ", ".join(f"{k} {statistics.mean(v):.2f}" for k, v in parts.items() if k != "total") + ")")
    sweep_parts = [r["provenance"]["wall_time_s"]["data"] for r in r21.values()]
    print(f"in the sweep, data per job: {statistics.mean(sweep_parts):.3f} s (generated once per worker process)")


if __name__ == "__main__":
    main()
