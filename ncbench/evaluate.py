"""One model -> one result record: clean accuracy, collapse on every feature set, the predictors beside it
(generalization measures, accuracy estimators), robustness, provenance and the job identity (docs/records.md).

:func:`run_evaluate` is the pipeline behind ``ncbench evaluate`` and every sweep job; :func:`evaluate_model` runs
it on a model held in memory; :func:`measure_model` is the measuring half (a trained model in, numbers out).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
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
from .identity import checkpoint_facts, dataset_identity, digest, identity, training_identity
from .models import Classifier, create_model, load_checkpoint, model_checksum, save_checkpoint
from .record import SCHEMA_VERSION, decode_labels, encode_labels, validate_record  # noqa: F401  (codec re-exported)
from .train import TrainResult, train

__all__ = ["evaluate_job", "evaluate_model", "find_record", "measure_model", "model_file", "prepare",
           "record_stem", "run_evaluate", "write_record", "resolve_device"]

#: where ``ncbench evaluate`` keeps the models it trains, under its output folder (one file per training)
MODELS_DIR = "models"


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return int((logits.argmax(1) == y.to(logits.device)).sum()) / len(y)


def baseline_measures(model, logits_train: torch.Tensor, y_train: torch.Tensor) -> dict:
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


# ----------------------------------------------------------------------------------------- collapse sets

def _collapse_quiet(train, held_out, weight, bias) -> dict:
    """The held-out block of :func:`collapse_metrics` (no ls_gap: it is a train-split metric), without the
    classifier-only metrics (``nc2_*_classifier`` depend on W alone: the ``train`` split holds them)."""
    out = collapse_metrics(train, held_out, weight=weight, bias=bias, ls_gap=False)["test"]
    return {k: v for k, v in out.items() if not k.endswith("_classifier")}


def label_free_collapse(f_train, y_train, f_held, logits_held, weight, bias, num_classes: int) -> tuple[dict, dict]:
    """Collapse of held-out features grouped by the network's own predicted class (no labels read).

    Every key of the ``test`` split, computed with the predicted classes as labels. A class the network never
    predicts on these inputs has no held-out mean: the metrics are then computed over the classes it does
    predict (C' < C), with their train means and classifier rows; ``info["n_classes"]`` says how many. With
    fewer than two predicted classes every value is None. For a network that classifies the inputs perfectly
    the values equal the labelled split's.
    """
    pred = logits_held.argmax(1).to(torch.int64).cpu()
    present = torch.unique(pred)
    info = {"n_classes": int(present.numel()), "n_points": int(pred.numel()),
            "missing_classes": sorted(set(range(num_classes)) - set(present.tolist()))}
    if present.numel() < 2:
        keys = _held_out_keys()
        info["note"] = "fewer than two classes are predicted: the label-free metrics are undefined"
        return {k: None for k in keys}, info
    if present.numel() == num_classes:
        return _collapse_quiet((f_train, y_train), (f_held, pred), weight, bias), info
    remap = torch.full((num_classes,), -1, dtype=torch.int64)
    remap[present] = torch.arange(present.numel())
    keep = remap[y_train.cpu()] >= 0
    info["note"] = (f"classes {info['missing_classes']} are never predicted: metrics over the {present.numel()} "
                    "predicted classes, with their train means and classifier rows")
    return _collapse_quiet((f_train[keep.to(f_train.device)], remap[y_train.cpu()][keep]),
                           (f_held, remap[pred]), weight[present.to(weight.device)],
                           bias[present.to(bias.device)]), info


def _held_out_keys() -> tuple[str, ...]:
    from .collapse import TEST_KEYS

    return tuple(k for k in TEST_KEYS if not k.endswith("_classifier"))


def _seeded_subset(n: int, k: int) -> torch.Tensor:
    """The first ``k`` of a fixed permutation of ``range(n)`` (seed 0: the same points for every model of a
    dataset), in ascending order; all points when ``k >= n``."""
    if k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:k].sort().values


def adversarial_collapse(model, x, y, attack_cfg, eps: float, *, seed: int, weight, bias) -> tuple[dict, dict]:
    """Collapse of the features of adversarial examples (Su, Zhang, Tsilivis & Kempe, TMLR 2024).

    ``x``, ``y``: the (clean) points, grouped by their true label. The adversarial examples come from
    ``attack_cfg``'s attack at budget ``eps`` (:func:`ncbench.attacks.adversarial_examples`). Every key of the
    ``test`` split of the adversarial features against the clean features of the same points, with
    ``nc1_test_on_train_means`` renamed ``nc1_on_clean_means`` (the spread around the clean class means),
    ``ncc_accuracy`` the nearest-clean-class-mean accuracy, and ``mean_shift``: the mean over classes of
    ``‖μ_c^adv − μ_c‖ / ‖μ_c − μ_G‖`` (clean class means μ_c, μ_G their mean).
    """
    from .attacks import adversarial_examples

    x_adv = adversarial_examples(model, x, y, attack_cfg, eps, seed=seed)
    f_clean, _ = extract(model, x)
    f_adv, z_adv = extract(model, x_adv)
    info = {"n_points": int(x.shape[0]), "eps": float(eps), "attack": attack_cfg.label(),
            "adversarial_accuracy": _accuracy(z_adv, y)}
    c = int(weight.shape[0])
    yy = y.to(torch.int64).cpu()
    present = torch.unique(yy)
    if present.numel() < 2:
        info["note"] = "the points hold fewer than two classes: collapse under attack is undefined"
        return {k: None for k in (*_held_out_keys(), "nc1_on_clean_means", "mean_shift")
                if k != "nc1_test_on_train_means"}, info
    if present.numel() < c:  # a small subset that misses a class: the classes it holds (as label-free does)
        remap = torch.full((c,), -1, dtype=torch.int64)
        remap[present] = torch.arange(present.numel())
        yy = remap[yy]
        weight, bias = weight[present.to(weight.device)], bias[present.to(bias.device)]
        info["missing_classes"] = sorted(set(range(c)) - set(present.tolist()))
        info["note"] = f"classes {info['missing_classes']} have no point in the subset: metrics over the others"
    out = _collapse_quiet((f_clean, yy), (f_adv, yy), weight, bias)
    out["nc1_on_clean_means"] = out.pop("nc1_test_on_train_means")
    yd = yy.to(f_clean.device)
    clean_means = torch.stack([f_clean[yd == k].double().mean(0) for k in range(present.numel())])
    adv_means = torch.stack([f_adv[yd == k].double().mean(0) for k in range(present.numel())])
    centre = clean_means.mean(0)
    shift = (adv_means - clean_means).norm(dim=1) / (clean_means - centre).norm(dim=1)
    out["mean_shift"] = float(shift.mean())
    return out, info


# ----------------------------------------------------------------------------------------- estimators

def _neg_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.double(), dim=1)
    return (logp.exp() * logp).sum(1)


def accuracy_estimators(z_test: torch.Tensor, z_val: torch.Tensor | None, y_val: torch.Tensor | None) -> dict:
    """Label-free estimates of test accuracy from the test inputs.

    ``confidence``: the mean over test inputs of the largest softmax probability (Hendrycks & Gimpel's
    baseline). ``atc``: Average Thresholded Confidence (Garg et al., ICLR 2022) with their negative-entropy
    score s(x) = Σ_c p_c log p_c: the threshold t is fitted on the validation split so that the share of
    validation inputs with s > t equals the validation accuracy, and the estimate is the share of test inputs
    with s > t (None without a validation split). GDE (Jiang et al., ICLR 2022) needs two models and is
    computed across seeds by the store (``estimators.gde``).
    """
    probs = torch.softmax(z_test.double(), dim=1)
    out = {"confidence": float(probs.max(1).values.mean()), "atc": None, "atc_threshold": None}
    if z_val is not None and y_val is not None and z_val.shape[0]:
        s_val = _neg_entropy(z_val)
        acc_val = _accuracy(z_val, y_val)
        n_err = int(round((1.0 - acc_val) * s_val.numel()))
        order = s_val.sort().values
        t = float(order[n_err - 1]) if n_err > 0 else float(order[0]) - 1.0  # s > t for exactly the others
        out["atc_threshold"] = t
        out["atc"] = float((_neg_entropy(z_test) > t).double().mean())
    return out


# ----------------------------------------------------------------------------------------- measuring

def measure_model(model: Classifier, ds: Dataset, cfg: EvaluateConfig, *, weight_decay: float | None,
                  init_state: dict | None = None, init_note: str | None = None, progress: bool = True) -> dict:
    """Measure a trained model: accuracy, collapse on every feature set (docs/metrics.md), the generalization
    measures and accuracy estimators, every attack. Returns the record's measured sections and ``timings``.

    ``weight_decay``: lambda of the ls_gap fit (None = unknown: the minimum-norm fit, lambda = 0).
    ``init_state``: the model's weights at initialisation (for the measures that need them; None: those are
    null, and ``init_note`` says why).
    """
    timings = {}
    t = time.perf_counter()
    f_tr, z_tr = extract(model, ds.x_train)
    f_te, z_te = extract(model, ds.x_test)
    f_va, z_va = extract(model, ds.x_val) if ds.x_val is not None else (None, None)
    acc = {"train": _accuracy(z_tr, ds.y_train), "test": _accuracy(z_te, ds.y_test),
           "val": None if z_va is None else _accuracy(z_va, ds.y_val), "train_adv": None}
    timings["features"] = time.perf_counter() - t
    t = time.perf_counter()
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    collapse = collapse_metrics((f_tr, ds.y_train), (f_te, ds.y_test), weight=w, bias=b,
                                weight_decay=weight_decay or 0.0)
    info: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # said once for train and test above
        if f_va is not None:
            collapse["val"] = _collapse_quiet((f_tr, ds.y_train), (f_va, ds.y_val), w, b)
            collapse["val_pred"], info["val_pred"] = label_free_collapse(f_tr, ds.y_train, f_va, z_va, w, b,
                                                                         ds.num_classes)
        collapse["test_pred"], info["test_pred"] = label_free_collapse(f_tr, ds.y_train, f_te, z_te, w, b,
                                                                       ds.num_classes)
    timings["collapse"] = time.perf_counter() - t
    t = time.perf_counter()
    measures_ = baseline_measures(model, z_tr, ds.y_train)
    measures_info: dict = {}
    if cfg.measures:
        from .measures import generalization_measures

        gm = generalization_measures(model, ds.x_train, ds.y_train, init_state=init_state, seed=cfg.seed)
        measures_.update(gm["values"])
        measures_info = dict(gm["info"])
        if init_state is None and init_note:
            measures_info["initial_weights"] = init_note
    else:
        measures_info["note"] = "generalization measures switched off (measures: false)"
    timings["measures"] = time.perf_counter() - t
    estimators = accuracy_estimators(z_te, z_va, ds.y_val)
    predictions = {"test": encode_labels(z_te.argmax(1))}
    t = time.perf_counter()
    robustness = robustness_curve(model, ds.x_test, ds.y_test, cfg.attack, seed=cfg.seed, progress=progress)
    extra = [robustness_curve(model, ds.x_test, ds.y_test, a, seed=cfg.seed, progress=progress)
             for a in cfg.extra_attacks]
    timings["attack"] = time.perf_counter() - t
    eps = cfg.adv_collapse_budget()
    if eps is not None:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollapseWarning)
            for split, x, y in (("train_adv", ds.x_train, ds.y_train), ("test_adv", ds.x_test, ds.y_test)):
                idx = _seeded_subset(x.shape[0], cfg.adv_collapse_points)
                collapse[split], info[split] = adversarial_collapse(model, x[idx], y[idx], cfg.attack, eps,
                                                                    seed=cfg.seed, weight=w, bias=b)
        timings["adv_collapse"] = time.perf_counter() - t
    return {"accuracy": acc, "collapse": collapse, "collapse_info": info, "measures": measures_,
            "measures_info": measures_info, "estimators": estimators, "predictions": predictions,
            "robustness": robustness, "extra_robustness": extra, "timings": timings}


def log_epochs(epochs: int, n: int) -> list[int]:
    """About ``n`` log-spaced epochs in 1..epochs, always with the first and the last."""
    if n <= 0:
        return []
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


# ----------------------------------------------------------------------------------------- models

def model_file(folder: str | Path, cfg: EvaluateConfig) -> Path:
    """Where the model that ``cfg`` trains is kept: ``<folder>/<training id>.safetensors``, the training id being
    the digest of :func:`ncbench.identity.training_identity` (dataset and training options, architecture,
    recipe, seed), so that every job that trains the same model with other attacks or measures reuses it."""
    return Path(folder) / f"{digest(training_identity(cfg))}.safetensors"


def _initial_model(arch: str, args: dict, input_shape, num_classes: int, mean, std, seed: int) -> Classifier:
    """The model ``create_model`` builds right after ``torch.manual_seed(seed)``: what training starts from."""
    torch.manual_seed(int(seed))
    return create_model(arch, input_shape=input_shape, num_classes=num_classes, mean=mean, std=std, **args)


def init_file(path: Path) -> Path:
    """Where a kept model's initial weights sit: ``<training id>.init.safetensors`` beside it."""
    return path.with_name(path.name.removesuffix(".safetensors") + ".init.safetensors")


