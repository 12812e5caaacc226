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

Without ``--checkpoints`` it trains ``--models`` MNIST-1D CNNs (30 epochs; channels, weight decay and label
noise varied) on the default 4000/1000 split. Times are CPU seconds of this one process (run it with
OMP_NUM_THREADS=1 so that CPU time is the time one core spends), attacks interleaved per row; quote ``uptime``
with them. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from ncbench.attacks import AttackConfig, robustness_curve
from ncbench.config import build_config
from ncbench.data import load_dataset
from ncbench.evaluate import prepare
from ncbench.models import load_checkpoint

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
    args = ap.parse_args()
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
