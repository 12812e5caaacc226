"""One identity per computation: ``provenance.job_id``, the sha256 of exactly what determines a result.

Two records with the same ``job_id`` are the same result (the store keeps one, a sweep skips it); two
different computations never share one. What is in the identity, and what is deliberately not (paths, the
device, host and library versions, thread count, memory format), is documented in docs/records.md and
tested in both directions in tests/test_identity.py.

>>> from ncbench.config import build_config
>>> a = build_config({"dataset": "digits", "data_dir": "/data/a"})
>>> b = build_config({"dataset": "digits", "data_dir": "/elsewhere", "device": "cpu", "threads": 1})
>>> compute_job_id(a) == compute_job_id(b)
True
"""

from __future__ import annotations

import hashlib
import json

from . import __version__

#: the generic dataset options and their no-op values: left out of the identity when they are not used
_NO_OP = {"n_per_class": None, "n_train": None, "label_noise": 0.0, "val_size": None}
#: each seed of a generic option, and the options it seeds: in the identity only when one of them is used
_SEEDS = {"subset_seed": ("n_per_class", "n_train", "label_noise"), "split_seed": ("val_size",)}


def canonical_json(obj) -> str:
    """Sorted keys, no spaces, floats as Python writes them, NaN refused: one text per value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(identity: dict) -> str:
    """The job id of an identity dict."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def version_key() -> str:
    """ncbench's major.minor version: a new minor version may change numbers, a patch may not."""
    return ".".join(__version__.split(".")[:2])


def dataset_identity(cfg) -> dict:
    """The dataset's name and effective arguments: generic options only when they do something, the
    subsampling seed only when something is subsampled, the validation split's seed only when there is one;
    never where the files live."""
    args = dict(cfg.dataset_args)
    for key, no_op in _NO_OP.items():
        if args.get(key, no_op) == no_op:
            args.pop(key, None)
    for seed, options in _SEEDS.items():
        if not any(k in args for k in options):
            args.pop(seed, None)
    return {"name": cfg.dataset, "args": args}


def trained_model_identity(cfg) -> dict:
    """A model trained here: architecture, arguments, training seed, effective recipe, collapse epochs."""
    return {"source": "trained", "arch": cfg.model, "args": dict(cfg.model_args), "seed": int(cfg.seed),
            "recipe": cfg.train.effective(), "collapse_epochs": int(cfg.collapse_epochs)}


def checkpoint_model_identity(checksum: str, spec: dict) -> dict:
    """A loaded checkpoint: its weights' checksum and architecture spec (not the file's path or name)."""
    return {"source": "checkpoint", "checksum": checksum, "spec": spec}


def identity(cfg, *, checkpoint: dict | None = None) -> dict:
    """The identity dict of ``cfg`` (an :class:`ncbench.config.EvaluateConfig`).

    ``checkpoint``: for a loaded model, ``{"checksum", "spec", "ls_gap_weight_decay"}`` (see
    :func:`checkpoint_facts`); then the training recipe, which did not run here, is left out.
    """
    if checkpoint is None:
        model = trained_model_identity(cfg)
        wd = cfg.train.weight_decay
    else:
        model = checkpoint_model_identity(checkpoint["checksum"], checkpoint["spec"])
        wd = checkpoint.get("ls_gap_weight_decay")
    return {
        "ncbench": version_key(),
        "dataset": dataset_identity(cfg),
        "model": model,
        "attack": cfg.attack.identity(cfg.seed),
        "extra_attacks": [a.identity(cfg.seed) for a in cfg.extra_attacks],
        "ls_gap_weight_decay": wd,
        "predictors": predictors_identity(cfg),
    }


def predictors_identity(cfg) -> dict:
    """The optional predictors a record holds: the generalization measures (on or off) and the collapse under
    attack (its number of points and budget, or None). Everything else a record measures is always measured."""
    eps = cfg.adv_collapse_budget()
    adv = None if eps is None else {"points": int(cfg.adv_collapse_points), "eps": eps}
    return {"measures": bool(cfg.measures), "adv_collapse": adv}


def training_identity(cfg) -> dict:
    """What determines a trained model's weights: the version, the dataset (training options included) and the
    model with its recipe and seed. Its digest names the model file that later runs of the same training reuse
    (``ncbench evaluate`` keeps it beside the records; a sweep beside its store)."""
    return {"ncbench": version_key(), "dataset": dataset_identity(cfg), "model": trained_model_identity(cfg)}


def checkpoint_facts(model) -> dict:
    """What a loaded model contributes to the identity: checksum, spec, and the weight decay of the recipe that
    trained it when its checkpoint says (an ncbench checkpoint), else None (unknown)."""
    from .models import model_checksum

    trained_by = getattr(model, "trained_by", None) or {}
    recipe = trained_by.get("recipe") or {}
    wd = recipe.get("weight_decay")
    return {"checksum": model_checksum(model), "spec": model.spec.to_dict(),
            "ls_gap_weight_decay": None if wd is None else float(wd)}


def compute_job_id(cfg, *, checkpoint: str | None = None, trust: bool = False) -> str:
    """The job id of evaluating ``cfg`` (training its model), or of evaluating the weights in ``checkpoint``
    (default: ``cfg.checkpoint``).

    Computable before anything runs: loading a checkpoint to checksum it is the only work.
    """
    checkpoint = checkpoint if checkpoint is not None else cfg.checkpoint
    trust = trust or cfg.trust_checkpoint
    facts = None
    if checkpoint is not None:
        from .models import load_checkpoint

        facts = checkpoint_facts(load_checkpoint(checkpoint, trust=trust))
    return digest(identity(cfg, checkpoint=facts))
