"""One model -> one result record: clean accuracy, collapse on train and test, baselines, robustness,
provenance and the job identity (docs/records.md)."""

from __future__ import annotations

import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from ._errors import CheckpointError, InputError
from ._io import dumps, write_new
from .attacks import robustness_curve
from .collapse import CollapseWarning, collapse_metrics
from .config import EvaluateConfig
from .data import Dataset, load_dataset
from .environment import configure_numerics, environment, resolve_device, versions
from .features import extract, memory_format_name, output_margin, prepare_model
from .identity import checkpoint_facts, dataset_identity, digest, identity
from .models import Classifier, create_model, load_checkpoint, model_checksum, save_checkpoint
from .record import SCHEMA_VERSION, validate_record
from .train import TrainResult, train

__all__ = ["evaluate_job", "evaluate_model", "find_record", "prepare", "record_stem", "run_evaluate",
           "write_record", "resolve_device"]


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return int((logits.argmax(1) == y.to(logits.device)).sum()) / len(y)


def measures(model, logits_train: torch.Tensor, y_train: torch.Tensor) -> dict:
    """Baselines that generalization-measure studies include beside any new measure (Jiang et al. 2020).

    ``sum_squared_weights``: the sum of squares of every weight matrix and convolution kernel (parameters
    with two or more dimensions; batch-norm scales and biases excluded). ``train_margin_p10``: the 10th
    percentile over training samples of the output margin, true logit minus the largest other logit
    (negative for misclassified samples; unnormalised).
    """
    sq = sum(float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.ndim >= 2)
    z = logits_train.double()
    margin = float(torch.quantile(output_margin(z, y_train.to(z.device)), 0.1))
    return {"num_parameters": sum(p.numel() for p in model.parameters()), "sum_squared_weights": sq,
            "train_margin_p10": margin}


def evaluate_model(model: Classifier, ds: Dataset, cfg: EvaluateConfig, *, weight_decay: float | None,
                   progress: bool = True) -> dict:
    """Measure a trained model: accuracy, collapse metrics (spec/nc-metrics.md), baselines and every attack.

    ``weight_decay``: lambda of the ls_gap fit (None = unknown: the minimum-norm fit, lambda = 0).
    """
    timings = {}
    t = time.perf_counter()
    f_tr, z_tr = extract(model, ds.x_train)
    f_te, z_te = extract(model, ds.x_test)
    acc = {"train": _accuracy(z_tr, ds.y_train), "test": _accuracy(z_te, ds.y_test)}
    timings["features"] = time.perf_counter() - t
    t = time.perf_counter()
    collapse = collapse_metrics((f_tr, ds.y_train), (f_te, ds.y_test), weight=model.fc.weight,
                                bias=model.fc.bias, weight_decay=weight_decay or 0.0)
    timings["collapse"] = time.perf_counter() - t
    t = time.perf_counter()
    robustness = robustness_curve(model, ds.x_test, ds.y_test, cfg.attack, seed=cfg.seed, progress=progress)
    extra = [robustness_curve(model, ds.x_test, ds.y_test, a, seed=cfg.seed, progress=progress)
             for a in cfg.extra_attacks]
    timings["attack"] = time.perf_counter() - t
    return {"accuracy": acc, "collapse": collapse, "measures": measures(model, z_tr, ds.y_train),
            "robustness": robustness, "extra_robustness": extra, "timings": timings}


def log_epochs(epochs: int, n: int) -> list[int]:
    """About ``n`` log-spaced epochs in 1..epochs, always with the first and the last."""
    if n <= 0:
        return []
    import numpy as np

    return sorted({int(round(e)) for e in np.geomspace(1, epochs, num=max(n, 2))} | {1, epochs})