def initial_weights(model, path: Path | None = None) -> tuple[dict | None, str | None]:
    """The initial weights of a loaded model, when they can be had: an ncbench checkpoint records the initial
    weights' checksum and its training seed; the weights are read from the file kept beside it
    (:func:`init_file`), else rebuilt by ``torch.manual_seed(seed)`` then ``create_model``, and used only when
    they match that checksum. Returns ``(state dict or None, why None)``."""
    tb = getattr(model, "trained_by", None) or {}
    seed, checksum = tb.get("seed"), tb.get("init_checksum")
    if checksum is None:
        return None, ("the checkpoint does not record its initial weights (not written by ncbench 0.3): the "
                      "measures that need them are null")
    if path is not None and init_file(Path(path)).is_file():
        from safetensors.torch import load_file

        state = load_file(str(init_file(Path(path))))
        if model_checksum(state) == checksum:
            return state, None
    if seed is None:
        return None, "the checkpoint records no training seed: its initial weights cannot be rebuilt"
    spec = model.spec
    try:
        init = _initial_model(spec.arch, spec.args, spec.input_shape, spec.num_classes, spec.mean, spec.std, seed)
    except Exception as err:  # a spec ncbench cannot rebuild
        return None, f"the initial weights could not be rebuilt ({type(err).__name__}: {err})"
    if model_checksum(init) != checksum:
        return None, ("the rebuilt initial weights do not match the checksum the checkpoint records (another "
                      "torch draws them differently) and no initial-weights file is beside it: the measures that "
                      "need them are null")
    return {k: v.detach().clone() for k, v in init.state_dict().items()}, None


