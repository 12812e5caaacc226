"""How far a cheaper attack's robust accuracy lies above full AutoAttack's, and what it costs (issue 16's target).

    python benchmarks/bench_attack_gap.py                                  # trains a handful of MNIST-1D CNNs
    python benchmarks/bench_attack_gap.py --checkpoints runs/*/model.safetensors --dataset mnist1d \\
        --dataset-args '{"num_samples": 5000, "train_split": 0.8, "seed": 42}'

For every model, norm and budget, each attack runs alone at that one budget (the grid below it would change the
points it attacks) on the first ``--n-points`` test points with the same job seed: full AutoAttack (APGD-CE,
APGD-T, FAB-T, Square), the ``apgd`` candidates (APGD-CE then APGD-T; ``steps x targets`` each), and PGD-20
(1 restart). Printed per row: clean and robust accuracy in points (percent of the evaluated points), each
attack's gap to AutoAttack (its robust accuracy minus AutoAttack's: >= 0 means weaker) and CPU time; then,
per attack, the mean, max and standard deviation of the gap over all rows and the time ratio against AutoAttack
and against PGD-20 (total CPU time over all rows). ``apgd`` 100x9 draws the same starts as AutoAttack's own APGD-CE
and APGD-T (``ncbench.attacks._autoattack``), so its gap is exactly what FAB-T and Square add.

With ``--store S --sweep NAME`` it measures the gap on the sweep's own models instead (issue 16: the robustness
targets of a citable grid must lie within 1 point of full AutoAttack on a stated subset of its models):
``--sample K`` finished jobs drawn with ``--sample-seed``, spread over the strata of ``--strata`` (default: the
training method and the capacity axis: channels, width or depth), each loaded from the model file the sweep kept
(``<store folder>/checkpoints/<training id>.safetensors``) and attacked on the sweep's own first ``n_points``
test points at the budgets of its ``apgd`` target, with the job's own seed. Every row then also gives the
target **as the record holds it** (the number the measures board regresses: ``apgd`` run over the whole budget
grid) and its gap to AutoAttack run at that budget alone. ``--out FILE.csv`` writes the rows; saved as
``leaderboards/measures/<sweep>/attack-gap.csv`` they are printed on that sweep's measures board.

    python benchmarks/bench_attack_gap.py --store ncbench-results/results.sqlite --sweep mnist1d-cnn \
        --sample 6 --out leaderboards/measures/mnist1d-cnn/attack-gap.csv

Without ``--checkpoints`` or ``--store`` it trains ``--models`` MNIST-1D CNNs (30 epochs; channels, weight decay and
label noise varied) on the default 4000/1000 split. Times are CPU seconds of this one process (run it with
OMP_NUM_THREADS=1 so that CPU time is the time one core spends), attacks interleaved per row; quote ``uptime``
with them. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from ncbench._io import write_replace
from ncbench.analysis._frame import capacity_axis
from ncbench.attacks import AttackConfig, robustness_curve
from ncbench.config import build_config
from ncbench.data import load_dataset
from ncbench.evaluate import prepare
from ncbench.identity import digest
from ncbench.models import load_checkpoint
from ncbench.store import ResultsStore

#: the models trained when no checkpoints are given: capacity, weight decay and label noise varied
TRAINED = [
    {"model_args": {"channels": 16}, "train": {"epochs": 30}},
    {"model_args": {"channels": 8}, "train": {"epochs": 30, "weight_decay": 5e-4}},
    {"model_args": {"channels": 32}, "train": {"epochs": 30, "weight_decay": 5e-4}},
    {"model_args": {"channels": 16}, "train": {"epochs": 30}, "dataset_args": {"label_noise": 0.1}},
    {"model_args": {"channels": 64}, "train": {"epochs": 30}, "dataset_args": {"n_train": 1000}},
    {"model_args": {"channels": 32}, "train": {"epochs": 30}, "seed": 1},
]


def parse_budgets(text: str) -> list[tuple[str, float]]:
    """``"Linf:0.005,0.01;L2:0.025,0.05"`` -> [(norm, eps), ...]."""
    out = []
    for part in text.split(";"):
        norm, values = part.split(":")
        out += [(norm.strip(), float(v)) for v in values.split(",")]
    return out


def parse_variants(text: str) -> list[tuple[int, int]]:
    """``"100x9,100x3"`` -> [(steps, targets), ...]."""
    return [tuple(int(v) for v in part.split("x")) for part in text.split(",")]


#: the columns of ``--out``: robust accuracies are fractions of the evaluated points; gaps are in points
GAP_COLUMNS = ["sweep", "job_id", "axes", "norm", "eps", "n_points", "seed", "clean", "autoattack", "target",
               "target_recorded", "target_recorded_gap", "target_alone", "target_alone_gap", "pgd20", "pgd20_gap",
               "autoattack_cpu_s"]


def _target_attack(record: dict) -> dict:
    """The record's ``apgd`` robustness target (its config and its stored result)."""
    cfgs = record["provenance"]["config"].get("extra_attacks") or []
    results = record.get("extra_robustness") or []
    for cfg, res in zip(cfgs, results):
        if cfg["name"] == "apgd":
            return {"config": cfg, "result": res}
    raise SystemExit(f"job {record['provenance']['job_id'][:12]} has no apgd target among its extra attacks")