class CollapseTracker:
    """A training callback that measures accuracy and collapse at log-spaced epochs and at the first epoch of
    zero training error (the start of the terminal phase)."""

    def __init__(self, ds: Dataset, epochs: list[int], weight_decay: float) -> None:
        self.ds, self.epochs, self.weight_decay = ds, set(epochs), weight_decay
        self.rows: list[dict] = []
        self._tpt_seen = False

    def __call__(self, epoch: int, model: Classifier, row: dict) -> None:
        first_zero = row["train_accuracy"] == 1.0 and not self._tpt_seen
        self._tpt_seen |= row["train_accuracy"] == 1.0
        if epoch not in self.epochs and not first_zero:
            return
        f_tr, z_tr = extract(model, self.ds.x_train)
        f_te, z_te = extract(model, self.ds.x_test)
        entry = {"epoch": epoch, "first_zero_error": first_zero, "train_accuracy": _accuracy(z_tr, self.ds.y_train),
                 "test_accuracy": _accuracy(z_te, self.ds.y_test)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CollapseWarning)  # early features are often degenerate
                entry["collapse"] = collapse_metrics((f_tr, self.ds.y_train), (f_te, self.ds.y_test),
                                                     weight=model.fc.weight, bias=model.fc.bias,
                                                     weight_decay=self.weight_decay, ls_gap=False)
        except InputError as err:  # e.g. two classes with identical features early on: say so, no NaN
            entry["collapse"] = None
            entry["collapse_error"] = str(err)
        self.rows.append(entry)


def check_fits(model, ds: Dataset, path: str, target: str | None = None) -> None:
    """Refuse a loaded model whose class count or input shape is not ``ds``'s (``target`` names what the data
    is for in the message, default the dataset)."""
    spec = model.spec
    target = target or f"dataset {ds.name!r}"
    if spec.num_classes != ds.num_classes:
        raise CheckpointError(f"{path}: the checkpoint has {spec.num_classes} classes but {target} has "
                              f"{ds.num_classes}")
    if tuple(spec.input_shape) != ds.input_shape:
        raise CheckpointError(f"{path}: the checkpoint takes inputs of shape {tuple(spec.input_shape)} but "
                              f"{target} has {ds.input_shape}")


def prepare(cfg: EvaluateConfig, *, checkpoint: str | None = None, progress: bool = True, trust: bool = False):
    """Dataset and model (trained here, or loaded from ``checkpoint``), with what training did.

    Returns ``(dataset, model, train_result or None, device, timings)``.
    """
    device = resolve_device(cfg.device)
    configure_numerics(device, cfg.threads)
    timings = {}
    t = time.perf_counter()
    ds = load_dataset(cfg.dataset, **cfg.loader_args())
    timings["data"] = time.perf_counter() - t
    trained: TrainResult | None = None
    if checkpoint is not None:
        model = load_checkpoint(checkpoint, map_location=device, trust=trust)
        check_fits(model, ds, checkpoint)
        prepare_model(model, device)
    else:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes,
                             mean=ds.mean, std=ds.std, **cfg.model_args)
        prepare_model(model, device)
        tracker = CollapseTracker(ds, log_epochs(cfg.train.epochs, cfg.collapse_epochs), cfg.train.weight_decay)
        trained = train(model, ds.x_train, ds.y_train, cfg.train, seed=cfg.seed, device=device,
                        callback=tracker, progress=progress)
        trained.collapse_history = tracker.rows
        timings["train"] = trained.wall_time_s
    return ds, model, trained, device, timings


def training_metadata(cfg: EvaluateConfig, job_id: str) -> dict:
    """What an ncbench checkpoint carries about how it was trained (read back as ``model.trained_by``)."""
    return {"job_id": job_id, "recipe": cfg.train.effective(), "seed": int(cfg.seed),
            "dataset": dataset_identity(cfg), "ncbench_version": __version__}


