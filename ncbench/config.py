"""The evaluate configuration: one validated dataclass, from YAML and/or command-line overrides.

Defaults per dataset live in :data:`DATASET_DEFAULTS` (the one place to change a recipe): every registered
dataset has a model that takes its input shape, a recipe sized for it, and eps grids per threat model at the
budgets the literature uses. What a config *determines* (its job identity) is computed by
:mod:`ncbench.identity`; paths, the device and the thread count are not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ._coerce import coerce_kwargs, coerce_value
from ._errors import InputError
from .attacks import AttackConfig
from .data import LOCATION_ARGS
from .train import TrainConfig

_MNIST_LIKE = {
    # 2-D CNN for 28x28 grey images; PNAS-style SGD, sized for a GPU (on 2 CPU cores, benchmarks/bench_train.py
    # measured about 1,700 training samples/s in channels_last: 30 epochs of MNIST take about 20 minutes)
    "model": "cnn2d", "model_args": {},
    "train": {"epochs": 30, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4},
    # the literature's MNIST budgets: Linf up to 0.3 (Madry et al.), L2 up to 3
    "attack": {"eps": {"Linf": [0.0, 0.1, 0.2, 0.3], "L2": [0.0, 1.0, 2.0, 3.0]}, "n_points": 1000},
}
_CIFAR_LIKE = {
    # ResNet-18 (CIFAR stem), the PNAS recipe shortened to 100 epochs; a GPU run
    "model": "resnet18", "model_args": {},
    "train": {"epochs": 100, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4},
    # RobustBench's budgets: Linf 8/255 and L2 0.5, with smaller ones for the curve
    "attack": {"eps": {"Linf": [0.0, "1/255", "2/255", "4/255", "8/255"], "L2": [0.0, 0.125, 0.25, 0.5]},
               "n_points": 1000},
}

#: Per-dataset defaults. MNIST-1D: the CNN reaches zero train error near epoch 20 of 60 and keeps going into
#: the terminal phase; weight decay 5e-3 (10x the PNAS CIFAR value) drives collapse within a CPU budget
#: (about 20 s on 2 cores). Digits: the MLP reaches zero train error by epoch ~5 of 150 (4 s); batch 128 as in
#: the papers (batch 64 with this weight decay keeps losing a training sample and collapses 20x less). The
#: embedded datasets' eps grids bracket the budgets at which PGD-20 brings robust accuracy near zero; L2
#: budgets are about sqrt(input dimension) times the Linf ones.
DATASET_DEFAULTS: dict[str, dict] = {
    "mnist1d": {
        # 500 of the 4000 training samples held out as the validation split (held-out collapse and ATC without
        # the test labels); dataset_args: {val_size: null} trains on all 4000
        "dataset_args": {"val_size": 500},
        "model": "cnn1d", "model_args": {},
        "train": {"epochs": 60, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-3},
        "attack": {"eps": {"Linf": [0.0, 0.005, 0.01, 0.02, 0.04], "L2": [0.0, 0.025, 0.05, 0.1, 0.2]}},
    },
    "digits": {
        "model": "mlp", "model_args": {"width": 256, "depth": 3},
        "train": {"epochs": 150, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-3},
        "attack": {"eps": {"Linf": [0.0, 0.02, 0.05, 0.1, 0.2], "L2": [0.0, 0.25, 0.5, 1.0, 2.0]}},
    },
    "gaussian": {
        # inputs (dim,) = (32,) by default; an MLP, trained on the CPU in seconds
        "model": "mlp", "model_args": {"width": 128, "depth": 2},
        "train": {"epochs": 60, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-3},
        "attack": {"eps": {"Linf": [0.0, 0.01, 0.02, 0.05, 0.1], "L2": [0.0, 0.05, 0.1, 0.25, 0.5]}},
    },
    "mnist": _MNIST_LIKE, "fashion_mnist": _MNIST_LIKE, "kmnist": _MNIST_LIKE,
    "cifar10": _CIFAR_LIKE, "cifar100": _CIFAR_LIKE, "svhn": _CIFAR_LIKE, "stl10": _CIFAR_LIKE,
}
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EvaluateConfig:
    """One evaluation: a dataset, a model (trained here with ``train``, or a checkpoint), attacks.

    ``data_dir`` / ``download``: where torchvision datasets live and whether it may download them (ignored by
    the generated and bundled datasets). ``threads``: torch's CPU thread count for this run (None: torch's
    default). ``extra_attacks``: further attacks on the same model, recorded under ``extra_robustness``
    (e.g. a leaderboard's PGD curve beside its AutoAttack number). ``checkpoint``: evaluate these weights
    instead of training (a grid can sweep checkpoints and attacks); ``trust_checkpoint`` allows a ``.pt2``.
    """

    dataset: str = "mnist1d"
    dataset_args: dict = field(default_factory=dict)
    data_dir: str | None = None
    download: bool = False
    model: str = "cnn1d"
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    extra_attacks: tuple[AttackConfig, ...] = ()
    checkpoint: str | None = None
    trust_checkpoint: bool = False
    collapse_epochs: int = 12  # about this many log-spaced epochs at which collapse is measured (0: none)
    output: str = "ncbench-results"
    # predictors beside collapse on train and test (docs/metrics.md): the generalization measures of Jiang et
    # al. and Dziugaite et al. (docs/measures.md), and collapse of adversarial examples of this many seeded
    # training (and test) points from the main attack at ``adv_collapse_eps`` (None: the attack's headline
    # budget, the median of its nonzero budgets; 0 points: not measured)
    measures: bool = True
    adv_collapse_points: int = 1000
    adv_collapse_eps: float | None = None

    def adv_collapse_budget(self) -> float | None:
        """The budget of the under-attack collapse: ``adv_collapse_eps``, else the main attack's headline budget
        (the median of its nonzero budgets, the lower one of the middle two); None when not measured."""
        if self.adv_collapse_points == 0:
            return None
        if self.adv_collapse_eps is not None:
            return float(self.adv_collapse_eps)
        nonzero = [e for e in self.attack.eps if e > 0]
        return nonzero[(len(nonzero) - 1) // 2] if nonzero else None

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "dataset_args": dict(self.dataset_args), "data_dir": self.data_dir,
                "download": self.download, "model": self.model, "model_args": dict(self.model_args),
                "seed": self.seed, "device": self.device, "threads": self.threads, "train": self.train.to_dict(),
                "attack": self.attack.to_dict(), "extra_attacks": [a.to_dict() for a in self.extra_attacks],
                "checkpoint": self.checkpoint, "trust_checkpoint": self.trust_checkpoint,
                "collapse_epochs": self.collapse_epochs, "output": self.output, "measures": self.measures,
                "adv_collapse_points": self.adv_collapse_points, "adv_collapse_eps": self.adv_collapse_eps}

    def loader_args(self) -> dict:
        """Keyword arguments for :func:`ncbench.data.load_dataset`: the dataset's arguments, plus the location
        arguments its loader takes."""
        from .data import DATASETS

        accepted = _keyword_defaults(DATASETS.get(self.dataset))
        location = {"data_dir": self.data_dir, "download": self.download}
        return {**self.dataset_args, **{k: v for k, v in location.items() if k in accepted}}


def _known(section: str, given: dict, allowed: list[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in {section}; valid keys: {sorted(allowed)}")


def _keyword_defaults(func) -> dict:
    import inspect

    return {p.name: p.default for p in inspect.signature(func).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY}


def _with_defaults(kind: str, name: str, func, given: dict) -> dict:
    """``given`` completed with the keyword-only defaults of ``func`` and coerced to their declared types, so
    equal settings hash equally (``width: 256`` and ``256.0``)."""
    if ":" in name:  # torchvision / timm models take their own arguments
        return dict(given)
    params = _keyword_defaults(func)
    _known(f"the arguments of {kind} {name!r}", given, list(params))
    return {**params, **coerce_kwargs(func, given, f"{kind} {name!r} argument")}


def _attack_config(given: dict, defaults: dict, section: str) -> AttackConfig:
    """An AttackConfig from a config section over the dataset's defaults; a per-norm eps grid is resolved."""
    d = {**defaults, **given}
    _known(section, d, [f.name for f in fields(AttackConfig)])
    if isinstance(d.get("eps"), dict):  # the dataset's grid for the chosen threat model
        norm = d.get("norm", "Linf")
        if norm not in d["eps"]:
            raise InputError(f"norm must be one of {sorted(d['eps'])}; got {norm!r}")
        d["eps"] = d["eps"][norm]
    if "eps" in d and isinstance(d["eps"], (list, tuple)):
        d["eps"] = tuple(d["eps"])
    try:
        return AttackConfig(**d)
    except TypeError as err:
        raise InputError(f"bad value in {section}: {err}") from None


def build_config(raw: dict | None = None, **overrides) -> EvaluateConfig:
    """Merge: dataset defaults < ``raw`` (e.g. a YAML file) < ``overrides`` (command line, None = unset)."""
    raw = dict(raw or {})
    top = [f.name for f in fields(EvaluateConfig)]
    _known("the config", raw, top)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    dataset = overrides.get("dataset", raw.get("dataset", "mnist1d"))
    from .data import DATASETS, load_dataset

    DATASETS.get(dataset)
    defaults = DATASET_DEFAULTS.get(dataset, {})
    dataset_args = {**defaults.get("dataset_args", {}), **dict(raw.get("dataset_args") or {})}
    if "val_size" in overrides:
        dataset_args["val_size"] = overrides.pop("val_size")
    location = {k: dataset_args.pop(k) for k in LOCATION_ARGS if k in dataset_args}  # 0.1 configs put them here
    location.update({k: raw[k] for k in LOCATION_ARGS if raw.get(k) is not None})
    location.update({k: overrides.pop(k) for k in LOCATION_ARGS if k in overrides})
    train_d = {**defaults.get("train", {}), **dict(raw.get("train") or {})}
    if "amp" in train_d:  # ncbench 0.1: `amp: true` meant bf16 autocast (then on CUDA only)
        amp = train_d.pop("amp")
        train_d.setdefault("precision", "bf16" if amp else "fp32")
    _known("train", train_d, [f.name for f in fields(TrainConfig)])
    if "epochs" in overrides:
        train_d["epochs"] = overrides.pop("epochs")
    if "train_precision" in overrides:
        train_d["precision"] = overrides.pop("train_precision")
    attack_d = dict(raw.get("attack") or {})
    for key in ("attack", "norm", "eps", "steps", "restarts", "n_points", "margin", "precision"):
        if key in overrides:
            attack_d["name" if key == "attack" else key] = overrides.pop(key)
    attack_defaults = defaults.get("attack", {})
    attack = _attack_config(attack_d, attack_defaults, "attack")
    extra = raw.get("extra_attacks") or []
    if not isinstance(extra, (list, tuple)) or not all(isinstance(e, dict) for e in extra):
        raise InputError("extra_attacks must be a list of attack sections, e.g. [{name: pgd, eps: [0, 0.01]}]")
    extra_attacks = tuple(_attack_config(dict(e), {"eps": attack_defaults.get("eps", AttackConfig.eps)},
                                         f"extra_attacks[{i}]") for i, e in enumerate(extra))
    if "milestones" in train_d:
        train_d["milestones"] = tuple(train_d["milestones"])
    model = overrides.get("model", raw.get("model", defaults.get("model", "cnn1d")))
    model_args = raw.get("model_args", defaults.get("model_args", {}) if model == defaults.get("model") else {})
    threads = overrides.get("threads", raw.get("threads"))
    checkpoint = overrides.get("checkpoint", raw.get("checkpoint"))
    try:
        cfg = EvaluateConfig(
            dataset=dataset, dataset_args=dataset_args, data_dir=location.get("data_dir"),
            download=bool(location.get("download", False)), model=model, model_args=dict(model_args or {}),
            seed=int(overrides.get("seed", raw.get("seed", 0))),
            device=overrides.get("device", raw.get("device", "auto")),
            threads=None if threads is None else int(threads),
            train=TrainConfig(**train_d), attack=attack, extra_attacks=extra_attacks,
            checkpoint=None if checkpoint is None else str(checkpoint),
            trust_checkpoint=bool(overrides.get("trust_checkpoint", raw.get("trust_checkpoint", False))),
            collapse_epochs=int(raw.get("collapse_epochs", 12)),
            output=str(overrides.get("output", raw.get("output", "ncbench-results"))),
            measures=coerce_value(raw.get("measures", True), "bool", "measures"),
            adv_collapse_points=coerce_value(raw.get("adv_collapse_points", 1000), "int", "adv_collapse_points"),
            adv_collapse_eps=_budget_or_none(raw.get("adv_collapse_eps")),
        )
    except TypeError as err:
        raise InputError(f"bad config value: {err}") from None
    if cfg.seed < 0:
        raise InputError(f"seed must be a whole number >= 0; got {cfg.seed}")
    if cfg.adv_collapse_points < 0:
        raise InputError(f"adv_collapse_points must be >= 0 (0: no collapse under attack); got {cfg.adv_collapse_points}")
    if cfg.adv_collapse_eps is not None and cfg.attack.norm == "Linf" and cfg.adv_collapse_eps > 1:
        raise InputError(f"adv_collapse_eps must be in [0, 1] under Linf (inputs are scaled to [0,1]); got "
                         f"{cfg.adv_collapse_eps:g}")
    if cfg.device not in DEVICES:
        raise InputError(f"device must be one of {DEVICES}; got {cfg.device!r}")
    if cfg.threads is not None and cfg.threads < 1:
        raise InputError(f"threads must be >= 1; got {cfg.threads}")
    if cfg.collapse_epochs < 0:
        raise InputError(f"collapse_epochs must be >= 0; got {cfg.collapse_epochs}")
    from .models import MODELS

    generic = coerce_kwargs(load_dataset, {k: v for k, v in cfg.dataset_args.items()
                                           if k in _keyword_defaults(load_dataset)}, "dataset argument")
    specific = {k: v for k, v in cfg.dataset_args.items() if k not in generic}
    loader = DATASETS.get(dataset)
    for k in LOCATION_ARGS:  # not dataset arguments: they are the config's own fields
        if k in specific:
            raise InputError(f"{k} is a config field, not a dataset argument")
    generic_names = _keyword_defaults(load_dataset)  # a loader's own same-named argument keeps its default
    specific_defaults = {k: v for k, v in _with_defaults("dataset", dataset, loader, specific).items()
                         if k not in LOCATION_ARGS and k not in generic_names}
    dataset_args = {**_keyword_defaults(load_dataset), **specific_defaults, **generic}
    if dataset_args.get("val_size") == 0:  # 0: no validation split (overrides a dataset's default)
        dataset_args["val_size"] = None
    if dataset_args.get("val_size") is not None:
        from .data import canonical_val_size

        dataset_args["val_size"] = canonical_val_size(dataset_args["val_size"])
    factory = None if ":" in cfg.model else MODELS.get(cfg.model)
    return replace(cfg, dataset_args=dataset_args,
                   model_args=_with_defaults("model", cfg.model, factory, cfg.model_args))


def _budget_or_none(value):
    if value is None:
        return None
    from ._budget import canonical_eps

    eps = canonical_eps(value)
    if not eps > 0:
        raise InputError(f"adv_collapse_eps must be a budget > 0, e.g. 0.01 or 8/255; got {value!r}")
    return eps


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