def sample_jobs(store: ResultsStore, sweep: str, k: int, seed: int, strata: list[str] | None) -> list[dict]:
    """``k`` finished records of ``sweep``: shuffled with ``seed`` inside each stratum (a combination of the
    ``strata`` axes), then taken round-robin across the strata in an order also drawn with ``seed``, so every
    stratum is represented before any twice."""
    records = store.records(sweep=sweep)
    if not records:
        raise SystemExit(f"{store.path} has no finished job of sweep {sweep!r}")
    axes = [a for a in records[0]["provenance"]["sweep"]["axes"]]
    if strata is None:  # the training method and the capacity axis (channels, width or depth; not dropout)
        cap = capacity_axis([a for a in axes if a != "seed"])
        strata = list(dict.fromkeys(a for a in ("train.adversarial", cap) if a in axes))
    missing = [a for a in strata if a not in axes]
    if missing:
        raise SystemExit(f"--strata {missing} are not axes of {sweep!r}: {axes}")
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["provenance"]["job_id"]):
        groups.setdefault(tuple(str(r["provenance"]["sweep"]["axes"][a]) for a in strata), []).append(r)
    rng = random.Random(seed)
    keys = sorted(groups)
    for key in keys:
        rng.shuffle(groups[key])
    rng.shuffle(keys)  # which strata come first when k is smaller than their number
    picked, round_ = [], 0
    while len(picked) < k and any(len(g) > round_ for g in groups.values()):
        picked += [groups[key][round_] for key in keys if len(groups[key]) > round_]
        round_ += 1
    return picked[:k]


def store_rows(args):
    """Per sampled job: (record, model, x_test, y_test)."""
    store = ResultsStore(args.store)
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else store.folder / "checkpoints"
    strata = [a for a in args.strata.split(",") if a] if args.strata is not None else None
    for record in sample_jobs(store, args.sweep, args.sample, args.sample_seed, strata):
        cfg = build_config(record["provenance"]["config"], device="cpu")
        ident = record["provenance"]["identity"]  # the training id the job used, whatever ncbench reads it now
        training_id = digest({key: ident[key] for key in ("ncbench", "dataset", "model")})
        path = folder / f"{training_id}.safetensors"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist: the sweep keeps its models beside its store "
                             "(pass --checkpoint-dir if they moved)")
        ds = load_dataset(cfg.dataset, **cfg.dataset_args)
        yield record, load_checkpoint(path).eval(), ds.x_test, ds.y_test


