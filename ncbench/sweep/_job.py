"""The job function that every executor runs: one picklable job description in, one result record out.

Workers (a process pool, Ray, Slurm through submitit) import this module by name, so it must stay
importable without the driver's state: everything the job needs travels in :class:`JobSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to run one job (plain data, picklable).

    job_id : the id the driver computed (64 hex); the record must carry the same one.
    config : the evaluate config as a plain dict (a grid cell's config).
    sweep, axes, cell : the sweep's name, the cell's ``{dotted key: value}`` and its number.
    checkpoint_dir : where the trained model is saved as ``<job_id>.safetensors`` (None: not saved).
    threads : torch CPU threads for this job (None: leave torch's default).
    """

    job_id: str
    config: dict
    sweep: str | None = None
    axes: dict = field(default_factory=dict)
    cell: int | None = None
    checkpoint_dir: str | None = None
    threads: int | None = None


def run_job(spec: JobSpec) -> dict:
    """Run one job: set the thread count, validate the config, train, measure, attack; return the record.

    Raises whatever the evaluation raises (the driver stores it as a failed job with the message).
    """
    import torch

    from ..config import build_config
    from ..evaluate import evaluate_job

    raw = dict(spec.config)
    if spec.threads is not None:
        torch.set_num_threads(int(spec.threads))
        if raw.get("threads") is None:
            raw["threads"] = int(spec.threads)  # recorded as an environment fact; not part of the job id
    cfg = build_config(raw)
    sweep = {"name": spec.sweep, "axes": dict(spec.axes)} if spec.sweep is not None else None
    return evaluate_job(cfg, sweep=sweep, checkpoint_dir=spec.checkpoint_dir, progress=False)
