"""Plain-text rendering of a result record for the terminal."""

from __future__ import annotations

from .collapse import TEST_KEYS, TRAIN_KEYS


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.3e}"
    return f"{v:.4f}"


def _format_attack(rob: dict) -> list[str]:
    lines = [f"robustness: {rob['label']}, {rob['n_points']} test points"
             + (", bf16 forwards" if rob["precision"] == "bf16" else "")]
    lines.append(f"  {'eps':>8}{'robust acc':>12}")
    for row in rob["curve"]:
        extra = ""
        if "fooled_by" in row and row["fooled_by"]:
            extra = "   fooled by " + ", ".join(f"{k} {v}" for k, v in row["fooled_by"].items())
        lines.append(f"  {row['eps_label']:>8}{row['robust_accuracy']:>12.4f}{extra}")
    if rob.get("margin") and rob["margin"].get("mean_min_perturbation") is not None:
        m = rob["margin"]
        lines.append(f"  mean minimal {m['norm']} perturbation (FAB, {m['n_found']}/{m['n_points']} points): "
                     f"{m['mean_min_perturbation']:.4g}")
    if rob.get("bf16_disagreement") is not None:
        lines.append(f"  bf16 vs fp32 prediction disagreement: {rob['bf16_disagreement']:.4f}")
    n_checks = len(rob.get("checks", []))
    if rob.get("reliable", True):
        lines.append(f"  checks: all {n_checks} passed")
    else:
        lines.append(f"  UNRELIABLE: {len(rob['unreliable_reasons'])} of {n_checks} checks failed:")
        lines.extend(f"    - {r}" for r in rob["unreliable_reasons"])
    return lines


def format_record(rec: dict, path=None) -> str:
    prov = rec["provenance"]
    ds, model = prov["dataset"], prov["model"]
    env = prov["environment"]
    lines = [
        f"ncbench {prov['ncbench_version']} · {ds['name']} ({ds['n_train']} train / {ds['n_test']} test) · "
        f"{model['arch']} ({model['source']}) · seed {prov['seed']} · {env['device_name']}",
        f"job {prov['job_id'][:16]}",
    ]
    tr = rec.get("training")
    if tr:
        tpt = tr["terminal_phase_epoch"]
        epochs = len(tr["history"])
        precision = "" if tr.get("precision", "fp32") == "fp32" else f", {tr['precision']}"
        recipe = f" ({tr['recipe']})" if tr.get("recipe") else ""
        if rec["accuracy"].get("train_adv") is not None:  # adversarial training: no terminal phase to expect
            phase = (f"robust training accuracy {rec['accuracy']['train_adv']:.4f} on {tr.get('adv_train_points')} "
                     "training points (PGD-10 at the training budget)"
                     + (f"; clean train error 0 from epoch {tpt}" if tpt else ""))
        elif tpt:
            phase = f"train error 0 from epoch {tpt}"
        else:
            phase = "train error never reached 0 (not in the terminal phase)"
        lines.append(f"training: {epochs} epochs{precision}{recipe}; {phase}")
    acc = rec["accuracy"]
    held = f"   val {acc['val']:.4f}" if acc.get("val") is not None else ""
    adv = f"   train (adversarial) {acc['train_adv']:.4f}" if acc.get("train_adv") is not None else ""
    lines.append(f"accuracy: train {acc['train']:.4f}{held}   test {acc['test']:.4f}{adv}")
    m = rec["measures"]
    lines.append(f"baselines: {m['num_parameters']} parameters, sum of squared weights {_fmt(m['sum_squared_weights'])}, "
                 f"train margin (10th pct.) {_fmt(m['train_margin_p10'])}")
    lines.append("")
    col = rec["collapse"]
    splits = [s for s in ("train", "val", "val_pred", "test", "test_pred") if s in col]
    heads = {"val_pred": "val (pred)", "test_pred": "test (pred)"}
    lines.append(f"{'collapse (lower = more collapsed)':<34}" + "".join(f"{heads.get(s, s):>12}" for s in splits))
    for key in dict.fromkeys(TRAIN_KEYS + TEST_KEYS):
        values = [col[s].get(key) for s in splits]
        if all(v is None for v in values):
            continue
        lines.append(f"  {key:<32}" + "".join(f"{_fmt(v):>12}" for v in values))
    if "val_pred" in col or "test_pred" in col:
        lines.append("  (pred: held-out features grouped by the network's predicted class; no labels read)")
    if prov.get("ls_gap_weight_decay") is None and "ls_gap" in col["train"]:
        lines.append("  (ls_gap: the training weight decay is unknown for this checkpoint; the fit uses lambda = 0)")
    info = rec.get("collapse_info") or {}
    for split in ("train_adv", "test_adv"):
        if split in col:
            i = info.get(split, {})
            c = col[split]
            lines.append(f"collapse under attack, {split} ({i.get('n_points')} points, eps {_fmt(i.get('eps'))}, "
                         f"adversarial accuracy {_fmt(i.get('adversarial_accuracy'))}): nc1 {_fmt(c.get('nc1'))}, "
                         f"nc1 on clean means {_fmt(c.get('nc1_on_clean_means'))}, nearest clean mean accuracy "
                         f"{_fmt(c.get('ncc_accuracy'))}, mean shift {_fmt(c.get('mean_shift'))}")
    extra = {k: v for k, v in m.items() if k not in ("num_parameters", "sum_squared_weights", "train_margin_p10",
                                                     "final_train_loss")}
    if any(v is not None for v in extra.values()):
        lines.append("")
        lines.append("generalization measures (docs/measures.md):")
        items = [f"{k} {_fmt(v)}" for k, v in extra.items()]
        for i in range(0, len(items), 3):
            lines.append("  " + ", ".join(items[i:i + 3]))
    est = rec.get("estimators") or {}
    if est.get("confidence") is not None:
        atc = (f", ATC {est['atc']:.4f} (threshold fitted on the validation split)" if est.get("atc") is not None
               else ", ATC - (needs a validation split: dataset_args.val_size)")
        lines.append(f"test accuracy estimated without test labels: mean confidence {est['confidence']:.4f}{atc}")
    for rob in [rec["robustness"], *rec.get("extra_robustness", [])]:
        lines.append("")
        lines.extend(_format_attack(rob))
    wall = prov["wall_time_s"]
    lines.append("")
    lines.append("wall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in wall.items()))
    if path is not None:
        lines.append(f"record: {path}")
    return "\n".join(lines)