def main_store(args) -> None:
    """The gap on a sweep's own models; see the module docstring."""
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}; "
          f"sweep {args.sweep}, {args.sample} jobs (sample seed {args.sample_seed})", flush=True)
    rows = []
    for record, model, x, y in store_rows(args):
        target = _target_attack(record)
        tcfg, curve = target["config"], {float(c["eps"]): c for c in target["result"]["curve"]}
        n = len(y) if tcfg.get("n_points") is None else min(int(tcfg["n_points"]), len(y))
        x, y = x[:n], y[:n]
        seed = int(record["provenance"]["identity"]["attack"]["seed"])
        axes = record["provenance"]["sweep"]["axes"]
        for eps in [e for e in tcfg["eps"] if e > 0]:
            base = dict(norm=tcfg["norm"], eps=(eps,))
            t = time.process_time()
            aa, _, clean = attack(model, x, y, seed, name="autoattack", **base)
            aa_cpu = time.process_time() - t
            recorded_clean = 100 * target["result"]["clean_accuracy"]
            if abs(clean - recorded_clean) > 0.5:  # not the model or the points the record attacked
                raise SystemExit(f"job {record['provenance']['job_id'][:12]}: clean accuracy {clean:.2f} % on these "
                                 f"points, the record says {recorded_clean:.2f} %: wrong model file or test points")
            same = {k: v for k, v in tcfg.items() if k not in ("eps", "n_points")}  # the target's own settings
            alone = attack(model, x, y, seed, **{**same, "eps": (eps,)})[0]
            pgd = attack(model, x, y, seed, name="pgd", steps=20, **base)[0]
            recorded = 100 * curve[float(eps)]["robust_accuracy"]
            row = {"sweep": args.sweep, "job_id": record["provenance"]["job_id"],
                   "axes": json.dumps(axes, sort_keys=True, separators=(",", ":")), "norm": tcfg["norm"],
                   "eps": eps, "n_points": n, "seed": seed, "clean": clean / 100, "autoattack": aa / 100,
                   "target": f"apgd {tcfg['apgd_steps']} it. x {tcfg['apgd_targets']} targets",
                   "target_recorded": recorded / 100, "target_recorded_gap": round(recorded - aa, 6),
                   "target_alone": alone / 100, "target_alone_gap": round(alone - aa, 6), "pgd20": pgd / 100,
                   "pgd20_gap": round(pgd - aa, 6), "autoattack_cpu_s": aa_cpu}
            rows.append(row)
            print(f"{record['provenance']['job_id'][:12]} {row['axes'][:60]:<60} {tcfg['norm']} {eps:g}: clean "
                  f"{clean:.1f}, AutoAttack {aa:.1f} ({aa_cpu:.0f} s), target as recorded {recorded:.1f} "
                  f"({recorded - aa:+.1f}), alone {alone:.1f} ({alone - aa:+.1f}), PGD-20 {pgd:.1f} "
                  f"({pgd - aa:+.1f})", flush=True)
            if args.out:  # after every row: an interrupted run keeps what it measured
                _write_rows(Path(args.out), rows)
    gaps = [r["target_recorded_gap"] for r in rows]
    print(f"\n# {len(rows)} rows: target as recorded minus AutoAttack, in points: mean {statistics.mean(gaps):.2f}, "
          f"max {max(gaps):.2f}; within 1 point: {sum(abs(g) <= 1 for g in gaps)} of {len(gaps)}; PGD-20: mean "
          f"{statistics.mean(r['pgd20_gap'] for r in rows):.2f}")


def _write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=GAP_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_replace(path, buf.getvalue().encode())


def models(args):
    """(name, model, x_test, y_test) per model."""
    if args.checkpoints:
        ds = load_dataset(args.dataset, **json.loads(args.dataset_args))
        for path in args.checkpoints:
            yield os.path.basename(os.path.dirname(path)) or path, load_checkpoint(path).eval(), ds.x_test, ds.y_test
        return
    for raw in TRAINED[args.first:args.first + args.models]:
        t = time.perf_counter()
        ds, model, _, _, _ = prepare(build_config({"dataset": "mnist1d", **raw}, device="cpu"), progress=False)
        name = json.dumps(raw, separators=(",", ":"))
        print(f"# trained {name} in {time.perf_counter() - t:.0f} s", flush=True)
        yield name, model.eval(), ds.x_test, ds.y_test


