"""Sweeps: hundreds of models from one YAML grid, run on one machine or a cluster, stored as they finish.

>>> sweep = expand_grid("configs/sweeps/mnist1d-grid.yaml")            # doctest: +SKIP
>>> report = run_sweep(sweep, store="ncbench-results/results.sqlite",  # doctest: +SKIP
...                    executor="process", workers=2)

:func:`expand_grid` turns a grid file into one validated job per cell; :func:`run_sweep` computes each job's
id, skips the jobs the store already holds, and hands the rest to an executor (``local``, ``process``,
``ray``, ``slurm``); :func:`run_job` is the job function that workers import.
"""

from ._driver import EXECUTORS, SweepReport, format_report, job_id_of, run_sweep
from ._grid import Sweep, SweepJob, expand_grid
from ._job import JobSpec, run_job

__all__ = ["EXECUTORS", "JobSpec", "Sweep", "SweepJob", "SweepReport", "expand_grid", "format_report", "job_id_of",
           "run_job", "run_sweep"]
