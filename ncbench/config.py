"""The evaluate configuration: one validated dataclass, from YAML and/or command-line overrides.

Defaults per dataset live in :data:`DATASET_DEFAULTS` (the one place to change a recipe). A config's hash
(sha256 of its canonical JSON, output folder and device excluded) goes into every result record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ._errors import InputError
from .attacks import AttackConfig
from .train import TrainConfig

#: Per-dataset defaults. MNIST-1D: the CNN reaches zero train error near epoch 20 of 60 and keeps going into
#: the terminal phase; weight decay 5e-3 (10x the PNAS CIFAR value) drives collapse within a CPU budget
#: (about 20 s on 2 cores). Digits: the MLP reaches zero train error by epoch ~5 of 150 (4 s); batch 128 as in
#: the papers (batch 64 with this weight decay keeps losing a training sample and collapses 20x less). eps grids (per threat model) bracket the budgets at which PGD-20 brings robust
#: accuracy near zero; L2 budgets are about sqrt(input dimension) times the Linf ones.
DATASET_DEFAULTS: dict[str, dict] = {
    "mnist1d": {
        "model": "cnn1d", "model_args": {},
        "train": {"epochs": 60, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-3},
        "attack": {"eps": {"Linf": [0.0, 0.005, 0.01, 0.02, 0.04], "L2": [0.0, 0.05, 0.1, 0.2, 0.4]}},
    },
    "digits": {
        "model": "mlp", "model_args": {"width": 256, "depth": 3},
        "train": {"epochs": 150, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-3},
        "attack": {"eps": {"Linf": [0.0, 0.02, 0.05, 0.1, 0.2], "L2": [0.0, 0.25, 0.5, 1.0, 2.0]}},
    },
}
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EvaluateConfig:
    dataset: str = "mnist1d"
    dataset_args: dict = field(default_factory=dict)
    model: str = "cnn1d"
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    collapse_epochs: int = 12  # about this many log-spaced epochs at which collapse is measured (0: none)
    output: str = "ncbench-results"

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "dataset_args": dict(self.dataset_args), "model": self.model,
                "model_args": dict(self.model_args), "seed": self.seed, "device": self.device,
                "train": self.train.to_dict(), "attack": self.attack.to_dict(),
                "collapse_epochs": self.collapse_epochs, "output": self.output}

    def hash(self) -> str:
        """sha256 of what determines the numbers (not where they are written, nor the device)."""
        d = self.to_dict()
        d.pop("output")
        d.pop("device")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _known(section: str, given: dict, allowed: list[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {section}; valid keys: {sorted(allowed)}")


def _keyword_defaults(func) -> dict:
    import inspect

    return {p.name: p.default for p in inspect.signature(func).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY}


def _with_defaults(kind: str, name: str, func, given: dict) -> dict:
    """``given`` completed with the keyword-only defaults of ``func``, so equal settings hash equally."""
    if ":" in name:  # torchvision / timm models take their own arguments
        return dict(given)
    params = _keyword_defaults(func)
    _known(f"the arguments of {kind} {name!r}", given, list(params))
    return {**params, **given}


def build_config(raw: dict | None = None, **overrides) -> EvaluateConfig:
    """Merge: dataset defaults < ``raw`` (e.g. a YAML file) < ``overrides`` (command line, None = unset)."""
    raw = dict(raw or {})
    top = [f.name for f in fields(EvaluateConfig)]
    _known("the config", raw, top)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    dataset = overrides.get("dataset", raw.get("dataset", "mnist1d"))
    from .data import DATASETS

    DATASETS.get(dataset)
    defaults = DATASET_DEFAULTS.get(dataset, {})
    train_d = {**defaults.get("train", {}), **dict(raw.get("train") or {})}
    attack_d = {**defaults.get("attack", {}), **dict(raw.get("attack") or {})}
    _known("train", train_d, [f.name for f in fields(TrainConfig)])
    _known("attack", attack_d, [f.name for f in fields(AttackConfig)])
    if "epochs" in overrides:
        train_d["epochs"] = overrides.pop("epochs")
    for key in ("attack", "norm", "eps", "steps", "restarts", "n_points", "margin", "precision"):
        if key in overrides:
            attack_d["name" if key == "attack" else key] = overrides.pop(key)
    if isinstance(attack_d.get("eps"), dict):  # the dataset's grid for the chosen threat model
        norm = attack_d.get("norm", "Linf")
        if norm not in attack_d["eps"]:
            raise InputError(f"norm must be one of {sorted(attack_d['eps'])}; got {norm!r}")
        attack_d["eps"] = attack_d["eps"][norm]
    if "eps" in attack_d:
        attack_d["eps"] = tuple(attack_d["eps"])
    if "milestones" in train_d:
        train_d["milestones"] = tuple(train_d["milestones"])
    model = overrides.get("model", raw.get("model", defaults.get("model", "cnn1d")))
    model_args = raw.get("model_args", defaults.get("model_args", {}) if model == defaults.get("model") else {})
    try:
        cfg = EvaluateConfig(
            dataset=dataset, dataset_args=dict(raw.get("dataset_args") or {}), model=model,
            model_args=dict(model_args or {}), seed=int(overrides.get("seed", raw.get("seed", 0))),
            device=overrides.get("device", raw.get("device", "auto")),
            train=TrainConfig(**train_d), attack=AttackConfig(**attack_d),
            collapse_epochs=int(raw.get("collapse_epochs", 12)),
            output=str(overrides.get("output", raw.get("output", "ncbench-results"))),
        )
    except TypeError as err:
        raise InputError(f"bad config value: {err}") from None
    if cfg.device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}; got {cfg.device!r}")
    from .models import MODELS

    from .data import load_dataset

    generic = {k: v for k, v in cfg.dataset_args.items() if k in _keyword_defaults(load_dataset)}
    specific = {k: v for k, v in cfg.dataset_args.items() if k not in generic}
    dataset_args = {**_keyword_defaults(load_dataset), **_with_defaults("dataset", dataset, DATASETS.get(dataset),
                                                                         specific), **generic}
    factory = None if ":" in cfg.model else MODELS.get(cfg.model)
    return replace(cfg, dataset_args=dataset_args,
                   model_args=_with_defaults("model", cfg.model, factory, cfg.model_args))


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file (safe loader) into a dict."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{p}: not valid YAML: {' '.join(str(err).split())[:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: a config must be a mapping of keys to values; got {type(data).__name__}")
    return data
