"""Result records: their typed shape, a validator, and the migration of older schema versions.

The layout is documented in docs/records.md. :class:`Record` (pydantic, unknown keys refused, NaN and inf
refused) is the shape; :func:`validate_record` checks a dict against it; :func:`upgrade_record` reads a
record of any known ``schema_version`` into the current one (the store, the regression and the leaderboards
read records through it). pydantic instead of hand-written checks: nested models with exact error paths
("provenance.model.num_parameters: Input should be a valid integer") for a schema that older versions
must keep migrating into.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import InputError

SCHEMA_VERSION = 3
KIND = "ncbench.evaluate"
#: the feature sets collapse is measured on (docs/metrics.md): the labelled splits, the label-free held-out
#: ones (grouped by the network's predicted class) and the adversarial examples of training and test points
COLLAPSE_SPLITS = ("train", "val", "val_pred", "test_pred", "train_adv", "test", "test_adv")

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)  # "0.9" is not a number


class Check(_Strict):
    check: str
    passed: bool
    detail: str


class CurveRow(_Strict):
    eps: float = Field(ge=0)
    eps_label: str
    robust_accuracy: float = Field(ge=0, le=1)
    n_attacked: int = Field(ge=0)
    wall_time_s: float = Field(ge=0)
    fooled_by: dict[str, int] | None = None


class Margin(_Strict):
    method: str
    norm: str
    n_points: int
    n_found: int
    mean_min_perturbation: float | None
    median_min_perturbation: float | None


class Robustness(_Strict):
    """One attack over an eps grid (``ncbench.attacks.robustness_curve``)."""

    name: str
    norm: Literal["Linf", "L2"]
    label: str
    params: dict[str, Any]
    eps: list[float]
    eps_labels: list[str]
    n_points: int = Field(ge=1)
    precision: Literal["fp32", "bf16"]
    seed: int
    batch_size: int
    check_points: int
    clean_accuracy: float = Field(ge=0, le=1)
    curve: list[CurveRow]
    first_fooled_eps: list[float | None] | None  # None only in records upgraded from schema 1
    checks: list[Check]
    reliable: bool
    unreliable_reasons: list[str]
    margin: Margin | None
    bf16_disagreement: float | None
    wall_time_s: float


class Training(_Strict):
    terminal_phase_epoch: int | None
    final_loss: float
    precision: Literal["fp32", "bf16"]
    history: list[dict[str, float | int]]
    collapse_history: list[dict[str, Any]]
    recipe: str | None = None  # what ran, in words (TrainConfig.describe())
    adv_train_points: int | None = None  # adversarial training: the training points behind accuracy.train_adv


class Measures(_Strict):
    """Baselines of generalization-measure studies, beside the collapse metrics (docs/measures.md): today's
    simple ones and the measures that did best in Jiang et al. (ICLR 2020) and Dziugaite et al. (NeurIPS 2020),
    ``None`` where a measure could not be computed (``measures_info`` says why)."""

    num_parameters: int
    sum_squared_weights: float | None  # sum of squares of every weight matrix / conv kernel (not BN, not biases)
    train_margin_p10: float | None  # 10th percentile over train samples of (true logit - largest other logit)
    final_train_loss: float | None  # the last epoch's mean training loss; None for a checkpoint
    pacbayes_flatness: float | None = None
    pacbayes_mag_flatness: float | None = None
    pacbayes_bound: float | None = None
    pacbayes_mag_bound: float | None = None
    mag_sharpness: float | None = None
    path_norm: float | None = None
    path_norm_over_margin: float | None = None
    dist_from_init: float | None = None
    log_prod_spec_over_margin: float | None = None
    log_sum_frob_over_margin: float | None = None
    inverse_margin: float | None = None


class Estimators(_Strict):
    """Label-free estimates of test accuracy from the test inputs (docs/metrics.md, "Accuracy estimators")."""

    confidence: float | None  # mean over test inputs of the largest softmax probability
    atc: float | None  # ATC (Garg et al. 2022): share of test inputs whose score is above the validation threshold
    atc_threshold: float | None  # that threshold (negative entropy), fitted on the validation split


class EncodedLabels(_Strict):
    encoding: Literal["base64-uint8", "base64-uint16le"]
    n: int = Field(ge=0)
    data: str


class ModelInfo(_Strict):
    arch: str
    num_classes: int
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    args: dict[str, Any]
    checksum: str
    num_parameters: int
    source: Literal["trained", "checkpoint", "memory"]  # memory: ncbench.evaluate_model on a model in memory
    checkpoint: str | None
    trained_by: dict[str, Any] | None
    fc_fit_residual: float | None = None  # torch.export programs: how well the fitted fc reproduces the logits
    init_checksum: str | None = None  # the initial weights' checksum (trained here, or recorded by ncbench)
    load_notes: list[str] = Field(default_factory=list)  # what loading did to the file (a stripped prefix)


class SweepInfo(_Strict):
    name: str
    axes: dict[str, Any]


class Provenance(_Strict):
    job_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    identity: dict[str, Any]
    ncbench_version: str
    versions: dict[str, str | int | None]
    environment: dict[str, Any]
    seed: int
    config: dict[str, Any]
    sweep: SweepInfo | None
    dataset: dict[str, Any]
    model: ModelInfo
    ls_gap_weight_decay: float | None
    wall_time_s: dict[str, float]


class Accuracy(_Strict):
    train: float = Field(ge=0, le=1)
    test: float = Field(ge=0, le=1)
    val: float | None = Field(ge=0, le=1)  # None without a validation split
    train_adv: float | None = Field(ge=0, le=1)  # adversarially trained: robust training accuracy (PGD-10)


Split = Literal[COLLAPSE_SPLITS]


class Record(_Strict):
    schema_version: Literal[3]
    kind: Literal["ncbench.evaluate"]
    created: str
    provenance: Provenance
    training: Training | None
    accuracy: Accuracy
    collapse: dict[Split, dict[str, float | None]]
    collapse_info: dict[str, dict[str, Any]]
    measures: Measures
    measures_info: dict[str, Any]
    estimators: Estimators
    predictions: dict[Literal["test"], EncodedLabels]
    robustness: Robustness
    extra_robustness: list[Robustness]


def encode_labels(labels) -> dict:
    """Class indices (N,) as compact text for ``predictions``: base64 of uint8 (C <= 256) or little-endian uint16."""
    import base64

    import numpy as np

    a = labels.detach().cpu().numpy() if hasattr(labels, "detach") else np.asarray(labels)
    if a.size and int(a.max()) > 255:
        return {"encoding": "base64-uint16le", "n": int(a.size),
                "data": base64.b64encode(a.astype("<u2").tobytes()).decode()}
    return {"encoding": "base64-uint8", "n": int(a.size), "data": base64.b64encode(a.astype(np.uint8).tobytes()).decode()}


def decode_labels(encoded: dict):
    """The inverse of :func:`encode_labels`: an int64 numpy array of length ``encoded["n"]``."""
    import base64

    import numpy as np

    raw = base64.b64decode(encoded["data"])
    dtype = np.uint8 if encoded["encoding"] == "base64-uint8" else np.dtype("<u2")
    out = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    if out.size != encoded["n"]:
        raise InputError(f"encoded predictions hold {out.size} labels but say n = {encoded['n']}")
    return out


def _where(err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    return f"{path}: {first['msg']}" + ("" if len(err.errors()) == 1 else f" (and {len(err.errors()) - 1} more)")


def validate_record(record: dict) -> dict:
    """Return ``record`` if it has the current shape; else raise InputError naming the first bad field."""
    if not isinstance(record, dict):
        raise InputError(f"a record must be a JSON object; got {type(record).__name__}")
    try:
        Record.model_validate(record)
    except ValidationError as err:
        raise InputError(f"not a valid ncbench record (schema {SCHEMA_VERSION}): {_where(err)}") from None
    for split in ("train", "test"):  # always measured: a number for every metric (only the new splits may be null)
        missing = [k for k, v in record["collapse"].get(split, {}).items() if v is None]
        if missing:
            raise InputError(f"not a valid ncbench record (schema {SCHEMA_VERSION}): collapse.{split}.{missing[0]}: "
                             "a metric of the train and test splits must be a number")
    preds = record["predictions"].get("test")
    n_test = record["provenance"]["dataset"].get("n_test")
    if preds is not None and n_test is not None and preds["n"] != n_test:
        raise InputError(f"not a valid ncbench record (schema {SCHEMA_VERSION}): predictions.test.n: "
                         f"{preds['n']} predictions for {n_test} test points")
    return record


def upgrade_record(record: dict) -> dict:
    """``record`` in the current schema: records of schema 1 (ncbench 0.1) and 2 (ncbench 0.2) are migrated, the
    current version is validated, anything else is refused (a newer version needs a newer ncbench)."""
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise InputError("not an ncbench evaluate record (its 'kind' is not 'ncbench.evaluate')")
    version = record.get("schema_version")
    if version == SCHEMA_VERSION:
        return validate_record(record)
    if version == 2:
        return validate_record(_from_v2(record))
    if version == 1:
        return validate_record(_from_v2(_from_v1(record)))
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise InputError(f"the record has schema_version {version}, newer than this ncbench reads "
                         f"({SCHEMA_VERSION}): upgrade ncbench")
    raise InputError(f"unknown record schema_version {version!r}")


# ------------------------------------------------------------------------------------------ schema 2 -> 3

def _from_v2(rec: dict) -> dict:
    """ncbench 0.2's record -> schema 3: the same numbers, and nothing claimed that 0.2 did not measure: no
    validation split (``accuracy.val`` null), no label-free or under-attack collapse, no generalization measures
    beyond 0.2's baselines, no estimators and no stored predictions. The job id and identity stay 0.2's."""
    import copy

    out = copy.deepcopy(rec)
    out["schema_version"] = SCHEMA_VERSION
    out["accuracy"] = {**out["accuracy"], "val": None, "train_adv": None}
    out["collapse_info"] = {}
    out["measures_info"] = {"note": "migrated from schema 2: ncbench 0.2 computed only the baselines"}
    out["estimators"] = {"confidence": None, "atc": None, "atc_threshold": None}
    out["predictions"] = {}
    return out


# ------------------------------------------------------------------------------------------ schema 1 -> 2

_V1_CURVE_CHECKS = ("robust_le_clean", "monotone_in_eps")  # 0.1 counted them; they could not fail


def _v1_robustness(rob: dict, seed: int) -> dict:
    from ._budget import eps_label
    from .attacks import AttackConfig
    from .attacks._config import ATTACKS

    fields = {f for f in AttackConfig.__dataclass_fields__}
    settings = {k: v for k, v in rob.items() if k in fields and k not in ("n_points", "margin")}
    settings["margin"] = "fab" if rob.get("margin") else "none"  # 0.1 stored the margin's result under the name
    cfg = AttackConfig(**{**settings, "eps": tuple(rob["eps"])})
    checks = [c for c in rob.get("checks", []) if c["check"] not in _V1_CURVE_CHECKS]
    curve = [{**row, "eps_label": eps_label(row["eps"])} for row in rob["curve"]]
    return {
        "name": cfg.name, "norm": cfg.norm, "label": cfg.label(),
        "params": {k: getattr(cfg, k) for k in ATTACKS.get(cfg.name).params},
        "eps": [row["eps"] for row in rob["curve"]], "eps_labels": [r["eps_label"] for r in curve],
        "n_points": rob["n_points"], "precision": cfg.precision, "seed": seed, "batch_size": cfg.batch_size,
        "check_points": cfg.check_points, "clean_accuracy": rob["clean_accuracy"], "curve": curve,
        "first_fooled_eps": None, "checks": checks, "reliable": all(c["passed"] for c in checks),
        "unreliable_reasons": [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]],
        "margin": rob.get("margin"), "bf16_disagreement": rob.get("bf16_disagreement"),
        "wall_time_s": rob.get("wall_time_s", 0.0),
    }


def _v1_collapse(collapse: dict, num_classes: int) -> dict:
    """0.1 took the equiangle std over the P = C(C-1)/2 unordered pairs; schema 2 over the 2P off-diagonal
    entries (the authors' code): the same cosines, so the value converts exactly."""
    import math

    p = num_classes * (num_classes - 1) // 2
    factor = math.sqrt(2 * (p - 1) / (2 * p - 1)) if p > 1 else 0.0
    out = {}
    for split, metrics in collapse.items():
        out[split] = {k: (v * factor if k.startswith("nc2_equiangle_") else v) for k, v in metrics.items()}
    return out


def _from_v1(rec: dict) -> dict:
    """ncbench 0.1's record -> schema 2. The job id is computed from the stored config by today's rules (with
    0.1's version in it: 0.1 computed some numbers differently); on a GPU, 0.1 trained in bf16 whenever
    ``amp`` was on (its default), so that is what the identity says. ``nc2_equiangle_*`` values are converted
    to today's definition; ls_gap of a checkpoint at lambda = 0 is kept as 0.1 computed it."""
    from .config import build_config
    from .identity import digest, identity

    prov = rec["provenance"]
    raw = dict(prov["config"])
    on_gpu = not str(prov.get("device", "cpu")).startswith("cpu")
    train = dict(raw.get("train") or {})
    amp = train.pop("amp", True)
    train["precision"] = "bf16" if (amp and on_gpu and rec.get("training")) else "fp32"
    raw["train"] = train
    attack = {k: v for k, v in (raw.get("attack") or {}).items()}
    raw["attack"] = attack
    raw.pop("output", None)
    raw["dataset_args"] = {"val_size": None, **(raw.get("dataset_args") or {})}  # 0.1 held nothing out
    cfg = build_config(raw)
    model = prov["model"]
    spec = {k: model[k] for k in ("arch", "num_classes", "input_shape", "mean", "std", "args")}
    checkpoint = None
    if model.get("source") == "checkpoint":
        checkpoint = {"checksum": model["checksum"], "spec": spec, "ls_gap_weight_decay": None}
    ident = identity(cfg, checkpoint=checkpoint)
    ident.pop("predictors", None)  # 0.2's rules: the predictors ncbench 0.3 added were not in the identity
    ident["ncbench"] = ".".join(str(prov.get("ncbench_version", "0.1.0")).split(".")[:2])
    training = rec.get("training")
    if training is not None:
        training = {**training, "precision": train["precision"]}
    rob = rec["robustness"]
    return {
        "schema_version": 2, "kind": KIND, "created": rec["created"],
        "provenance": {
            "job_id": digest(ident), "identity": ident, "ncbench_version": prov.get("ncbench_version", "0.1.0"),
            "versions": {"torch": prov.get("torch_version"), "python": prov.get("python_version")},
            "environment": {"device_name": prov.get("device"), "platform": prov.get("platform")},
            "seed": prov["seed"], "config": prov["config"], "sweep": None, "dataset": prov["dataset"],
            "model": {**spec, "checksum": model["checksum"], "num_parameters": model["num_parameters"],
                      "source": model["source"], "checkpoint": model.get("checkpoint"), "trained_by": None},
            "ls_gap_weight_decay": prov.get("collapse_ls_gap_weight_decay") if training else None,
            "wall_time_s": prov.get("wall_time_s", {}),
        },
        "training": training,
        "accuracy": rec["accuracy"],
        "collapse": _v1_collapse(rec["collapse"], prov["dataset"]["num_classes"]),
        "measures": {"num_parameters": model["num_parameters"], "sum_squared_weights": None,
                     "train_margin_p10": None, "final_train_loss": (training or {}).get("final_loss")},
        "robustness": _v1_robustness(rob, prov["seed"]),
        "extra_robustness": [],
    }