def _training_result(meta: dict) -> TrainResult | None:
    """The training result an ncbench checkpoint carries in its metadata (None when it carries none)."""
    rec = (meta or {}).get("result")
    if not rec:
        return None
    result = TrainResult(history=rec["history"], terminal_phase_epoch=rec["terminal_phase_epoch"],
                         wall_time_s=float(rec.get("wall_time_s", 0.0)))
    result.collapse_history = rec.get("collapse_history", [])
    result.adv_train_accuracy = rec.get("adv_train_accuracy")
    result.adv_train_points = rec.get("adv_train_points")
    return result


def prepare(cfg: EvaluateConfig, *, checkpoint: str | None = None, progress: bool = True, trust: bool = False,
            model_dir: str | Path | None = None, rerun: bool = False, model=None):
    """Dataset and model (trained here, reused, loaded from ``checkpoint``, or ``model`` given in memory), with
    what training did.

    ``model_dir``: a folder of trained models (:func:`model_file`): the model is loaded from there when this
    training ran before (unless ``rerun``), else trained and saved there. The returned model carries
    ``initial_state`` (its weights at initialisation, or None) and ``initial_note`` (why None).

    Returns ``(dataset, model, train_result or None, device, timings)``; ``train_result`` is also set for a
    reused model (from the file's metadata) and None for a checkpoint or a model in memory.
    """
    device = resolve_device(cfg.device)
    configure_numerics(device, cfg.threads)
    timings = {}
    t = time.perf_counter()
    ds = load_dataset(cfg.dataset, **cfg.loader_args())
    timings["data"] = time.perf_counter() - t
    trained: TrainResult | None = None
    if model is not None:
        check_fits(model, ds, "the model")
        prepare_model(model, device)
        model.initial_state, model.initial_note = None, "a model given in memory: its initial weights are unknown"
    elif checkpoint is not None:
        model = load_checkpoint(checkpoint, map_location=device, trust=trust)
        check_fits(model, ds, checkpoint)
        prepare_model(model, device)
        model.initial_state, model.initial_note = initial_weights(model, Path(checkpoint))
    else:
        path = model_file(model_dir, cfg) if model_dir is not None else None
        if path is not None and path.is_file() and not rerun:
            model = load_checkpoint(path, map_location=device)
            trained = _training_result(model.trained_by)
        if trained is None:
            model = _initial_model(cfg.model, cfg.model_args, ds.input_shape, ds.num_classes, ds.mean, ds.std,
                                   cfg.seed)
            init = {k: v.detach().clone() for k, v in model.state_dict().items()}
            prepare_model(model, device)
            tracker = CollapseTracker(ds, log_epochs(cfg.train.epochs, cfg.collapse_epochs), cfg.train.weight_decay)
            trained = train(model, ds.x_train, ds.y_train, cfg.train, seed=cfg.seed, device=device,
                            callback=tracker, progress=progress)
            trained.collapse_history = tracker.rows
            timings["train"] = trained.wall_time_s
            model.initial_state, model.initial_note = init, None
            model.init_checksum = model_checksum(init)
            if path is not None:
                from safetensors.torch import save

                from ._io import write_replace

                write_replace(init_file(path), save({k: v.contiguous() for k, v in init.items()}))
                # the job that trained it: the first job of this training identity (a later job with another attack
                # reuses the file and keeps this id)
                save_checkpoint(model, path, training=training_metadata(cfg, digest(identity(cfg)), trained,
                                                                        model.init_checksum))
        else:
            prepare_model(model, device)
            model.initial_state, model.initial_note = initial_weights(model, path)
            model.init_checksum = (model.trained_by or {}).get("init_checksum")
            timings["train"] = 0.0
            timings["train_reused"] = trained.wall_time_s
    return ds, model, trained, device, timings


