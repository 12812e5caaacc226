"""The frame: one row per finished job, numbers as numbers (:func:`load_frame`; docs/records.md, "the frame")."""

from __future__ import annotations

import json
import math

from .._budget import canonical_eps, eps_label
from .._errors import InputError
from ..record import COLLAPSE_SPLITS  # column order: the feature sets that read no test label first
from ._jobs import _as_store

#: the frame's fixed columns after the axes, in order (docs/records.md, "the frame")
_ID_COLUMNS = ("job_id", "sweep", "dataset", "model", "seed")
_ACCURACY_COLUMNS = ("train_accuracy", "test_accuracy", "generalization_gap", "val_accuracy", "train_adv_accuracy",
                     "train_robust_accuracy", "n_train", "n_val", "n_test")
_MEASURE_COLUMNS = ("num_parameters", "sum_squared_weights", "train_margin_p10", "final_train_loss",
                    "terminal_phase_epoch")
#: the record's measures that keep their plain names as frame columns (ncbench 0.2's baselines); every other
#: measure is ``measures.<name>``
_PLAIN_MEASURES = ("num_parameters", "sum_squared_weights", "train_margin_p10", "final_train_loss")
_TAIL_COLUMNS = ("reliable", "wall_time_s")
ESTIMATORS = ("confidence", "atc", "gde")


