"""One model -> one result record: clean accuracy, collapse on train and test, robustness, provenance."""

from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from ._errors import CheckpointError, InputError
from ._io import dumps, write_new
from .attacks import robustness_curve
from .collapse import collapse_metrics
from .config import EvaluateConfig
from .data import Dataset, load_dataset
from .models import Classifier, create_model, load_checkpoint, model_checksum
from .train import TrainResult, train

SCHEMA_VERSION = 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


@torch.no_grad()
def extract(model: Classifier, x: torch.Tensor, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, D) and logits (N, C) in one batched pass, eval mode, on the model's device."""
    model.eval()
    dev = next(model.parameters()).device
    feats, logits = [], []
    for i in range(0, x.shape[0], batch_size):
        f = model.features(x[i:i + batch_size].to(dev))
        feats.append(f)
        logits.append(model.fc(f))
    return torch.cat(feats), torch.cat(logits)


def evaluate_model(model: Classifier, ds: Dataset, cfg: EvaluateConfig, *, weight_decay: float,
                   progress: bool = True) -> dict:
    """Measure a trained model: accuracy, collapse metrics (spec/nc-metrics.md) and the robustness curve."""
    timings = {}
    t = time.perf_counter()
    f_tr, z_tr = extract(model, ds.x_train)
    f_te, z_te = extract(model, ds.x_test)
    dev = f_tr.device
    acc = {"train": int((z_tr.argmax(1) == ds.y_train.to(dev)).sum()) / len(ds.y_train),
           "test": int((z_te.argmax(1) == ds.y_test.to(dev)).sum()) / len(ds.y_test)}
    timings["features"] = time.perf_counter() - t
    t = time.perf_counter()
    collapse = collapse_metrics((f_tr, ds.y_train), (f_te, ds.y_test), weight=model.fc.weight,
                                bias=model.fc.bias, weight_decay=weight_decay)
    timings["collapse"] = time.perf_counter() - t
    t = time.perf_counter()
    robustness = robustness_curve(model, ds.x_test, ds.y_test, cfg.attack, seed=cfg.seed, progress=progress)
    timings["attack"] = time.perf_counter() - t
    return {"accuracy": acc, "collapse": collapse, "robustness": robustness, "timings": timings}


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
        dev = f_tr.device
        entry = {"epoch": epoch, "first_zero_error": first_zero,
                 "train_accuracy": int((z_tr.argmax(1) == self.ds.y_train.to(dev)).sum()) / len(self.ds.y_train),
                 "test_accuracy": int((z_te.argmax(1) == self.ds.y_test.to(dev)).sum()) / len(self.ds.y_test)}
        import warnings

        from .collapse import CollapseWarning

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


def _check_fits(model: Classifier, ds: Dataset, path: str) -> None:
    spec = model.spec
    if spec.num_classes != ds.num_classes:
        raise CheckpointError(f"{path}: the checkpoint has {spec.num_classes} classes but dataset {ds.name!r} has "
                              f"{ds.num_classes}")
    if tuple(spec.input_shape) != ds.input_shape:
        raise CheckpointError(f"{path}: the checkpoint takes inputs of shape {tuple(spec.input_shape)} but "
                              f"dataset {ds.name!r} has {ds.input_shape}")


def prepare(cfg: EvaluateConfig, *, checkpoint: str | None = None, progress: bool = True, trust: bool = False):
    """Dataset and model (trained here, or loaded from ``checkpoint``), with what training did."""
    device = resolve_device(cfg.device)
    timings = {}
    t = time.perf_counter()
    ds = load_dataset(cfg.dataset, **cfg.dataset_args)
    timings["data"] = time.perf_counter() - t
    trained: TrainResult | None = None
    if checkpoint is not None:
        model = load_checkpoint(checkpoint, map_location=device, trust=trust)
        _check_fits(model, ds, checkpoint)
    else:
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, input_shape=ds.input_shape, num_classes=ds.num_classes,
                             mean=ds.mean, std=ds.std, **cfg.model_args).to(device)
        tracker = CollapseTracker(ds, log_epochs(cfg.train.epochs, cfg.collapse_epochs), cfg.train.weight_decay)
        trained = train(model, ds.x_train, ds.y_train, cfg.train, seed=cfg.seed, device=device,
                        callback=tracker, progress=progress)
        trained.collapse_history = tracker.rows
        timings["train"] = trained.wall_time_s
    return ds, model, trained, device, timings


def run_evaluate(cfg: EvaluateConfig, *, checkpoint: str | None = None, progress: bool = True,
                 trust: bool = False) -> dict:
    """The whole pipeline for one config: returns the result record (not yet written)."""
    t0 = time.perf_counter()
    created = datetime.now(timezone.utc)
    ds, model, trained, device, timings = prepare(cfg, checkpoint=checkpoint, progress=progress, trust=trust)
    # ls_gap's ridge uses the training weight decay; for a loaded checkpoint it is unknown (0: min-norm LS)
    wd = cfg.train.weight_decay if trained is not None else 0.0
    result = evaluate_model(model, ds, cfg, weight_decay=wd, progress=progress)
    timings.update(result.pop("timings"))
    timings["total"] = time.perf_counter() - t0
    training = None
    if trained is not None:
        training = {"terminal_phase_epoch": trained.terminal_phase_epoch, "history": trained.history,
                    "final_loss": trained.history[-1]["loss"], "collapse_history": trained.collapse_history}
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "ncbench.evaluate",
        "created": created.isoformat(timespec="seconds"),
        "provenance": {
            "ncbench_version": __version__, "torch_version": torch.__version__,
            "python_version": sys.version.split()[0], "platform": platform.platform(),
            "device": device_name(device), "seed": cfg.seed,
            "config": cfg.to_dict(), "config_hash": cfg.hash(),
            "dataset": ds.describe(),
            "model": {**model.spec.to_dict(), "checksum": model_checksum(model),
                      "num_parameters": sum(p.numel() for p in model.parameters()),
                      "source": "checkpoint" if checkpoint else "trained",
                      "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None},
            "collapse_ls_gap_weight_decay": wd,
            "wall_time_s": timings,
        },
        "training": training,
        **result,
    }
    return record


def write_record(record: dict, output: str | Path) -> Path:
    """Write the record as JSON under ``output`` atomically, never over an earlier record."""
    prov = record["provenance"]
    stamp = record["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    stem = f"{stamp}-{prov['dataset']['name']}-{prov['model']['arch']}-s{prov['seed']}-{prov['config_hash'][:8]}"
    return write_new(output, stem, dumps(record))
