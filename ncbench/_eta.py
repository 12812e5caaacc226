"""How long one ``ncbench evaluate`` training will take here, said before it starts (with the faster choice).

The sweep's ``--dry-run`` estimator (:mod:`ncbench.sweep._estimate`) times a few training steps of the model on
random inputs and extrapolates; this asks it about one config, and about the CPU-sized alternative.
"""

from __future__ import annotations

from dataclasses import replace

#: datasets whose default model is sized for a GPU, and the model that trains in minutes on a CPU instead
CPU_ALTERNATIVE = {"mnist": "mlp", "fashion_mnist": "mlp", "kmnist": "mlp", "cifar10": "cnn2d",
                   "cifar100": "cnn2d", "svhn": "cnn2d", "stl10": "cnn2d"}


def _seconds(cfg) -> float:
    from .sweep._estimate import _data_shape, _measured_seconds, _time_steps

    shape, n_train, n_test, classes, load_s = _data_shape(cfg, {})
    step_s, _device = _time_steps(cfg, shape, classes, cfg.threads, {})
    return load_s + _measured_seconds(cfg, step_s, shape, n_train, n_test, classes)


def training_estimate(cfg) -> dict | None:
    """``{"seconds", "method", "faster"}`` for training and evaluating ``cfg`` on this machine, or None when
    it cannot be estimated (e.g. the data are not here yet). ``faster`` names a CPU-sized choice when the
    dataset's default model is sized for a GPU and it would be much faster here."""
    from ._errors import NcbenchError
    from .config import build_config

    try:
        seconds = _seconds(cfg)
    except (NcbenchError, OSError, RuntimeError):
        return None
    out = {"seconds": seconds, "method": "a few timed training steps, extrapolated", "faster": ""}
    alt = CPU_ALTERNATIVE.get(cfg.dataset)
    if alt and alt != cfg.model and cfg.device != "cuda":
        try:
            alt_cfg = build_config({"dataset": cfg.dataset, "model": alt, "dataset_args": dict(cfg.dataset_args),
                                    "train": {"epochs": cfg.train.epochs}}, device=cfg.device, threads=cfg.threads)
            alt_cfg = replace(alt_cfg, attack=cfg.attack, extra_attacks=cfg.extra_attacks)
            alt_s = _seconds(alt_cfg)
        except (NcbenchError, OSError, RuntimeError):
            return out
        if alt_s < seconds / 3:
            out["faster"] = (f"On this CPU, --model {alt} takes about {alt_s / 60:.0f} min (the default {cfg.model} "
                             "is sized for a GPU); --epochs or dataset_args.n_train also shorten it.")
    return out
