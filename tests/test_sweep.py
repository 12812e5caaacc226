"""Sweeps: grid expansion and its errors, the driver (skip, retry, failures, resume, dry run), the executors."""

import copy
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sweep_helpers
from sweep_helpers import DIGITS_SMALL, cli, fake_job, hex_id, make_record

from ncbench._errors import InputError
from ncbench.config import build_config
from ncbench.store import ResultsStore, load_frame
from ncbench.sweep import JobSpec, expand_grid, job_id_of, run_job, run_sweep

REPO = Path(__file__).parents[1]
TESTS = Path(__file__).parent


def grid(name="t", base=None, **axes):
    """A grid mapping over the tiny digits config; ``axes`` use __ for dots (train__epochs -> train.epochs)."""
    return {"name": name, "base": copy.deepcopy(DIGITS_SMALL if base is None else base),
            "grid": {k.replace("__", "."): v for k, v in axes.items()}}


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "res" / "results.sqlite") as st:
        yield st


@pytest.fixture
def on_path(monkeypatch):
    """Workers started from scratch (submitit's processes, Ray's workers) import the fake jobs from tests/."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


# ------------------------------------------------------------------------------------------------- grids

def test_expansion_order_and_configs():
    sweep = expand_grid(grid(model_args__width=[16, 32], train__weight_decay=[5e-4, 5e-3], seed=[0, 1, 2]))
    assert sweep.axes == ("model_args.width", "train.weight_decay", "seed") and sweep.n_cells == 12
    # the last key varies fastest, the first slowest (a product in the opposite order would fail here)
    assert [j.axes["seed"] for j in sweep.jobs[:4]] == [0, 1, 2, 0]
    assert [j.axes["model_args.width"] for j in sweep.jobs] == [16] * 6 + [32] * 6
    job = sweep.jobs[7]
    assert job.cell == 7 and job.axes == {"model_args.width": 32, "train.weight_decay": 5e-4, "seed": 1}
    # dotted keys set one field and keep the base's siblings (depth and epochs stay)
    assert job.config["model_args"] == {"width": 32, "depth": 1}
    assert job.config["train"] == {"epochs": 2, "weight_decay": 5e-4} and job.config["seed"] == 1
    assert DIGITS_SMALL["model_args"] == {"width": 16, "depth": 1}  # the base is not modified


def test_exclude_removes_cells_and_keeps_their_numbers():
    g = grid(model_args__width=[16, 32], seed=[0, 1, 2])
    g["exclude"] = [{"model_args.width": 32, "seed": 2}, {"seed": 1}]
    sweep = expand_grid(g)
    assert [(j.cell, j.axes["model_args.width"], j.axes["seed"]) for j in sweep.jobs] == [(0, 16, 0), (2, 16, 2),
                                                                                          (3, 32, 0)]
    g["exclude"] = [{"seed": 5}]
    with pytest.raises(InputError, match=r"exclude entry 1 \{seed: 5\} matches no cell"):
        expand_grid(g)
    g["exclude"] = [{"train.lr": 0.1}]
    with pytest.raises(InputError, match=r"exclude entry 1 names \['train.lr'\], which are not grid keys"):
        expand_grid(g)


@pytest.mark.parametrize("key,pattern", [
    ("train.wd", r"^unknown grid key 'train.wd' \(did you mean 'train\.\w+'.*\?\); `ncbench sweep --list-keys` lists"),
    ("optimizer", r"unknown grid key 'optimizer' \(did you mean 'train.optimizer'\?\)"),
    ("train.weight_decy", r"did you mean 'train.weight_decay'\?"),
    ("attack.stpes", r"did you mean 'attack.steps'"),
    ("seed.value", r"'seed' is a single value, it has no fields"),
    ("train..lr", r"dotted config keys"),
])
def test_unknown_key_names_the_valid_ones(key, pattern):
    with pytest.raises(InputError, match=pattern):
        expand_grid(grid(**{key.replace(".", "__"): [1]}) if ".." not in key else
                    {"name": "t", "base": {}, "grid": {key: [1]}})


def test_an_unknown_key_is_one_short_line_naming_the_file(tmp_path):
    """Issue 18: an unknown grid key printed a 700-character line without the file's name. Catches a message
    that lists every valid key inline, or that leaves out the file."""
    path = tmp_path / "my-grid.yaml"
    path.write_text("name: t\nbase: {dataset: digits}\ngrid:\n  train.weight_decy: [0.1]\n")
    with pytest.raises(InputError) as err:
        expand_grid(path)
    text = str(err.value)
    assert text.startswith(f"{path}: unknown grid key 'train.weight_decy' (did you mean 'train.weight_decay'?)")
    assert len(text) < 160 + len(str(path)) and "\n" not in text
    code, out, _ = cli("sweep", "--list-keys")
    keys = out.splitlines()
    assert code == 0 and "train.weight_decay" in keys and "seed" in keys and "model_args.<argument>" in keys


def test_bad_value_names_its_cell(tmp_path):
    with pytest.raises(InputError, match=r"^cell 2 \{train.epochs: 0, seed: 0\}: train.epochs must be >= 1; got 0"):
        expand_grid(grid(train__epochs=[2, 0], seed=[0, 1]))
    # model and dataset arguments are checked by build_config against the factory's arguments
    with pytest.raises(InputError, match=r"^cell 0 \{model_args.widht: 8\}: .*widht"):
        expand_grid({"name": "t", "base": {"dataset": "digits"}, "grid": {"model_args.widht": [8]}})
    # YAML 1.1 reads 5e-4 as a string: it is the number 5e-4, on the axis and in the config
    path = tmp_path / "g.yaml"
    path.write_text("name: t\nbase: {dataset: digits}\ngrid:\n  train.weight_decay: [5e-4, 5.0e-3]\n")
    (a, b) = expand_grid(path).jobs
    assert a.axes == {"train.weight_decay": 0.0005} and b.axes == {"train.weight_decay": 0.005}


@pytest.mark.parametrize("data,pattern", [
    ({"name": "t", "grid": {"seed": [0]}, "sweep": 1}, r"unknown key\(s\) \['sweep'\] in the grid file"),
    ({"grid": {"seed": [0]}}, r"the grid needs a name"),
    ({"name": "a b", "grid": {"seed": [0]}}, r"the grid needs a name"),
    ({"name": "t", "grid": {"seed": 0}}, r"grid key 'seed' needs a non-empty list"),
    ({"name": "t", "grid": {"seed": [0, 0]}}, r"lists the value 0 twice"),
    ({"name": "t", "grid": {"model_args": [{"width": 8}], "model_args.width": [8]}}, r"overlap"),
    ({"name": "t", "grid": {"seed": [0]}, "exclude": {"seed": 0}}, r"exclude must be a list"),
    ({"name": "t", "grid": {"seed": [0]}, "exclude": [{"seed": 0}]}, r"every cell of the grid is excluded"),
])
def test_grid_file_errors(data, pattern):
    with pytest.raises(InputError, match=pattern):
        expand_grid(data)


def test_cells_that_are_the_same_computation_are_refused(store):
    # label_smoothing is not part of the identity under loss ce: two cells, one job
    g = grid(train__label_smoothing=[0.1, 0.2])
    with pytest.raises(InputError, match=r"cells 0 .* and 1 .* are the same computation.*train.label_smoothing"):
        run_sweep(g, store=store, dry_run=True, estimate=False)


@pytest.mark.parametrize("path,n,axes", [
    ("configs/sweeps/cifar10-pgdl.yaml", 48, ("model_args.depth", "model_args.growth", "train.weight_decay",
                                             "train.batch_size", "train.lr")),
    ("configs/sweeps/pnas-recipes.yaml", 21, ("dataset", "model")),
])
def test_committed_gpu_grids_expand(path, n, axes, tmp_path):
    sweep = expand_grid(REPO / path)
    assert len(sweep.jobs) == n and sweep.axes == axes
    code, out, _ = cli("sweep", REPO / path, "--store", tmp_path / "r.sqlite", "--dry-run", "--no-estimate")
    assert code == 0 and f"{n} jobs: 0 already done" in out and f"would run {n} job(s)" in out
    assert not (tmp_path / "r.sqlite").exists()  # a dry run writes nothing


# ------------------------------------------------------------------------------------------------ driver

class Counting:
    """A local job function that counts its calls (and can raise Ctrl-C at a given call)."""

    def __init__(self, interrupt_at=None):
        self.calls, self.interrupt_at = [], interrupt_at

    def __call__(self, spec):
        self.calls.append(spec.cell)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return fake_job(spec)


def test_failure_is_stored_skip_and_retry(store):
    g = grid(seed=[0, 13, 2])
    job = Counting()
    report = run_sweep(g, store=store, job_fn=job, progress=False)
    assert (report.done, report.failed, report.exit_code) == (2, 1, 1)
    (failure,) = store.records(sweep="t", status="failed")
    assert failure["error"] == "ValueError: unlucky seed 13" and failure["config"]["seed"] == 13
    # a second call runs nothing: done jobs are skipped, the failed one too
    again = run_sweep(g, store=store, job_fn=job, progress=False)
    assert (again.already_done, again.failed_before, again.to_run, again.exit_code) == (2, 1, 0, 0)
    assert job.calls == [0, 1, 2]
    retry = run_sweep(g, store=store, job_fn=job, progress=False, retry_failed=True)
    assert job.calls[3:] == [1] and retry.failed == 1  # only the failed cell runs again
    assert len(store.statuses()) == 3


def test_resume_after_an_interrupt_runs_each_job_once(store):
    g = grid(seed=[0, 1, 2, 3])
    first = run_sweep(g, store=store, job_fn=Counting(interrupt_at=3), progress=False)
    assert first.user_interrupt and first.exit_code == 130 and first.done == 2
    assert [i["cell"] for i in first.interrupted] == [2, 3]
    job = Counting()
    second = run_sweep(g, store=store, job_fn=job, progress=False)
    assert job.calls == [2, 3] and second.already_done == 2 and second.exit_code == 0
    frame = load_frame(store, sweep="t")
    assert sorted(frame["seed"]) == [0, 1, 2, 3] and frame["job_id"].is_unique


def test_ctrl_c_counts_every_unfinished_job_against_the_grid(store):
    """Issue 18: after Ctrl-C a sweep named only the job that was running (5 of 6 unfinished jobs counted), and
    `results list` showed a 12-cell grid as "6 jobs, 6 done". Catches: counting the executor's running jobs
    instead of every job the call set out to run; a store that counts only the jobs it holds."""
    from ncbench.sweep import format_report

    g = grid(seed=[0, 1, 2, 3, 4, 5])
    report = run_sweep(g, store=store, job_fn=Counting(interrupt_at=3), progress=False)
    assert [i["cell"] for i in report.interrupted] == [2, 3, 4, 5]  # the running one and the three not started
    text = format_report(report)
    assert "4 job(s) did not finish and run again on the next call: cells 2 {seed: 2}, 3 {seed: 3}, 4 " in text
    assert "the grid now: 2 of 6 jobs done, 0 failed, 4 not stored" in text
    code, out, _ = cli("results", "list", "--store", store.path)
    assert code == 0 and out.strip() == "t: 6 jobs in the grid: 2 done, 0 failed, 4 missing"
    code, out, _ = cli("results", "list", "--store", store.path, "--sweep", "t")
    lines = out.strip().splitlines()
    assert [line.split()[1] for line in lines[:6]] == ["done"] * 2 + ["missing"] * 4
    assert "{seed: 5}" in lines[5] and lines[6] == "t: 6 jobs in the grid: 2 done, 0 failed, 4 missing"
    # a failure is counted as failed, not missing; the next call runs only what is not stored
    store.put_failure(report.interrupted[0]["job_id"], sweep="t", axes={"seed": 2}, dataset="digits", model="mlp",
                      config={}, error="boom", cell=2)
    assert [r for r in store.summary() if r["sweep"] == "t"][0] == {
        "sweep": "t", "jobs": 3, "grid": 6, "done": 2, "failed": 1, "missing": 3, "outside": 0}
    job = Counting()
    again = run_sweep(g, store=store, job_fn=job, progress=False)
    assert job.calls == [3, 4, 5] and again.interrupted == [] and again.grid_missing == 0


def test_an_older_store_is_migrated_and_says_its_grid_is_unknown(tmp_path):
    """A layout-1 file (before grids were recorded) opens, is migrated to layout 2 in place, keeps its jobs, and
    says that its sweep's grid is unknown until the sweep runs again. Catches: a migration that is missing
    (no such table: sweep_cells), that does not bump user_version, or that invents a grid from the members."""
    import sqlite3

    from ncbench.store import STORE_VERSION
    from ncbench.store._db import _SCHEMA

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA)  # layout 1: jobs, sweep_jobs, sweeps
        conn.execute("PRAGMA user_version = 1")
    g = grid(seed=[0, 1, 2])
    with ResultsStore(path) as st:
        run_sweep(g, store=st, job_fn=Counting(interrupt_at=2), progress=False)  # the migration runs first
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_VERSION == 2
        conn.execute("DELETE FROM sweep_cells")  # as a layout-1 store left it: members only, no grid
    code, out, _ = cli("results", "list", "--store", path)
    assert out.startswith("t: 1 jobs stored, 1 done, 0 failed; its grid is not recorded")
    with ResultsStore(path) as st:
        run_sweep(g, store=st, job_fn=Counting(), progress=False)
        assert st.summary()[0]["grid"] == 3 and st.summary()[0]["missing"] == 0


def test_a_job_of_another_sweep_is_reused_not_rerun(store):
    run_sweep(grid("first", seed=[0, 1]), store=store, job_fn=fake_job, progress=False)
    job = Counting()
    g = grid("second", train__epochs=[2, 3])  # epochs 2 with seed 0 is the first sweep's cell 0
    report = run_sweep(g, store=store, job_fn=job, progress=False)
    assert job.calls == [1] and (report.already_done, report.linked) == (1, 1)
    frame = load_frame(store, sweep="second")
    assert frame.attrs["axes"] == ["train.epochs"] and list(frame["train.epochs"]) == [2, 3]


def test_a_record_with_another_job_id_is_stored_as_failed(store):
    def wrong(spec):
        return make_record(hex_id("other"))

    report = run_sweep(grid(seed=[0]), store=store, job_fn=wrong, progress=False)
    assert report.failed == 1 and "expected" in store.records(status="failed")[0]["error"]
    assert store.status(hex_id("other")) is None


def test_progress_lines_when_stderr_is_not_a_terminal(store, capsys):
    run_sweep(grid(seed=[0, 13]), store=store, job_fn=fake_job, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("[1/2] done cell 0 {seed: 0}") and "left 1" in lines[0] and "eta" in lines[0]
    assert lines[1].startswith("[2/2] FAILED cell 1 {seed: 13} ValueError: unlucky seed 13")


def test_dry_run_counts_and_estimates_from_stored_wall_times(store):
    g = grid(seed=[0, 1, 2, 13, 4])
    walls = iter([10.0, 30.0, 20.0])

    def timed(spec):
        if spec.cell >= 3:
            raise KeyboardInterrupt
        rec = fake_job(spec)
        rec["provenance"]["wall_time_s"]["total"] = next(walls)
        return rec

    run_sweep(g, store=store, job_fn=timed, progress=False)
    failed_id = job_id_of(build_config(expand_grid(g).jobs[3].config))
    store.put_failure(failed_id, sweep="t", axes={"seed": 13}, dataset="digits", model="mlp", config={}, error="boom")
    before = store.path.stat().st_mtime_ns, len(store.statuses())
    report = run_sweep(g, store=store, dry_run=True, executor="process", workers=2)
    assert (report.total, report.already_done, report.failed_before, report.to_run) == (5, 3, 1, 1)
    assert report.estimate_s == pytest.approx(20.0)  # the median of the sweep's stored jobs (10, 20, 30)
    assert "median wall time of 3 stored job(s) of this sweep" in report.estimate_method
    assert (store.path.stat().st_mtime_ns, len(store.statuses())) == before  # nothing written
    retry = run_sweep(g, store=store, dry_run=True, retry_failed=True)
    assert retry.to_run == 2 and retry.estimate_s == pytest.approx(40.0)


def test_dry_run_measures_when_nothing_is_stored(tmp_path):
    report = run_sweep(grid(train__epochs=[2, 4]), store=tmp_path / "r.sqlite", dry_run=True, threads_per_job=1)
    assert report.to_run == 2 and report.estimate_s > 0
    assert "measured: a few training steps of each of 1 model config(s)" in report.estimate_method
    assert not (tmp_path / "r.sqlite").exists()


def test_run_job_hands_the_job_to_evaluate_job(monkeypatch, tmp_path):
    import torch

    import ncbench.evaluate

    seen = {}

    def fake_evaluate_job(cfg, *, sweep=None, checkpoint_dir=None, progress=False):
        seen.update(cfg=cfg, sweep=sweep, checkpoint_dir=checkpoint_dir, progress=progress,
                    threads=torch.get_num_threads())
        return {"ok": True}

    monkeypatch.setattr(ncbench.evaluate, "evaluate_job", fake_evaluate_job)
    old = torch.get_num_threads()
    try:
        spec = JobSpec(job_id=hex_id(1), config=DIGITS_SMALL, sweep="s", axes={"seed": 0}, cell=0,
                       checkpoint_dir=str(tmp_path), threads=1)
        assert run_job(spec) == {"ok": True}
    finally:
        torch.set_num_threads(old)
    assert seen["sweep"] == {"name": "s", "axes": {"seed": 0}} and seen["checkpoint_dir"] == str(tmp_path)
    assert seen["progress"] is False and seen["threads"] == 1
    assert {k: seen["cfg"].model_args[k] for k in ("width", "depth")} == {"width": 16, "depth": 1}


def test_options_are_checked(store):
    with pytest.raises(InputError, match="executor must be one of"):
        run_sweep(grid(seed=[0]), store=store, executor="threads")
    with pytest.raises(InputError, match=r"executor 'process' takes no option\(s\) \['partition'\]"):
        run_sweep(grid(seed=[0]), store=store, executor="process", executor_options={"partition": "gpu"})
    with pytest.raises(InputError, match="workers must be an integer >= 1"):
        run_sweep(grid(seed=[0]), store=store, workers=0)
    code, _, err = cli("sweep", "x.yaml", "--executor", "process", "--partition", "gpu")
    assert code == 2 and "--partition applies to --executor slurm" in err


# --------------------------------------------------------------------------------------------- executors

def test_process_pool_two_workers(store, monkeypatch):
    monkeypatch.setenv("NCBENCH_TEST_JOB_DELAY", "0.5")  # each job lasts long enough for both workers to take one
    report = run_sweep(grid(seed=[0, 1, 2, 3]), store=store, executor="process", workers=2, threads_per_job=1,
                       job_fn=fake_job, progress=False)
    assert (report.done, report.exit_code) == (4, 0)
    envs = [r["provenance"]["environment"] for r in store.records(sweep="t")]
    assert len({e["pid"] for e in envs}) == 2 and os.getpid() not in {e["pid"] for e in envs}
    assert {e["threads"] for e in envs} == {1}  # each job runs with its own thread count


def test_process_worker_death_is_not_a_failure(store):
    g = grid(seed=[0, 1, 2])
    report = run_sweep(g, store=store, executor="process", workers=1, job_fn=sweep_helpers.killing_job,
                       progress=False)
    assert "worker process died" in report.stopped and report.exit_code == 1
    assert 1 in [i["cell"] for i in report.interrupted]
    assert "failed" not in store.statuses().values()  # the dead worker's job is not stored as failed
    rerun = run_sweep(g, store=store, executor="process", workers=1, job_fn=fake_job, progress=False)
    assert rerun.exit_code == 0 and len(store.statuses()) == 3 and set(store.statuses().values()) == {"done"}


def group_ends(pgid, timeout=15.0) -> bool:
    """True when every process of the group (the driver's session: its fork server and workers) is gone."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _stored_jobs(path) -> int:
    """Jobs in the store, read-only: a look that never switches the journal mode (opening the store itself may
    wait for its creator's WAL switch, by which time the sweep ends). It waits up to 1 s for a lock: with a
    0.05 s wait, on a loaded machine every look could meet the writer's lock and the whole 6-job sweep ended
    unseen (the suite failed once so, beside a benchmark)."""
    import sqlite3

    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            return con.execute("SELECT count(*) FROM jobs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_ctrl_c_stops_the_pool_cleanly(tmp_path):
    """SIGINT to the driver: finished jobs stay stored, running ones are ended, the report says so (exit 130)."""
    store_path = tmp_path / "r.sqlite"
    script = textwrap.dedent(f"""
        import signal, sys
        # as from a terminal: SIGINT neither blocked nor ignored (a mask blocked in the test process, e.g. by
        # a multiprocessing helper another test started, is inherited across exec and would swallow the Ctrl-C)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("blocked:", sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])), flush=True)
        sys.path.insert(0, {str(TESTS)!r})
        from sweep_helpers import DIGITS_SMALL, fake_job
        from ncbench.sweep import format_report, run_sweep
        grid = {{"name": "t", "base": DIGITS_SMALL, "grid": {{"seed": [0, 1, 2, 3, 4, 5]}}}}
        report = run_sweep(grid, store={str(store_path)!r}, executor="process", workers=2, job_fn=fake_job,
                           progress=False)
        print(format_report(report))
        sys.exit(report.exit_code)
        """)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, NCBENCH_TEST_JOB_DELAY="4", NCBENCH_TEST_JOB_MARKS=str(marks), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # Ctrl-C once a job has finished (its marker file) and, within 3 s, been stored; the next round of jobs
    # ends 4 s after the first. Watching the store alone missed the whole sweep about once in three full-suite
    # runs (its read-only looks saw no row while the driver wrote), so the marker decides, the store confirms.
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(marks.iterdir()):
        time.sleep(0.05)
    stored_by = time.time() + 3
    while time.time() < stored_by and proc.poll() is None and not _stored_jobs(store_path):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "stopped: interrupted (Ctrl-C)" in out and "run again on the next call" in out
    with ResultsStore(store_path) as st:
        statuses = st.statuses()
    assert 1 <= len(statuses) < 6 and set(statuses.values()) == {"done"}
    # every job that is not stored is named, the queued ones too (the pool's running futures alone were one short)
    unfinished = int(re.search(r"(\d+) job\(s\) did not finish", out).group(1))
    assert unfinished == 6 - len(statuses), out
    assert f"the grid now: {len(statuses)} of 6 jobs done, 0 failed, {unfinished} not stored" in out
    assert group_ends(proc.pid), "worker processes outlived the interrupted driver"


def test_ray_auth_environment(tmp_path, monkeypatch):
    from ncbench.sweep._ray import auth_environment

    monkeypatch.setenv("HOME", str(tmp_path))
    local = auth_environment(None, {})
    assert local["RAY_AUTH_MODE"] == "token" and len(local["RAY_AUTH_TOKEN"]) == 64  # a fresh token, no file
    assert auth_environment(None, {}) != local
    assert auth_environment(None, {"RAY_AUTH_MODE": "disabled"}) == {}  # the user's choice stands
    assert auth_environment(None, {"RAY_AUTH_TOKEN_PATH": "/t"}) == {"RAY_AUTH_MODE": "token"}
    assert auth_environment("10.0.0.1:6379", {}) == {}  # no token anywhere: connect as Ray would
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    # Ray itself would not send the token in ~/.ray/auth_token to an explicit address
    assert auth_environment("10.0.0.1:6379", {}) == {"RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray with 2 CPUs for the test run, started the way run_sweep starts one."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'ncbench[ray]')")
    from ncbench.sweep._ray import init_ray

    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HOME", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    home = tmp_path_factory.mktemp("home")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    os.environ["HOME"] = str(home)
    ray = init_ray(num_cpus=2)
    os.environ["HOME"] = saved["HOME"] or ""
    yield ray, home
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_ray_executor(store, ray_local):
    ray, home = ray_local
    report = run_sweep(grid(seed=[0, 13, 2]), store=store, executor="ray", job_fn=fake_job, progress=False,
                       executor_options={"cpus_per_job": 1})
    assert (report.done, report.failed) == (2, 1)
    assert store.records(status="failed")[0]["error"] == "ValueError: unlucky seed 13"
    assert {r["provenance"]["environment"]["threads"] for r in store.records()} == {1}
    assert ray.cluster_resources()["CPU"] == 2
    # token auth is on, with a token that never touched the home folder
    assert os.environ["RAY_AUTH_MODE"] == "token" and not (home / ".ray" / "auth_token").exists()


SLURM_LOCAL = {"cluster": "local", "poll_s": 0.2, "timeout_min": 5}


def test_submitit_local_executor(store, on_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'ncbench[slurm]')")
    report = run_sweep(grid(seed=[0, 13]), store=store, executor="slurm", job_fn=fake_job, progress=False,
                       executor_options=SLURM_LOCAL)
    assert (report.done, report.failed) == (1, 1)
    assert "ValueError: unlucky seed 13" in store.records(status="failed")[0]["error"]
    assert list((store.folder / "slurm" / "t" / "pending").glob("*.json")) == []


def test_submitit_jobs_outlive_the_call_and_are_collected_later(store, on_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'ncbench[slurm]')")
    g = grid(seed=[0, 1])
    first = run_sweep(g, store=store, executor="slurm", job_fn=fake_job, progress=False,
                      executor_options={**SLURM_LOCAL, "wait": False})
    assert first.still_running == 2 and first.exit_code == 0 and store.statuses() == {}
    pending = sorted((store.folder / "slurm" / "t" / "pending").glob("*.json"))
    assert len(pending) == 2
    logs = [Path(json.loads(p.read_text())["logs"]) for p in pending]
    ids = [json.loads(p.read_text())["slurm_job_id"] for p in pending]
    deadline = time.time() + 120
    while not all(list((log / i).glob("*_result.pkl")) for log, i in zip(logs, ids)) and time.time() < deadline:
        time.sleep(0.5)
    # the next call (any executor) collects them and runs nothing new
    job = Counting()
    second = run_sweep(g, store=store, job_fn=job, progress=False)
    assert second.collected == 2 and second.to_run == 0 and job.calls == []
    assert set(store.statuses().values()) == {"done"} and len(store.statuses()) == 2


FAKE_SLURM = {
    "sbatch": """#!/bin/sh
        n=$(cat "$FAKE_SLURM/next" 2>/dev/null || echo 4242)
        cp "$1" "$FAKE_SLURM/submitted-$n.sh"
        echo $((n + 1)) > "$FAKE_SLURM/next"
        echo "Submitted batch job $n"
        """,
    "srun": "#!/bin/sh\nexit 0\n",
    "scancel": "#!/bin/sh\nexit 0\n",
    "sacct": """#!/bin/sh
        echo "JobID|State|NodeList"
        cat "$FAKE_SLURM/states" 2>/dev/null
        """,
}


def test_slurm_sbatch_lines_and_collection_with_stand_ins(store, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'ncbench[slurm]')")
    from submitit.core.utils import JobPaths

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(textwrap.dedent(text))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(tmp_path))
    g = grid("gpu-grid", seed=[0, 1, 2])
    options = {"partition": "gpu", "gpus_per_job": 1, "cpus_per_job": 4, "timeout_min": 30, "mem_gb": 16,
               "slurm_params": {"account": "abc"}, "wait": False}
    report = run_sweep(g, store=store, executor="slurm", job_fn=fake_job, workers=2, progress=False,
                       executor_options=options)
    assert report.still_running == 3
    script = (tmp_path / "submitted-4242.sh").read_text()
    lines = set(script.splitlines())
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --time=30", "#SBATCH --mem=16GB", "#SBATCH --account=abc",
                     "#SBATCH --job-name=ncbench-gpu-grid", "#SBATCH --array=0-2%2", "#SBATCH --nodes=1",
                     "#SBATCH --ntasks-per-node=1"):
        assert expected in lines, (expected, script)
    assert any(line.startswith("srun --unbuffered --output ") and "submitit.core._submit" in line
               for line in lines)
    pending = {json.loads(p.read_text())["cell"]: json.loads(p.read_text())
               for p in (store.folder / "slurm" / "gpu-grid" / "pending").glob("*.json")}
    assert sorted(e["slurm_job_id"] for e in pending.values()) == ["4242_0", "4242_1", "4242_2"]
    # a second call while they run submits nothing
    run_sweep(g, store=store, executor="slurm", job_fn=fake_job, progress=False, executor_options=options)
    assert not (tmp_path / "submitted-4243.sh").exists()
    # the cluster finishes cell 0, cell 1 raises, cell 2 is cancelled: the next call stores the first two and
    # submits cell 2 again (a job that raised has a result; a cancelled one has none)
    logs = Path(pending[0]["logs"]) / "%j"
    spec0 = JobSpec(job_id=pending[0]["job_id"], config={}, sweep="gpu-grid", axes=pending[0]["axes"], cell=0)
    for cell, outcome in ((0, ("success", fake_job(spec0))),
                          (1, ("error", "Traceback (most recent call last):\n  ...\nValueError: bad cell 1\n"))):
        path = JobPaths(logs, job_id=pending[cell]["slurm_job_id"]).result_pickle
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(outcome))
    (tmp_path / "states").write_text("4242_0|COMPLETED|n1\n4242_1|FAILED|n1\n4242_2|CANCELLED by 0|n1\n")
    third = run_sweep(g, store=store, executor="slurm", job_fn=fake_job, progress=False, executor_options=options)
    assert third.collected == 2 and third.to_run == 1 and third.still_running == 1
    assert store.status(pending[0]["job_id"]) == "done"
    assert "ValueError: bad cell 1" in store.records(status="failed")[0]["error"]
    assert (tmp_path / "submitted-4243.sh").exists()  # cell 2 again, as a single job
    assert "--array" not in (tmp_path / "submitted-4243.sh").read_text()


