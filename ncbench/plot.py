"""Figures from result records: collapse over training, in the manner of Papyan et al. (PNAS 2020, Figs. 2-7),
and the robustness curve. A record comes from a file (:func:`read_record`) or from the results store
(:func:`record_from_store`)."""

from __future__ import annotations

import json
from pathlib import Path

from ._errors import InputError

#: (record key, panel title) in display order; "error" is 1 - accuracy.
PANELS = (
    ("error", "error (1 - accuracy)"),
    ("nc1", "NC1: Tr(Σ_W Σ_B⁺)/C"),
    ("nc2_equinorm_means", "NC2 equinorm (means)"),
    ("nc2_maxangle_means", "NC2 max-angle (means)"),
    ("nc3_duality", "NC3: ‖W/‖W‖ − M/‖M‖‖²"),
    ("nc4_ncc_mismatch", "NC4: NCC mismatch"),
)


def read_record(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"record {str(p)!r} does not exist")
    try:
        rec = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{p}: not a JSON result record ({err})") from None
    if not isinstance(rec, dict) or rec.get("kind") != "ncbench.evaluate":
        raise InputError(f"{p}: not an ncbench evaluate record")
    return rec


def record_from_store(store, job: str) -> dict:
    """The record of the one done job of ``store`` whose id starts with ``job``.

    Raises InputError naming the store and the prefix when no job or several jobs match (listing up to five),
    or when the job is stored as failed (it has no record).
    """
    from .store import ResultsStore

    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    if not st.exists():
        st._read()  # the "no results store" message
    found = st.find(job)
    if not found:
        raise InputError(f"no job in {st.path} starts with {job!r} (`ncbench results list --sweep NAME` shows "
                         "the jobs' ids)")
    if len(found) > 1:
        shown = ", ".join(j[:16] for j in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise InputError(f"--job {job!r} matches {len(found)} jobs in {st.path} ({shown}); give more of the id")
    rec = st.record(found[0])
    if rec is None:
        raise InputError(f"job {found[0][:16]} in {st.path} failed: it has no record (`ncbench results list "
                         "--sweep NAME` shows its error)")
    return rec


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_stem: str | Path) -> list[Path]:
    """Write ``fig`` as OUT_STEM.png and OUT_STEM.pdf, close it, return the paths."""
    import matplotlib.pyplot as plt

    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=130)
        paths.append(path)
    plt.close(fig)
    return paths


def _series(history, split: str, key: str):
    xs, ys = [], []
    for row in history:
        if key == "error":
            v = 1.0 - row[f"{split}_accuracy"]
        elif row.get("collapse"):
            v = row["collapse"][split].get(key)
        else:
            continue
        if v is not None:
            xs.append(row["epoch"])
            ys.append(v)
    return xs, ys


#: what a value of exactly 0 looks like on a log axis, which cannot place it
ZERO_MARKER = "v"
ZERO_NOTE = ("▼ on a panel's bottom edge: a value of exactly 0, which a log axis cannot show ({n} point{s}; "
             "e.g. zero training error in the terminal phase)")


def training_figure(rec: dict):
    """The collapse-over-training figure of a record (a matplotlib Figure, not yet saved).

    Metrics against epoch on log-log axes, train and test side by side. A value of exactly 0 (training error
    once it is zero, the NCC mismatch) has no place on a log axis: it is drawn as a ▼ on the panel's bottom
    edge, and a note at the foot of the figure says so and counts them.
    """
    from matplotlib.transforms import blended_transform_factory

    plt = _pyplot()
    tr = rec.get("training") or {}
    history = tr.get("collapse_history") or []
    if len(history) < 2:
        raise InputError("the record has no collapse history (a loaded checkpoint, or collapse_epochs: 0); "
                         "train with ncbench evaluate to get one")
    prov = rec["provenance"]
    fig, axes = plt.subplots(3, 4, figsize=(13, 8.5), constrained_layout=True)
    tpt = tr.get("terminal_phase_epoch")
    zeros = 0
    for i, (key, title) in enumerate(PANELS):
        for j, split in enumerate(("train", "test")):
            ax = axes[i // 2, 2 * (i % 2) + j]
            xs, ys = _series(history, split, key)
            color = "C0" if split == "train" else "C1"
            ax.plot([x for x, y in zip(xs, ys) if y > 0], [y for y in ys if y > 0], "o-", color=color, ms=3, lw=1.5)
            at_zero = [x for x, y in zip(xs, ys) if y == 0]
            ax.set_xscale("log")
            ax.set_yscale("log", nonpositive="mask")
            if at_zero:
                zeros += len(at_zero)
                edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in epochs, y on the bottom edge
                ax.plot(at_zero, [0.0] * len(at_zero), ZERO_MARKER, color=color, ms=6, transform=edge, clip_on=False)
            if tpt:
                ax.axvline(tpt, color="0.6", ls=":", lw=1)
            ax.set_title(f"{title} — {split}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.25)
    ds, model = prov["dataset"], prov["model"]
    loss = prov["config"]["train"]["loss"]
    fig.suptitle(f"{ds['name']} · {model['arch']} · {loss} loss · seed {prov['seed']} — dotted line: first epoch "
                 f"of zero training error ({tpt})", fontsize=10)
    if zeros:
        fig.supxlabel(ZERO_NOTE.format(n=zeros, s="" if zeros == 1 else "s"), fontsize=8, color="0.3")
    return fig


def plot_training(rec: dict, out_stem: str | Path) -> list[Path]:
    """Collapse metrics against epoch on log-log axes, train and test side by side; writes PNG and PDF
    (:func:`training_figure`)."""
    return _save(training_figure(rec), out_stem)


def plot_robustness(rec: dict, out_stem: str | Path) -> list[Path]:
    """Robust accuracy against eps (the robustness curve), with clean accuracy; writes PNG and PDF."""
    plt = _pyplot()
    rob = rec.get("robustness") or {}
    curve = rob.get("curve") or []
    if len(curve) < 2:
        raise InputError("the record's robustness curve has fewer than 2 budgets; nothing to draw")
    fig, ax = plt.subplots(figsize=(4.8, 3.6), constrained_layout=True)
    eps = [r["eps"] for r in curve]
    ax.plot(eps, [r["robust_accuracy"] for r in curve], "o-", color="C3", label="robust accuracy")
    ax.axhline(rob["clean_accuracy"], color="0.5", ls="--", lw=1, label="clean accuracy")
    ax.set_xlabel(f"eps ({rob['norm']}, inputs in [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    prov = rec["provenance"]
    flag = "" if rob.get("reliable", True) else " — UNRELIABLE (see checks)"
    ax.set_title(f"{prov['dataset']['name']} · {prov['model']['arch']} · {rob['name']} "
                 f"({rob['n_points']} points){flag}", fontsize=9)
    return _save(fig, out_stem)
