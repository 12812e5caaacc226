"""Executors hand jobs to an existing engine and pass each result back to the driver's sink as it arrives.

Every executor has the signature ``execute(specs, sink, *, job_fn, workers, options) -> Outcome``: it calls
``sink.result(spec, record)`` or ``sink.failure(spec, error)`` in the driver process for each job that
finished (the sink writes the store, one transaction per job), and returns what did not finish. A job whose
worker died (killed, out of memory) is *not* a failure: it is reported as interrupted and runs again on the
next call.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

from .._errors import InputError
from ._job import JobSpec


@dataclass
class Outcome:
    """What an executor did not finish.

    interrupted : jobs that were running (or queued in the engine) when it stopped; they run again next call.
    still_running : jobs that keep running outside this process (Slurm), collected by a later call.
    reason : why it stopped early (None: every job finished).
    user_interrupt : True when the stop was a Ctrl-C.
    """

    interrupted: list[JobSpec] = field(default_factory=list)
    still_running: list[JobSpec] = field(default_factory=list)
    reason: str | None = None
    user_interrupt: bool = False


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def require(module: str, extra: str):
    """Import an optional engine, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise InputError(f"--executor {extra} needs {module}, which is not installed: pip install 'ncbench[{extra}]' "
                         f"({err})") from None


# ------------------------------------------------------------------------------------------------- local

def run_local(specs, sink, *, job_fn, workers=None, options=None) -> Outcome:
    """One job after another, in this process."""
    for spec in specs:
        try:
            record = job_fn(spec)
        except KeyboardInterrupt:
            return Outcome(interrupted=[spec], reason="interrupted (Ctrl-C)", user_interrupt=True)
        except Exception as err:  # noqa: BLE001 -- a job that raises is stored as failed and the sweep goes on
            sink.failure(spec, err)
        else:
            sink.result(spec, record)
    return Outcome()


# ----------------------------------------------------------------------------------------------- process

#: seconds between a worker's checks that the driver is still alive
PARENT_POLL_S = 1.0


def _watch_driver(pid: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)  # the driver is gone (e.g. kill -9): its results have nowhere to go, stop computing
        except PermissionError:
            pass


def _init_worker(driver_pid: int, threads: int | None) -> None:
    """Pool worker start: Ctrl-C is the driver's to handle; threads set once; exit when the driver dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))
    threading.Thread(target=_watch_driver, args=(driver_pid,), daemon=True, name="ncbench-driver-watch").start()


def _mp_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # the fork server imports torch and the job module once; each worker forks from it, ready to run
        ctx.set_forkserver_preload(["ncbench.sweep._job", "ncbench.evaluate"])
        return ctx
    return mp.get_context("spawn")


def _stop_workers(pool) -> None:
    """Cancel what has not started and end the running workers now (Python >= 3.14 has a public call)."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_process(specs, sink, *, job_fn, workers: int, options=None) -> Outcome:
    """A pool of ``workers`` processes (forkserver, else spawn); each job runs with its own thread count.

    A job that raises comes back as its exception (stored as failed). A worker that dies breaks the pool:
    the jobs that had not finished are reported as interrupted and the run stops.
    """
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if not specs:
        return Outcome()
    threads = specs[0].threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(), initializer=_init_worker,
                               initargs=(os.getpid(), threads))
    futures = {}
    handled = set()

    def deliver(fut) -> None:
        """Pass one finished future to the sink (once)."""
        handled.add(fut)
        try:
            record = fut.result()
        except Exception as err:  # noqa: BLE001 -- the job raised: store it as failed
            sink.failure(futures[fut], err)
        else:
            sink.result(futures[fut], record)

    try:
        for spec in specs:
            futures[pool.submit(job_fn, spec)] = spec
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            if any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool) for f in done):
                # results that made it back before the break still count; the rest ran in (or waited for) a
                # worker that is gone and runs again on the next call
                for fut in futures:
                    if (fut not in handled and fut.done() and not fut.cancelled()
                            and not isinstance(fut.exception(), BrokenProcessPool)):
                        deliver(fut)
                pool.shutdown(wait=False, cancel_futures=True)
                lost = [spec for fut, spec in futures.items() if fut not in handled]
                return Outcome(interrupted=lost, reason="a worker process died (killed, or out of memory); the pool "
                                                        "stopped")
            for fut in done:
                if not fut.cancelled():
                    deliver(fut)
        pool.shutdown(wait=True)
        return Outcome()
    except KeyboardInterrupt:
        running = [spec for fut, spec in futures.items() if fut.running()]
        for fut in futures:
            if fut not in handled and fut.done() and not fut.cancelled() and fut.exception() is None:
                deliver(fut)
        _stop_workers(pool)
        return Outcome(interrupted=running, reason="interrupted (Ctrl-C)", user_interrupt=True)