def test_debug_cluster_is_refused(store):
    with pytest.raises(InputError, match="debug executor"):
        run_sweep(grid(seed=[0]), store=store, executor="slurm", job_fn=fake_job, progress=False,
                  executor_options={"cluster": "debug"})


# ---------------------------------------------------------------------------------------- end to end

def _sweep_command(grid_path, store_path):
    """``python -m ncbench sweep`` once the CLI lists it; until then the same handler through its register()."""
    import contextlib
    import io

    from ncbench.cli import build_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["sweep", str(grid_path)])
        return [sys.executable, "-m", "ncbench", "sweep", str(grid_path), "--store", str(store_path)]
    except SystemExit:
        code = ("import argparse, sys\nfrom ncbench._cli_sweep import register_sweep\n"
                "p = argparse.ArgumentParser(); register_sweep(p.add_subparsers())\n"
                "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
        return [sys.executable, "-c", code, "sweep", str(grid_path), "--store", str(store_path)]


@pytest.mark.slow
def test_sigkill_of_a_real_sweep_loses_and_duplicates_nothing(tmp_path):
    import ncbench.evaluate

    if not hasattr(ncbench.evaluate, "evaluate_job"):
        pytest.skip("ncbench.evaluate.evaluate_job is not there yet")
    path = tmp_path / "grid.yaml"
    g = grid("kill", seed=[0, 1, 2], train__weight_decay=[5e-4, 5e-3])
    # 150 epochs (about 1 s a job here) instead of 2: with 2, the four jobs after the second finish within
    # 0.1 s, before the kill can land mid-sweep
    g["base"]["train"]["epochs"] = 150
    path.write_text(json.dumps(g))  # JSON is YAML
    store_path = tmp_path / "res" / "results.sqlite"
    cmd = _sweep_command(path, store_path) + ["--executor", "process", "--workers", "2", "--threads-per-job", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists():
            with ResultsStore(store_path) as st:
                done = sum(1 for s in st.statuses().values() if s == "done")
        if done >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]  # still running: kill it mid-sweep
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    # the pool's workers notice that the driver is gone and stop computing (no orphans left running)
    assert group_ends(proc.pid), "worker processes outlived the killed driver by 15 s"
    with ResultsStore(store_path) as st:
        after_kill = st.statuses()
    assert 2 <= len(after_kill) < 6 and set(after_kill.values()) == {"done"}
    rerun = subprocess.run(cmd + ["--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(after_kill)} already done" in rerun.stdout
    with ResultsStore(store_path) as st:
        statuses = st.statuses()
        frame = load_frame(st, sweep="kill")
    assert len(statuses) == 6 and set(statuses.values()) == {"done"}
    assert len(frame) == 6 and frame["job_id"].is_unique
    assert sorted(zip(frame["seed"], frame["train.weight_decay"])) == [(s, w) for s in (0, 1, 2)
                                                                       for w in (5e-4, 5e-3)]
    with __import__("sqlite3").connect(store_path) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 6


def test_an_edited_grid_is_what_its_frame_shows(store):
    """Dropping a value from a grid drops its cells from the sweep's frame (their jobs stay in the store and
    come back, without rerunning, if the value does)."""
    from ncbench.store import load_frame

    job = Counting()
    run_sweep(grid(seed=[0, 1, 2]), store=store, job_fn=job, progress=False)
    assert len(load_frame(store, sweep="t")) == 3
    run_sweep(grid(seed=[0, 1]), store=store, job_fn=job, progress=False)
    assert sorted(load_frame(store, sweep="t")["seed"]) == [0, 1]
    assert len(store.statuses()) == 3
    run_sweep(grid(seed=[0, 1, 2]), store=store, job_fn=job, progress=False)
    assert len(load_frame(store, sweep="t")) == 3 and job.calls == [0, 1, 2]


def test_an_export_resumes_the_sweep_elsewhere(store, tmp_path):
    """Export a half-run sweep as records.jsonl.gz, import it into a fresh store (another machine): the dry run
    says the exported jobs are done, the next run computes only the rest, nothing is stored twice. Catches: an
    import that reads only *.json files; an import that drops provenance.sweep (the jobs would not be the
    sweep's); a gzip export with a timestamp (two exports of the same jobs would differ)."""
    import gzip

    g = grid(seed=[0, 1, 2, 3])
    run_sweep(g, store=store, job_fn=Counting(interrupt_at=4), progress=False)  # 3 of 4 done
    out = tmp_path / "export" / "records.jsonl.gz"
    out.parent.mkdir()
    code, _, err = cli("results", "export", "--store", store.path, "--sweep", "t", "-o", out)
    assert code == 0 and "wrote 3 job(s)" in err
    first = out.read_bytes()
    assert first[4:8] == b"\0\0\0\0"  # gzip mtime field: no timestamp
    code, _, _ = cli("results", "export", "--store", store.path, "--sweep", "t", "-o", out, "--force")
    assert out.read_bytes() == first
    assert [json.loads(x) for x in gzip.decompress(first).splitlines()] == store.records(sweep="t")

    fresh = tmp_path / "elsewhere" / "results.sqlite"
    code, out_text, _ = cli("results", "import", out, "--store", fresh)
    assert code == 0 and out_text.startswith("imported 3 record(s)")
    with ResultsStore(fresh) as st:
        assert {a["seed"] for a in st.members("t").values()} == {0, 1, 2}  # membership kept, with axes
        dry = run_sweep(g, store=st, dry_run=True, estimate=False)
        assert (dry.total, dry.already_done, dry.to_run) == (4, 3, 1)
        job = Counting()
        run_sweep(g, store=st, job_fn=job, progress=False)
        assert job.calls == [3] and len(st.statuses()) == 4
        # the imported jobs now sit in their grid cells (an import knows no cell numbers)
        assert sorted(cell for cell, _ in st.cells("t").values()) == [0, 1, 2, 3]
        assert st.summary()[0] == {"sweep": "t", "jobs": 4, "grid": 4, "done": 4, "failed": 0, "missing": 0,
                                   "outside": 0}
    # importing the same export again, or the folder holding it, duplicates nothing
    code, out_text, _ = cli("results", "import", out.parent, "--store", fresh)
    assert out_text.startswith("imported 0 record(s) into") and "3 already stored" in out_text