def training_metadata(cfg: EvaluateConfig, job_id: str | None, trained: TrainResult | None = None,
                      init_checksum: str | None = None) -> dict:
    """What an ncbench checkpoint carries about how it was trained (read back as ``model.trained_by``): the job
    id, the training id, recipe, seed, dataset, the initial weights' checksum and the training result (history,
    collapse history), so that a later run reusing the file writes the same record."""
    meta = {"job_id": job_id, "training_id": digest(training_identity(cfg)), "recipe": cfg.train.effective(),
            "seed": int(cfg.seed), "dataset": dataset_identity(cfg), "ncbench_version": __version__,
            "init_checksum": init_checksum}
    if trained is not None:
        meta["result"] = {"history": trained.history, "terminal_phase_epoch": trained.terminal_phase_epoch,
                          "wall_time_s": trained.wall_time_s,
                          "collapse_history": getattr(trained, "collapse_history", []),
                          "adv_train_accuracy": getattr(trained, "adv_train_accuracy", None),
                          "adv_train_points": getattr(trained, "adv_train_points", None)}
    return meta


def _model_info(model, checkpoint, num_parameters: int, source: str) -> dict:
    info = {**model.spec.to_dict(), "checksum": model_checksum(model), "num_parameters": num_parameters,
            "source": source, "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
            "trained_by": getattr(model, "trained_by", None) if source != "trained" else None,
            "init_checksum": getattr(model, "init_checksum", None) or
            ((getattr(model, "trained_by", None) or {}).get("init_checksum")),
            "load_notes": [getattr(model, "load_note")] if getattr(model, "load_note", None) else []}
    if hasattr(model, "fc_fit_residual"):
        info["fc_fit_residual"] = model.fc_fit_residual
    return info