def run_evaluate(cfg: EvaluateConfig, *, checkpoint: str | None = None, progress: bool = True,
                 trust: bool = False, sweep: dict | None = None, save_model_to: str | Path | None = None) -> dict:
    """The whole pipeline for one config: returns the result record (not yet written).

    ``checkpoint``: evaluate these weights (default ``cfg.checkpoint``; None: train ``cfg``'s model).
    ``sweep``: ``{"name", "axes"}`` when a sweep runs the job (recorded, not part of the identity).
    ``save_model_to``: also write the trained model there (safetensors, with its recipe and job id).
    """
    checkpoint = checkpoint if checkpoint is not None else cfg.checkpoint
    trust = trust or cfg.trust_checkpoint
    t0 = time.perf_counter()
    created = datetime.now(timezone.utc)
    ds, model, trained, device, timings = prepare(cfg, checkpoint=checkpoint, progress=progress, trust=trust)
    if trained is not None:
        wd = cfg.train.weight_decay
        ident = identity(cfg)
    else:
        facts = checkpoint_facts(model)
        wd = facts["ls_gap_weight_decay"]
        ident = identity(cfg, checkpoint=facts)
    job_id = digest(ident)
    result = evaluate_model(model, ds, cfg, weight_decay=wd, progress=progress)
    timings.update(result.pop("timings"))
    training = None
    measures_ = result.pop("measures")
    measures_["final_train_loss"] = None
    if trained is not None:
        final_loss = trained.history[-1]["loss"]
        training = {"terminal_phase_epoch": trained.terminal_phase_epoch, "final_loss": final_loss,
                    "precision": cfg.train.precision, "history": trained.history,
                    "collapse_history": trained.collapse_history}
        measures_["final_train_loss"] = final_loss
        if save_model_to is not None:
            save_checkpoint(model, save_model_to, training=training_metadata(cfg, job_id))
    timings["total"] = time.perf_counter() - t0
    model_info = {**model.spec.to_dict(), "checksum": model_checksum(model),
                  "num_parameters": measures_["num_parameters"],
                  "source": "checkpoint" if checkpoint else "trained",
                  "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                  "trained_by": getattr(model, "trained_by", None) if checkpoint else None}
    if hasattr(model, "fc_fit_residual"):
        model_info["fc_fit_residual"] = model.fc_fit_residual
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "ncbench.evaluate",
        "created": created.isoformat(timespec="seconds"),
        "provenance": {
            "job_id": job_id, "identity": ident, "ncbench_version": __version__, "versions": versions(),
            "environment": environment(device, memory_format=memory_format_name(model)),
            "seed": cfg.seed, "config": cfg.to_dict(), "sweep": sweep, "dataset": ds.describe(),
            "model": model_info, "ls_gap_weight_decay": wd, "wall_time_s": timings,
        },
        "training": training,
        "measures": measures_,
        **result,
    }
    return validate_record(record)


def evaluate_job(cfg: EvaluateConfig, *, sweep: dict | None = None, checkpoint_dir: str | Path | None = None,
                 checkpoint: str | None = None, progress: bool = False) -> dict:
    """One sweep job: :func:`run_evaluate`, with the trained model written to ``checkpoint_dir/<job_id>.safetensors``
    (atomically) when a folder is given. Returns the record."""
    save_to = None
    checkpoint = checkpoint if checkpoint is not None else cfg.checkpoint
    if checkpoint_dir is not None and checkpoint is None:
        from .identity import compute_job_id

        save_to = Path(checkpoint_dir) / f"{compute_job_id(cfg)}.safetensors"
    return run_evaluate(cfg, checkpoint=checkpoint, progress=progress, sweep=sweep, save_model_to=save_to)


def record_stem(record: dict) -> str:
    """``<dataset>-<arch>-<model tag>-<job id, 16 hex>``; the tag is ``s<seed>`` of the training seed (for a
    checkpoint, the seed its metadata records), or ``ckpt<checksum, 8 hex>`` when that is unknown."""
    prov = record["provenance"]
    model = prov["model"]
    if model["source"] == "trained":
        tag = f"s{prov['seed']}"
    elif (model.get("trained_by") or {}).get("seed") is not None:
        tag = f"s{model['trained_by']['seed']}"
    else:
        tag = f"ckpt{model['checksum'][:8]}"
    arch = model["arch"].replace(":", "_").replace("/", "_").replace(".", "_")
    return f"{prov['dataset']['name']}-{arch}-{tag}-{prov['job_id'][:16]}"


def find_record(output: str | Path, job_id: str) -> Path | None:
    """The record of job ``job_id`` under ``output``, or None: "already done"."""
    folder = Path(output)
    if not folder.is_dir():
        return None
    import json

    for path in sorted(folder.glob(f"*-{job_id[:16]}*.json")):
        try:
            if json.loads(path.read_text())["provenance"]["job_id"] == job_id:
                return path
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def write_record(record: dict, output: str | Path) -> Path:
    """Write the record as JSON under ``output`` atomically, once per job: if a record of the same job is there
    already (the same ``provenance.job_id``), that record's path is returned and nothing is written."""
    existing = find_record(output, record["provenance"]["job_id"])
    if existing is not None:
        return existing
    return write_new(output, record_stem(record), dumps(record))
