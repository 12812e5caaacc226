"""Time ncbench's generalization measures against the training of the same model, and check the subset.

    python benchmarks/bench_measures.py              # 6 grid-like MNIST-1D models, subset check on one (minutes)
    python benchmarks/bench_measures.py --quick      # 2 small models, no subset check (a smoke run)

For each model (MNIST-1D, ``load_dataset("mnist1d", n_train=N)``, the default recipe for E epochs): time its
training, then each family of measures (``ncbench.measures.FAMILIES``: pacbayes, pacbayes_mag, sharpness,
norms, margin) with ``generalization_measures(..., only=<the family's measures>)``, and print each family's time
and all of them together as a ratio to the training time measured in the same run. Times are wall clock and
process CPU time (on a shared machine the CPU time is the steadier of the two); ``uptime``'s load is printed.
Before anything is timed, one call on a tiny model pays torch.func's one-time initialisation (about a second,
once per process: a sweep worker pays it once for all its jobs).

Subset check (not with --quick): on one model trained on 4000 points, every measure with the default subset
(``n_points``) and with all training points, for --seeds seeds each: mean and standard deviation over seeds
(the Monte Carlo error: seeds change the noise draws, the sharpness starts and the subset), and the
difference of the means in units of that error. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ncbench.data import load_dataset
from ncbench.measures import FAMILIES, MEASURE_NAMES, generalization_measures
from ncbench.measures._api import N_POINTS
from ncbench.models import create_model
from ncbench.train import TrainConfig, train

#: (arch, model_args, n_train, epochs): CNN widths of the committed MNIST-1D grid (which trains 60 epochs) and
#: MLPs, at the cheapest training of issue 14's range (1000 points, 30 epochs) where the ratio is largest
MODELS = [("cnn1d", {"channels": 8}, 1000, 30), ("cnn1d", {"channels": 32}, 1000, 30),
          ("cnn1d", {"channels": 64}, 1000, 60), ("cnn1d", {"channels": 16}, 4000, 60),
          ("mlp", {"width": 64, "depth": 1}, 1000, 30), ("mlp", {"width": 256, "depth": 3}, 1000, 30)]
QUICK = [("cnn1d", {"channels": 8}, 1000, 30), ("mlp", {"width": 64, "depth": 1}, 1000, 30)]


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def trained(arch, args, n_train, epochs, seed=0):
    ds = load_dataset("mnist1d", n_train=n_train)
    torch.manual_seed(seed)
    model = create_model(arch, input_shape=ds.input_shape, num_classes=ds.num_classes, mean=ds.mean, std=ds.std,
                         **args)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result, wall, cpu = timed(lambda: train(model, ds.x_train, ds.y_train, TrainConfig(epochs=epochs), seed=seed,
                                            progress=False))
    return ds, model.eval(), init, result, wall, cpu


def warm_up() -> None:
    m = create_model("cnn1d", input_shape=(1, 40), num_classes=3, channels=2, width=4).eval()
    x = torch.rand(64, 1, 40)
    generalization_measures(m, x, m(x).argmax(1), init_state=m.state_dict(), n_points=32, mc_draws=2)


def time_families(ds, model, init, seed=0) -> dict:
    out = {}
    for family, names in FAMILIES.items():
        res, wall, cpu = timed(lambda: generalization_measures(model, ds.x_train, ds.y_train, init_state=init,
                                                              seed=seed, only=names))
        out[family] = (wall, cpu, res)
    return out


def speed(models) -> None:
    print(f"{'model':<30} {'train s':>9} {'family':<13} {'wall s':>8} {'cpu s':>8} {'ratio(cpu)':>10} "
          f"{'ratio(wall)':>11}  evals  load")
    for arch, args, n_train, epochs in models:
        ds, model, init, result, tw, tc = trained(arch, args, n_train, epochs)
        label = f"{arch} {args} n={n_train} e={epochs}".replace("'", "")
        fams = time_families(ds, model, init)
        total_w = sum(v[0] for v in fams.values())
        total_c = sum(v[1] for v in fams.values())
        print(f"{label:<30} {tw:>9.2f} (cpu {tc:.2f}, train acc {result.history[-1]['train_accuracy']:.3f})")
        for family, (w, c, res) in fams.items():
            info = res["info"]
            key = {"pacbayes": "sigma", "pacbayes_mag": "mag_sigma", "sharpness": "alpha"}.get(family)
            evals = info[key]["evaluations"] if key and key in info else ""
            nones = {k: v for k, v in info["reasons"].items()}
            print(f"{'':<30} {'':>9} {family:<13} {w:>8.2f} {c:>8.2f} {c / tc:>10.2f} {w / tw:>11.2f}  {evals!s:>5}  "
                  f"{load()}" + (f"  None: {nones}" if nones else ""))
        print(f"{'':<30} {'':>9} {'ALL':<13} {total_w:>8.2f} {total_c:>8.2f} {total_c / tc:>10.2f} "
              f"{total_w / tw:>11.2f}")


def subset_check(seeds: int) -> None:
    arch, args, n_train, epochs = "cnn1d", {"channels": 16}, 4000, 60
    ds, model, init, _, _, _ = trained(arch, args, n_train, epochs)
    print(f"\nsubset check: {arch} {args} on {n_train} points, {epochs} epochs; default subset {N_POINTS} points vs "
          f"all {n_train}; {seeds} seeds each (load {load()})")
    runs = {}
    for n in (N_POINTS, n_train):
        vals = {k: [] for k in MEASURE_NAMES}
        t = time.perf_counter()
        for seed in range(seeds):
            res = generalization_measures(model, ds.x_train, ds.y_train, init_state=init, seed=seed, n_points=n)
            for k in MEASURE_NAMES:
                vals[k].append(res["values"][k])
        runs[n] = vals
        print(f"  n_points={n}: {(time.perf_counter() - t) / seeds:.1f} s per call (wall)")
    print(f"  {'measure':<27} {'subset mean':>13} {'MC error':>10} {'full mean':>13} {'MC error':>10} "
          f"{'|diff|/MC error':>15}")
    for k in MEASURE_NAMES:
        a, b = runs[N_POINTS][k], runs[n_train][k]
        if any(v is None for v in a + b):
            print(f"  {k:<27} None in some run")
            continue
        ma, mb = statistics.mean(a), statistics.mean(b)
        sa = statistics.stdev(a) if seeds > 1 else float("nan")
        sb = statistics.stdev(b) if seeds > 1 else float("nan")
        ratio = abs(ma - mb) / sa if sa > 0 else (0.0 if ma == mb else float("inf"))
        print(f"  {k:<27} {ma:>13.5g} {sa:>10.3g} {mb:>13.5g} {sb:>10.3g} {ratio:>15.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two small models, no subset check")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the brief's one core)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per setting in the subset check")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, load {load()}")
    warm_up()
    speed(QUICK if a.quick else MODELS)
    if not a.quick:
        subset_check(a.seeds)


if __name__ == "__main__":
    main()