def run_evaluate(cfg: EvaluateConfig, *, checkpoint: str | None = None, progress: bool = True,
                 trust: bool = False, sweep: dict | None = None, save_model_to: str | Path | None = None,
                 model_dir: str | Path | None = None, rerun: bool = False, model=None) -> dict:
    """The whole pipeline for one config: returns the result record (not yet written).

    ``checkpoint``: evaluate these weights (default ``cfg.checkpoint``; None: train ``cfg``'s model).
    ``model``: evaluate this model, held in memory, instead (see :func:`evaluate_model`).
    ``model_dir``: keep the trained model there, keyed by its training (:func:`model_file`), and reuse it
    when the same training ran before (``rerun``: train again).
    ``sweep``: ``{"name", "axes"}`` when a sweep runs the job (recorded, not part of the identity).
    ``save_model_to``: also write the trained model there (safetensors, with its recipe and job id).
    """
    checkpoint = checkpoint if checkpoint is not None else cfg.checkpoint
    trust = trust or cfg.trust_checkpoint
    t0 = time.perf_counter()
    created = datetime.now(timezone.utc)
    ds, model, trained, device, timings = prepare(cfg, checkpoint=checkpoint if model is None else None,
                                                  progress=progress, trust=trust, model_dir=model_dir,
                                                  rerun=rerun, model=model)
    if trained is not None:
        wd = cfg.train.weight_decay
        ident = identity(cfg)
        source = "trained"
    else:
        facts = checkpoint_facts(model)
        wd = facts["ls_gap_weight_decay"]
        ident = identity(cfg, checkpoint=facts)
        source = "checkpoint" if checkpoint else "memory"
    job_id = digest(ident)
    result = measure_model(model, ds, cfg, weight_decay=wd, init_state=model.initial_state,
                           init_note=model.initial_note, progress=progress)
    timings.update(result.pop("timings"))
    training = None
    measures_ = result["measures"]
    measures_["final_train_loss"] = None
    if trained is not None:
        final_loss = trained.history[-1]["loss"]
        training = {"terminal_phase_epoch": trained.terminal_phase_epoch, "final_loss": final_loss,
                    "precision": cfg.train.precision, "history": trained.history,
                    "collapse_history": trained.collapse_history, "recipe": cfg.train.describe(),
                    "adv_train_points": getattr(trained, "adv_train_points", None)}
        measures_["final_train_loss"] = final_loss
        result["accuracy"]["train_adv"] = getattr(trained, "adv_train_accuracy", None)
        if save_model_to is not None:
            save_checkpoint(model, save_model_to,
                            training=training_metadata(cfg, job_id, trained, getattr(model, "init_checksum", None)))
    timings["total"] = time.perf_counter() - t0
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": "ncbench.evaluate",
        "created": created.isoformat(timespec="seconds"),
        "provenance": {
            "job_id": job_id, "identity": ident, "ncbench_version": __version__, "versions": versions(),
            "environment": environment(device, memory_format=memory_format_name(model)),
            "seed": cfg.seed, "config": cfg.to_dict(), "sweep": sweep, "dataset": ds.describe(),
            "model": _model_info(model, checkpoint if source == "checkpoint" else None, measures_["num_parameters"],
                                 source),
            "ls_gap_weight_decay": wd, "wall_time_s": timings,
        },
        "training": training,
        **result,
    }
    return validate_record(record)


