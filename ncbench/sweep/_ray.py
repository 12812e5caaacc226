"""The Ray executor: one Ray task per job; results come back to the driver, which writes the store.

Token authentication (Ray >= 2.60). A ``ray.init()`` that starts a local cluster turns token auth on and,
when no token exists, writes one to ``~/.ray/auth_token`` (and fails where the home folder is not
writable); connecting to a cluster by its address does *not* turn it on, so a cluster started with a token
refuses the connection (a bare ``ConnectionError`` after about 20 s of retries) even when
``~/.ray/auth_token`` holds the right token. :func:`auth_environment` therefore

* for a local Ray that ncbench starts: turns token auth on with a fresh random token passed through the
  environment (``RAY_AUTH_TOKEN``), unless the user set ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH``: the cluster is private to this run, nothing is written to the home folder;
* for a cluster address: turns token auth on when a token is available (``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and the user did not set ``RAY_AUTH_MODE`` (a cluster
  without auth accepts a client that sends a token).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections import deque
from pathlib import Path

from .._errors import InputError
from ._executors import Outcome, require

#: how often Ray reruns a task whose worker process or node died (not a job that raises: that is a result)
DEFAULT_MAX_RETRIES = 2
RAY_OPTIONS = ("address", "cpus_per_job", "gpus_per_job", "num_cpus", "max_retries")


def _home_token() -> Path | None:
    try:
        path = Path.home() / ".ray" / "auth_token"
    except RuntimeError:  # no home folder
        return None
    return path if path.is_file() else None


def auth_environment(address: str | None, environ=None) -> dict:
    """The environment variables to set before ``ray.init`` so that token authentication just works.

    Parameters
    ----------
    address : None or "local" (start a local Ray), "auto" or "host:port" (connect to a cluster).
    environ : the environment to inspect (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_MODE"):
        return {}
    user_token = bool(env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"))
    if address in (None, "local"):
        if user_token:
            return {"RAY_AUTH_MODE": "token"}
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    if user_token or _home_token() is not None:
        return {"RAY_AUTH_MODE": "token"}
    return {}


def init_ray(*, address: str | None = None, num_cpus: int | None = None):
    """Start a local Ray (``address`` None) or connect to a cluster, with the token handling above.

    Returns the ``ray`` module. Ray reads ``RAY_AUTH_MODE`` when it is imported, so its config is refreshed
    after the environment changes (as ``ray.init`` does itself when it turns auth on).
    """
    changes = auth_environment(address)
    os.environ.update(changes)
    ray = require("ray", "ray")
    if changes:
        try:
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):  # an older Ray without token auth reads nothing here
            pass
    if address in (None, "local"):
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        return ray
    if num_cpus is not None:
        raise InputError("--ray-num-cpus sizes a local Ray; a cluster has its own CPUs (leave it out with --address)")
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ray.exceptions.RayError, RuntimeError) as err:
        raise InputError(
            f"could not connect to the Ray cluster at {address!r}: {str(err).splitlines()[0]}. If the cluster uses "
            "token authentication (on by default since Ray 2.60), put its token (`ray get-auth-token` on the head "
            "node) in ~/.ray/auth_token or RAY_AUTH_TOKEN and set RAY_AUTH_MODE=token") from None
    return ray


def _lost_errors(ray) -> tuple:
    """Ray errors that mean the worker or node went away (the job runs again next call), not that it raised."""
    ex = ray.exceptions
    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError", "TaskCancelledError",
             "LocalRayletDiedError", "RaySystemError", "ActorDiedError", "OutOfMemoryError", "ObjectFetchTimedOutError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


def run_ray(specs, sink, *, job_fn, workers=None, options=None) -> Outcome:
    """Run each job as a Ray task (``num_cpus=cpus_per_job``, ``num_gpus=gpus_per_job``).

    Uses the Ray this process is already connected to, else starts one (``address`` None: a local Ray with
    ``num_cpus`` CPUs, default all) or connects to ``address``; a Ray started here is shut down at the end.
    ``workers`` caps the tasks in flight (None: all are handed to Ray, which queues them by resources).
    """
    options = dict(options or {})
    if not specs:
        return Outcome()
    ray = require("ray", "ray")
    started = False
    if not ray.is_initialized():
        init_ray(address=options.get("address"), num_cpus=options.get("num_cpus"))
        started = True
    cpus = options.get("cpus_per_job") or 1
    gpus = options.get("gpus_per_job") or 0
    retries = options.get("max_retries", DEFAULT_MAX_RETRIES)
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)(job_fn)
    queue = deque(specs)
    pending: dict = {}
    lost = []
    lost_types = _lost_errors(ray)

    def fill() -> None:
        while queue and (workers is None or len(pending) < workers):
            spec = queue.popleft()
            pending[remote.remote(spec)] = spec

    try:
        fill()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # the job raised: a result (stored as failed)
                    cause = getattr(err, "cause", None)
                    sink.failure(spec, cause if isinstance(cause, BaseException) else err)
                except lost_types:
                    lost.append(spec)
                else:
                    sink.result(spec, record)
            fill()
    except KeyboardInterrupt:
        for ref in list(pending):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 -- best effort while stopping; nothing is stored for these jobs
                pass
        return Outcome(interrupted=list(pending.values()) + lost, reason="interrupted (Ctrl-C)", user_interrupt=True)
    finally:
        if started:
            ray.shutdown()
    if lost:
        return Outcome(interrupted=lost, reason=f"{len(lost)} job(s) lost their Ray worker or node (after {retries} "
                                                "retries)")
    return Outcome()