def attack(model, x, y, seed, **kw) -> tuple[float, float, float]:
    """(robust accuracy in points, CPU seconds of this process, clean accuracy in points) of one attack at one
    budget. CPU time, not wall time: on a shared machine the wall time mostly measures the other jobs."""
    t = time.process_time()
    out = robustness_curve(model, x, y, AttackConfig(**kw), seed=seed, progress=False)
    wall = time.process_time() - t
    if not out["reliable"]:
        print(f"#   unreliable {kw['name']}: {out['unreliable_reasons']}")
    return 100 * out["curve"][-1]["robust_accuracy"], wall, 100 * out["clean_accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="*", default=[], help="model files (safetensors or .pt); default: train")
    ap.add_argument("--dataset", default="mnist1d", help="the checkpoints' dataset (default mnist1d)")
    ap.add_argument("--dataset-args", default="{}", help="its arguments as JSON (the grid's dataset_args)")
    ap.add_argument("--models", type=int, default=4, help="how many models to train without --checkpoints")
    ap.add_argument("--first", type=int, default=0, help="index of the first of them in TRAINED (default 0)")
    ap.add_argument("--n-points", type=int, default=500)
    ap.add_argument("--budgets", default="Linf:0.005,0.01;L2:0.025,0.05")
    ap.add_argument("--variants", default="100x9,100x3,50x3", help="apgd steps x targets to compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", help="a results store: measure the gap on the models of --sweep kept beside it")
    ap.add_argument("--sweep", help="the sweep whose models to sample (with --store)")
    ap.add_argument("--sample", type=int, default=6, help="how many of its finished jobs (default 6)")
    ap.add_argument("--sample-seed", type=int, default=0, help="the seed of the draw (default 0)")
    ap.add_argument("--strata", default=None, help="comma-separated axes to spread the draw over (default: "
                    "train.adversarial and the capacity axis, the first whose name has channels, width or depth)")
    ap.add_argument("--checkpoint-dir", help="where the sweep's model files are (default: <store folder>/checkpoints)")
    ap.add_argument("--out", help="with --store: write the rows to this CSV (the measures board prints it)")
    args = ap.parse_args()
    if args.store:
        if not args.sweep:
            ap.error("--store needs --sweep")
        main_store(args)
        return
    budgets, variants = parse_budgets(args.budgets), parse_variants(args.variants)
    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, load {os.getloadavg()[0]:.2f}; "
          f"{args.n_points} points per model; seed {args.seed}")
    names = ["autoattack"] + [f"apgd-{s}x{t}" for s, t in variants] + ["pgd-20"]
    header = f"{'model':<40} {'norm':<5} {'eps':>6} {'clean':>6} " + " ".join(f"{n:>12}" for n in names)
    print(header + "   (robust accuracy in points; CPU seconds)", flush=True)
    gaps = {n: [] for n in names[1:]}
    times = {n: 0.0 for n in names}
    for name, model, x, y in models(args):
        x, y = x[:args.n_points], y[:args.n_points]
        for norm, eps in budgets:
            base = dict(norm=norm, eps=(eps,))
            res = {"autoattack": attack(model, x, y, args.seed, name="autoattack", **base)}
            for s, t in variants:
                res[f"apgd-{s}x{t}"] = attack(model, x, y, args.seed, name="apgd", apgd_steps=s, apgd_targets=t, **base)
            res["pgd-20"] = attack(model, x, y, args.seed, name="pgd", steps=20, **base)
            aa = res["autoattack"][0]
            for n, (r, wall, _) in res.items():
                times[n] += wall
                if n != "autoattack":
                    gaps[n].append(r - aa)
            cells = " ".join(f"{r:>6.1f} {w:>4.0f}s" for r, w, _ in res.values())
            print(f"{name[:40]:<40} {norm:<5} {eps:>6g} {res['autoattack'][2]:>6.1f} {cells}", flush=True)
    print(f"\n# gap to AutoAttack in points (robust accuracy minus AutoAttack's) over {len(gaps['pgd-20'])} rows; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'attack':<14} {'mean':>6} {'max':>6} {'sd':>6} {'time/AA':>8} {'time/PGD-20':>12}")
    for n in names:
        g = gaps.get(n, [0.0])
        sd = statistics.stdev(g) if len(g) > 1 else 0.0
        print(f"{n:<14} {statistics.mean(g):>6.2f} {max(g):>6.2f} {sd:>6.2f} {times[n] / times['autoattack']:>8.3f} "
              f"{times[n] / times['pgd-20']:>12.1f}")


if __name__ == "__main__":
    main()