#: the command-line style options of :func:`evaluate_model`
EVALUATE_MODEL_OPTIONS = ("seed", "device", "threads", "val_size")


def evaluate_model(model, *, dataset: str = "mnist1d", attack=None, config: dict | None = None,
                   progress: bool = True, **options) -> dict:
    """Evaluate a model held in memory with the pipeline of ``ncbench evaluate``; returns the typed record.

    The model keeps its weights (nothing is trained): ncbench measures its accuracy, collapse on every
    feature set, the generalization measures, and attacks it, exactly as for a checkpoint, and the record's
    job id is that of its weights and architecture (the same model saved as a checkpoint without training
    metadata, ``ncbench.models.save_checkpoint``, gives the same job id).

    Parameters
    ----------
    model : nn.Module
        An ncbench ``Classifier`` (``features(x)`` -> (N, D) and a final ``fc: nn.Linear``), taking inputs in
        [0, 1] of the dataset's shape. For a network without ``features``/``fc``, wrap it first:
        ``ncbench.models.wrap_classifier(net, input_shape, num_classes, mean, std)`` splits it at its last
        ``nn.Linear`` (which must produce the output).
    dataset : str
        A registered dataset (``ncbench.data.list_datasets()``), e.g. ``"mnist1d"``, ``"digits"``, ``"cifar10"``.
    attack : str, dict or None
        An attack name (``"pgd"``, ``"autoattack"``, ...) or an attack section (``{"name": "autoattack",
        "norm": "Linf", "eps": [0, "8/255"], "n_points": 1000}``); None: the dataset's default PGD curve.
    config : dict, optional
        Any further config keys, as a YAML config would hold them (``dataset_args``, ``extra_attacks``,
        ``device``, ``measures``, ...).
    **options
        Command-line style overrides: ``seed``, ``device``, ``threads``, ``val_size`` (a validation split of the
        dataset's training data; only one the model did not train on makes ``val.*`` held out). Unknown ones
        are refused. A dataset's default validation split is not applied: it may hold the model's training
        points.

    Returns
    -------
    dict
        The record (docs/records.md), validated.

    Examples
    --------
    >>> from ncbench.models import create_model          # doctest: +SKIP
    >>> record = evaluate_model(my_model, dataset="digits", attack="autoattack")   # doctest: +SKIP
    >>> record["accuracy"]["test"], record["collapse"]["train"]["nc1"]              # doctest: +SKIP
    """
    from .config import build_config
    from .models import ModelSpec

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch nn.Module; got {type(model).__name__}")
    if not (callable(getattr(model, "features", None)) and isinstance(getattr(model, "fc", None), torch.nn.Linear)):
        raise InputError(f"{type(model).__name__} has no features(x) method and final fc: nn.Linear; wrap it with "
                         "ncbench.models.wrap_classifier(net, input_shape, num_classes, mean, std)")
    unknown = sorted(set(options) - set(EVALUATE_MODEL_OPTIONS))
    if unknown:
        raise InputError(f"evaluate_model takes no option(s) {unknown}; its options are {list(EVALUATE_MODEL_OPTIONS)} "
                         "(other settings go in config={...})")
    raw = dict(config or {})
    for key in ("checkpoint", "trust_checkpoint", "dataset"):
        if key in raw:
            raise InputError(f"evaluate_model: config[{key!r}] is not used: the model evaluated is the one passed "
                             "in (and the dataset is the dataset= argument)")
    raw["dataset"] = dataset
    if attack is not None:
        raw["attack"] = {"name": attack} if isinstance(attack, str) else dict(attack)
    cfg = build_config(raw, **options)
    if cfg.dataset_args.get("val_size") is not None and not (config or {}).get("dataset_args", {}).get("val_size"):
        # a dataset's default validation split (mnist1d: 500) may hold points this model trained on: only a split
        # the caller asks for is held out
        cfg = replace(cfg, dataset_args={**cfg.dataset_args, "val_size": None})
    if getattr(model, "spec", None) is None:
        ds = load_dataset(cfg.dataset, **cfg.loader_args())
        norm = getattr(model, "normalize", None)
        mean = tuple(float(v) for v in norm.mean) if norm is not None else (0.0,)
        std = tuple(float(v) for v in norm.std) if norm is not None else (1.0,)
        # the module tree (its layers and their settings) is part of what the weights compute: two networks with
        # the same weights and another activation are different models
        model.spec = ModelSpec(f"memory:{type(model).__name__}", int(model.fc.out_features), ds.input_shape,
                               mean, std, {"modules": repr(model)})
    was = model.training
    try:
        return run_evaluate(cfg, model=model, progress=progress)
    finally:
        model.train(was)


def evaluate_job(cfg: EvaluateConfig, *, sweep: dict | None = None, checkpoint_dir: str | Path | None = None,
                 checkpoint: str | None = None, progress: bool = False) -> dict:
    """One sweep job: :func:`run_evaluate`, keeping the trained model as ``checkpoint_dir/<training id>.safetensors``
    (:func:`model_file`; atomically) and reusing it when another job of the sweep trained it already. Returns
    the record."""
    checkpoint = checkpoint if checkpoint is not None else cfg.checkpoint
    return run_evaluate(cfg, checkpoint=checkpoint, progress=progress, sweep=sweep,
                        model_dir=checkpoint_dir if checkpoint is None else None)


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