def _flat_axis_value(value):
    """Axis values become frame cells: numbers and strings as they are; lists and mappings as compact JSON
    (hashable, so the analysis can group by them)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _num(value) -> float:
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _attack_key(att: dict) -> str:
    return f"{str(att.get('name', 'attack')).lower()}_{att.get('norm', '')}".rstrip("_")


def _attack_columns(row: dict, att: dict, prefix: str) -> list[str]:
    """One attack's columns: ``<prefix>_accuracy@<eps>`` and ``conditional_<prefix>_accuracy@<eps>`` (robust
    accuracy over clean accuracy on the attacked points) per budget > 0, ``<prefix>_n_points`` and
    ``<prefix>_clean_accuracy``. Returns the robust-accuracy column names, in curve order."""
    cols = []
    clean = _num(att.get("clean_accuracy"))
    row[f"{prefix}_n_points"] = _num(att.get("n_points"))
    row[f"{prefix}_clean_accuracy"] = clean
    for point in att.get("curve") or []:
        if _num(point.get("eps")) > 0:
            label = eps_label(point["eps"])
            col = f"{prefix}_accuracy@{label}"
            row[col] = _num(point.get("robust_accuracy"))
            row[f"conditional_{col}"] = row[col] / clean if clean > 0 else math.nan
            cols.append(col)
    return cols


def _row(record: dict, sweep: str | None, axes: dict, by_attack: bool = False) -> tuple[dict, list[str], list[str]]:
    """One frame row from a record; also the budget and extra-attack column names it produced, in order.

    The main attack's columns are ``robust_accuracy@<eps>``; ``by_attack`` (set when the frame's rows ran
    different main attacks, e.g. a sweep over ``attack.norm``) names them by their attack instead
    (``<name>_<norm>_accuracy@<eps>``), so one column never mixes two threat models."""
    prov = record.get("provenance") or {}
    acc = record.get("accuracy") or {}
    measures = record.get("measures") or {}
    training = record.get("training") or {}
    dataset = prov.get("dataset") or {}
    row = {f"__axis__{k}": _flat_axis_value(v) for k, v in axes.items()}
    row.update({
        "job_id": prov.get("job_id"),
        "sweep": sweep if sweep is not None else ((prov.get("sweep") or {}).get("name")
                                                  if isinstance(prov.get("sweep"), dict) else None),
        "dataset": dataset.get("name"),
        "model": (prov.get("model") or {}).get("arch"),
        "seed": prov.get("seed"),
        "train_accuracy": _num(acc.get("train")),
        "test_accuracy": _num(acc.get("test")),
        "val_accuracy": _num(acc.get("val")),
        "train_adv_accuracy": _num(acc.get("train_adv")),
        # the network's accuracy on the adversarial examples behind train_adv.* (every model that has them)
        "train_robust_accuracy": _num(((record.get("collapse_info") or {}).get("train_adv") or {})
                                      .get("adversarial_accuracy")),
        "n_train": _num(dataset.get("n_train")),
        "n_val": _num(dataset.get("n_val", 0)),
        "n_test": _num(dataset.get("n_test")),
    })
    row["generalization_gap"] = row["train_accuracy"] - row["test_accuracy"]
    collapse = record.get("collapse") or {}
    for split in COLLAPSE_SPLITS:
        for metric, value in (collapse.get(split) or {}).items():
            row[f"{split}.{metric}"] = _num(value)
    budgets, extras = [], []
    main = record.get("robustness") or {}
    reliable = bool(main.get("reliable", False)) if main else False
    if main:
        row["attack"] = main.get("label") or main.get("name")
        budgets = _attack_columns(row, main, _attack_key(main) if by_attack else "robust")
        margin = main.get("margin")
        if isinstance(margin, dict):
            row["fab_margin"] = _num(margin.get("mean_min_perturbation"))
            row["fab_margin_median"] = _num(margin.get("median_min_perturbation"))
    for extra in record.get("extra_robustness") or []:
        reliable = reliable and bool(extra.get("reliable", False))
        extras += _attack_columns(row, extra, _attack_key(extra))
    model = prov.get("model") or {}
    for key in _MEASURE_COLUMNS:
        value = measures.get(key)
        if value is None and key == "num_parameters":
            value = model.get("num_parameters")
        if value is None and key == "final_train_loss":
            value = training.get("final_loss")
        if key == "terminal_phase_epoch":
            value = training.get("terminal_phase_epoch")
        row[key] = _num(value)
    for key, value in measures.items():
        if key not in _PLAIN_MEASURES:
            row[f"measures.{key}"] = _num(value)
    estimators = record.get("estimators") or {}
    for key in ESTIMATORS:
        if key in estimators:
            row[f"estimators.{key}"] = _num(estimators[key])
    row["reliable"] = reliable
    wall = prov.get("wall_time_s")
    row["wall_time_s"] = _num(wall.get("total") if isinstance(wall, dict) else wall)
    return row, budgets, extras


def gde(predictions: list, groups: list) -> list[float]:
    """GDE (Jiang, Nagarajan, Baek & Kolter, ICLR 2022): a model's test accuracy estimated as its agreement with
    other runs of the same configuration on the test inputs, 1 - disagreement, averaged over the other runs.

    ``predictions``: per row, an int array of test predictions (or None); ``groups``: per row, a hashable key of
    its configuration (None: no group). Rows with no partner of the same key and test-set length get NaN.
    """
    import numpy as np

    out = [math.nan] * len(predictions)
    members: dict = {}
    for i, (p, g) in enumerate(zip(predictions, groups)):
        if p is not None and g is not None:
            members.setdefault((g, len(p)), []).append(i)
    for rows in members.values():
        if len(rows) < 2:
            continue
        stack = np.stack([predictions[i] for i in rows])
        agree = (stack[:, None, :] == stack[None, :, :]).mean(axis=2)  # (k, k), 1 on the diagonal
        k = len(rows)
        for a, i in enumerate(rows):
            out[i] = float((agree[a].sum() - 1.0) / (k - 1))
    return out


def _budget_order(col: str) -> tuple:
    name, _, label = col.partition("@")
    try:
        return (name, canonical_eps(label))
    except InputError:
        return (name, math.inf)


def load_frame(store, sweep: str | None = None):
    """One row per finished job, numbers as numbers (docs/records.md, "the frame").

    Parameters
    ----------
    store : path or ResultsStore
    sweep : str, optional
        Only this sweep's jobs, with its axes (also the jobs it reused from other sweeps). Default: every
        done job, with the axes its record carries (``provenance.sweep.axes``).

    Returns
    -------
    pandas.DataFrame
        Columns: the axes by their dotted keys (grid order), ``job_id``, ``sweep``, ``dataset``, ``model``,
        ``seed``, ``train_accuracy``, ``test_accuracy``, ``generalization_gap`` (train - test, fractions),
        ``train.<metric>`` and ``test.<metric>`` per collapse metric, ``attack`` (the main attack's label),
        ``robust_accuracy@<eps label>`` per budget > 0 (ascending; when the rows ran different main attacks,
        e.g. a sweep over ``attack.norm``, these are ``<name>_<norm>_accuracy@<eps label>`` instead, so a column
        never mixes two threat models), ``<name>_<norm>_accuracy@<eps label>`` per
        extra attack's budget (``pgd_L2_accuracy@0.1``), ``fab_margin`` / ``fab_margin_median`` where measured, ``num_parameters``,
        ``sum_squared_weights``, ``train_margin_p10``, ``final_train_loss``, ``terminal_phase_epoch`` (float:
        NaN when training never reached zero error), ``reliable`` (bool: every attack's checks passed),
        ``wall_time_s``. A value a record lacks is NaN. ``frame.attrs["axes"]``: the axis columns, in order.
        Rows: a sweep's jobs in grid order.
    """
    import pandas as pd

    if sweep is not None and not isinstance(sweep, str):
        raise InputError(f"sweep must be a sweep name (str) or None; got {sweep!r}")
    st, opened = _as_store(store)
    try:
        if not st.exists():
            st._read()  # raises the "no results store" message
        if sweep is None:
            records = st.records()
            members = [(None, (r["provenance"].get("sweep") or {}).get("axes") or {}
                        if isinstance(r["provenance"].get("sweep"), dict) else {}) for r in records]
            axes_order: dict[str, None] = {}
            for _, axes in members:
                axes_order.update(dict.fromkeys(axes))
            axis_names = list(axes_order)
        else:
            known = st.sweeps()
            if sweep not in known:
                raise InputError(f"the store {str(st.path)!r} has no sweep {sweep!r}; it has: "
                                 f"{', '.join(known) if known else 'none'}")
            records = st.records(sweep=sweep)
            membership = st.members(sweep)
            members = [(sweep, membership.get(r["provenance"]["job_id"], {})) for r in records]
            axis_names = st.sweep_axes(sweep) or []
            for _, axes in members:  # an axis a job has that the registered grid no longer names: keep it
                axis_names += [a for a in axes if a not in axis_names]
    finally:
        if opened:
            st.close()
    rows, budgets, extras, metrics = [], {}, {}, {}
    mains = {_attack_key(r["robustness"]) for r in records if r.get("robustness")}
    by_attack = len(mains) > 1
    prefixes = tuple(f"{split}." for split in COLLAPSE_SPLITS)
    for record, (name, axes) in zip(records, members):
        row, b, e = _row(record, name, axes, by_attack)
        rows.append(row)
        budgets.update(dict.fromkeys(b))
        extras.update(dict.fromkeys(e))
        metrics.update(dict.fromkeys(k for k in row if k.startswith(prefixes)))
    _add_gde(rows, records)
    metric_cols = [m for split in prefixes for m in metrics if m.startswith(split)]
    margin_cols = [c for c in ("fab_margin", "fab_margin_median") if any(c in r for r in rows)]
    attack_cols = []
    for col in sorted(budgets, key=_budget_order) + sorted(extras, key=_budget_order):
        attack_cols.append(col)
    conditional = [f"conditional_{c}" for c in attack_cols]
    attack_meta = list(dict.fromkeys(f"{c.partition('_accuracy@')[0]}_{k}" for c in attack_cols
                                     for k in ("n_points", "clean_accuracy")))
    measure_cols = list(dict.fromkeys(k for r in rows for k in r if k.startswith("measures.")))
    estimator_cols = [f"estimators.{k}" for k in ESTIMATORS if any(f"estimators.{k}" in r for r in rows)]
    fixed = (list(_ID_COLUMNS) + list(_ACCURACY_COLUMNS) + metric_cols
             + (["attack"] if any("attack" in r for r in rows) else [])
             + attack_cols + conditional + attack_meta + margin_cols
             + list(_MEASURE_COLUMNS) + measure_cols + estimator_cols + list(_TAIL_COLUMNS))
    # an axis named like a fixed column (seed, model, dataset) is that column: the grid's value, once
    columns = list(axis_names) + [c for c in fixed if c not in axis_names]
    data = {}
    for col in columns:
        if col in axis_names:
            data[col] = [r.get(f"__axis__{col}") for r in rows]
        else:
            data[col] = [r.get(col, math.nan if _is_numeric_column(col) else None) for r in rows]
    frame = pd.DataFrame(data, columns=columns)
    for col in columns:
        if col in axis_names:
            frame[col] = frame[col].infer_objects()
            if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (int, float))
                                                              and not isinstance(v, bool)).all():
                frame[col] = pd.to_numeric(frame[col])
            continue
        if col == "reliable":
            frame[col] = frame[col].astype(bool)
        elif col in ("seed", "num_parameters"):
            values = pd.to_numeric(frame[col], errors="coerce")
            frame[col] = values.astype("int64") if len(values) and values.notna().all() else values.astype(float)
        elif _is_numeric_column(col):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame.attrs["axes"] = list(axis_names)
    if sweep is not None:
        frame.attrs["sweep"] = sweep
    return frame


def configuration_key(record: dict) -> str | None:
    """What a configuration is, for GDE: the record's identity without the training seed (the dataset, the
    architecture and its arguments, the recipe), so two runs that differ only in their seed share a key and two
    grids with the same axis values but other fixed settings never do. None for a model not trained by ncbench
    (no seed to vary)."""
    ident = (record.get("provenance") or {}).get("identity") or {}
    model = dict(ident.get("model") or {})
    if model.get("source") != "trained":
        return None
    model.pop("seed", None)
    return json.dumps({"ncbench": ident.get("ncbench"), "dataset": ident.get("dataset"), "model": model},
                      sort_keys=True, default=str)


def _add_gde(rows: list, records: list) -> None:
    """``estimators.gde`` of every row whose record kept its test predictions, across the other seeds of its
    configuration (:func:`configuration_key`)."""
    from ..record import decode_labels

    preds, groups = [], []
    for record in records:
        enc = (record.get("predictions") or {}).get("test")
        preds.append(decode_labels(enc) if enc else None)
        groups.append(configuration_key(record))
    if not any(p is not None for p in preds):
        return
    for row, value in zip(rows, gde(preds, groups)):
        row["estimators.gde"] = value


def _is_numeric_column(col: str) -> bool:
    return col not in ("job_id", "sweep", "dataset", "model", "attack", "reliable")
