"""Training throughput: ncbench's loop against a plain PyTorch loop with a DataLoader (MNIST-1D CNN), the
2-D CNN in contiguous against channels_last memory format (what ncbench uses for 2-D convolutions), and the
cost of each training recipe relative to standard training.

    python benchmarks/bench_train.py [--epochs 5] [--repeats 3] [--cnn2d-batches 30]
    python benchmarks/bench_train.py --recipes [--recipe-epochs 3] [--repeats 3] [--threads 1]

``--recipes`` (only that part): per model of the committed grids (MNIST-1D cnn1d with 8, 16 and 32 channels;
the digits MLP, width 256, depth 3) and per recipe (AdamW; dropout 0.3; shift or crop_flip augmentation;
FGSM-RS; PGD-AT with 10 steps; TRADES with 10 steps; adversarial ones at Linf 0.01 on MNIST-1D and 0.05 on
digits), the time of one training epoch of ``ncbench.train.train`` (its per-epoch train-accuracy pass
included; from the callback times of epochs 2..E, so set-up is left out): this process's CPU time (with
--threads 1 the measure that other work on a shared machine disturbs least) and wall time, medians of
--repeats, each printed as a ratio to standard training (SGD, no augmentation) of the same model measured in
the same run, the recipes timed in turn. The one-off robust-training-accuracy measurement at the end of
adversarial training (PGD-10 on 1,000 training points) is printed separately, in CPU time of epochs of
standard training.

Both train the same model (cnn1d, fresh from the same seed) with the same SGD settings and batch size 128
for --epochs epochs on the 4000 MNIST-1D training samples, on the CPU.
- plain: ``DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)`` (default: no worker processes),
  the usual zero_grad / forward / backward / step loop.
- ncbench: ``ncbench.train.train`` — data held as tensors, batches drawn by index from one permutation per
  epoch. Its time includes the eval-mode train-accuracy pass it runs after every epoch (which the plain loop
  does not do), so the ratio understates the loop's own speed-up.
Throughput = training samples per second; medians of --repeats, the two run in turn.

Part 2: cnn2d (ncbench's default for MNIST-like data) on random 1x28x28 inputs, batch 128, SGD: training steps,
eval-mode feature extraction and PGD-5 attack steps, each timed in contiguous and in channels_last format on
the same weights. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ncbench.data import load_dataset
from ncbench.models import create_model
from ncbench.train import TrainConfig, train


def fresh(ds):
    torch.manual_seed(0)
    return create_model("cnn1d", input_shape=ds.input_shape, num_classes=10, mean=ds.mean, std=ds.std)


def plain(ds, epochs):
    model = fresh(ds).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)
    loader = DataLoader(TensorDataset(ds.x_train, ds.y_train), batch_size=128, shuffle=True)
    t = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t


def ours(ds, epochs):
    model = fresh(ds)
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, weight_decay=5e-3, schedule="constant")
    t = time.perf_counter()
    train(model, ds.x_train, ds.y_train, cfg, progress=False)
    return time.perf_counter() - t


def cnn2d_formats(batches: int, repeats: int) -> None:
    """Samples/s of cnn2d training, feature extraction and PGD steps, contiguous vs channels_last."""
    from ncbench.attacks._pgd import pgd

    torch.manual_seed(0)
    base = create_model("cnn2d", input_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.31,))
    x = torch.rand(128 * batches, 1, 28, 28)
    y = torch.randint(0, 10, (x.shape[0],))
    rows = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = copy.deepcopy(base).to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

        def train_pass():
            model.train()
            for i in range(0, x.shape[0], 128):
                loss = F.cross_entropy(model(x[i:i + 128].contiguous(memory_format=fmt)), y[i:i + 128])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        @torch.no_grad()
        def features_pass():
            model.eval()
            for i in range(0, x.shape[0], 512):
                model.features(x[i:i + 512].contiguous(memory_format=fmt))

        def attack_pass():
            model.eval()
            xs = x[:256].contiguous(memory_format=fmt)
            pgd(model, xs, y[:256], eps=0.1, norm="Linf", steps=5, alpha=0.05)

        name = "channels_last" if fmt == torch.channels_last else "contiguous"
        for what, fn, n in (("train", train_pass, x.shape[0]), ("features", features_pass, x.shape[0]),
                            ("attack (PGD-5)", attack_pass, 256)):
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            rows[(what, name)] = n / statistics.median(times)
    print(f"\ncnn2d, 1x28x28, batch 128 (features 512); medians of {repeats}")
    print(f"{'pass':<18}{'contiguous/s':>14}{'channels_last/s':>17}{'ratio':>8}")
    for what in ("train", "features", "attack (PGD-5)"):
        a, b = rows[(what, "contiguous")], rows[(what, "channels_last")]
        print(f"{what:<18}{a:>14.0f}{b:>17.0f}{b / a:>8.2f}")


#: the recipes timed by --recipes: (label, TrainConfig overrides, model-argument overrides); adv_eps is the
#: dataset's
RECIPES = [("standard (SGD)", {}, {}), ("AdamW", {"optimizer": "adamw", "lr": 1e-3}, {}),
           ("dropout 0.3", {}, {"dropout": 0.3}), ("augment", {"augment": "auto"}, {}),
           ("FGSM-RS", {"adversarial": "fgsm_rs"}, {}), ("PGD-AT, 10 steps", {"adversarial": "pgd", "adv_steps": 10}, {}),
           ("TRADES, 10 steps", {"adversarial": "trades", "adv_steps": 10}, {})]
MODELS = [("mnist1d", "cnn1d", {"channels": 8}), ("mnist1d", "cnn1d", {"channels": 16}),
          ("mnist1d", "cnn1d", {"channels": 32}), ("digits", "mlp", {"width": 256, "depth": 3})]
ADV_EPS = {"mnist1d": 0.01, "digits": 0.05}


def time_recipe(ds, arch: str, model_args: dict, recipe: dict, epochs: int) -> dict:
    """Per training epoch (epochs 2..E, from the callback times, so set-up is left out): wall seconds and this
    process's CPU seconds; and the same after the last epoch (the final robust-accuracy measurement of
    adversarial training)."""
    stamps = []
    torch.manual_seed(0)
    model = create_model(arch, input_shape=ds.input_shape, num_classes=ds.num_classes, mean=ds.mean, std=ds.std,
                         **model_args)
    cfg = TrainConfig(epochs=epochs, batch_size=128, weight_decay=5e-3, schedule="constant", **recipe)
    train(model, ds.x_train, ds.y_train, cfg, progress=False,
          callback=lambda *a: stamps.append((time.perf_counter(), time.process_time())))
    end = (time.perf_counter(), time.process_time())
    return {"wall": (stamps[-1][0] - stamps[0][0]) / (epochs - 1), "cpu": (stamps[-1][1] - stamps[0][1]) / (epochs - 1),
            "tail_cpu": end[1] - stamps[-1][1]}


def recipes(epochs: int, repeats: int) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); per training epoch: CPU seconds of this "
          f"process (with one thread, what other work on the machine changes least) and wall seconds, medians of "
          f"{repeats}; ratios to standard training of the same model in this run")
    for dataset, arch, margs in MODELS:
        ds = load_dataset(dataset)
        runs = []
        for label, over, mover in RECIPES:
            over = dict(over)
            if over.get("augment") == "auto":
                over["augment"] = "shift" if len(ds.input_shape) == 2 else "crop_flip"
                label = f"augment {over['augment']}"
            if "adversarial" in over:
                over["adv_eps"] = ADV_EPS[dataset]
            runs.append((label, over, {**margs, **mover}))
        time_recipe(ds, arch, margs, {}, 2)  # warm-up
        rows = {label: [] for label, _, _ in runs}
        for _ in range(repeats):
            for label, over, m in runs:  # in turn: a load change hits every recipe alike
                rows[label].append(time_recipe(ds, arch, m, over, epochs))

        def med(label, key):
            return statistics.median(r[key] for r in rows[label])

        base_cpu, base_wall = med(runs[0][0], "cpu"), med(runs[0][0], "wall")
        name = f"{dataset} {arch} " + ", ".join(f"{k} {v}" for k, v in margs.items())
        print(f"\n{name}: {ds.x_train.shape[0]} training points, batch 128")
        print(f"{'recipe':<20}{'CPU s/epoch':>12}{'ratio':>7}{'wall s/epoch':>14}{'ratio':>7}{'final PGD-10 (epochs)':>23}")
        for label, over, _ in runs:
            cpu, wall = med(label, "cpu"), med(label, "wall")
            tail = f"{med(label, 'tail_cpu') / base_cpu:.2f}" if "adversarial" in over else ""
            print(f"{label:<20}{cpu:>12.3f}{cpu / base_cpu:>7.2f}{wall:>14.3f}{wall / base_wall:>7.2f}{tail:>23}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cnn2d-batches", type=int, default=30, help="batches of 128 per cnn2d training pass")
    ap.add_argument("--recipes", action="store_true", help="time the training recipes against standard training")
    ap.add_argument("--recipe-epochs", type=int, default=3, help="epochs per timed run of --recipes (>= 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 with "
                                                              "--recipes, where CPU time then measures the work)")
    args = ap.parse_args()
    if args.threads or args.recipes:
        torch.set_num_threads(args.threads or 1)
    if args.recipes:
        recipes(max(2, args.recipe_epochs), args.repeats)
        return
    ds = load_dataset("mnist1d")
    n = ds.x_train.shape[0] * args.epochs
    plain(ds, 1), ours(ds, 1)  # warm-up
    tp, to = [], []
    for _ in range(args.repeats):
        tp.append(plain(ds, args.epochs))
        to.append(ours(ds, args.epochs))
    sp, so = n / statistics.median(tp), n / statistics.median(to)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MNIST-1D cnn1d, batch 128, "
          f"{args.epochs} epochs x {ds.x_train.shape[0]} samples; medians of {args.repeats}")
    print(f"{'loop':<28}{'samples/s':>12}{'ratio':>8}")
    print(f"{'plain (DataLoader)':<28}{sp:>12.0f}{1.0:>8.2f}")
    print(f"{'ncbench (tensors, index)':<28}{so:>12.0f}{so / sp:>8.2f}")
    cnn2d_formats(args.cnn2d_batches, args.repeats)


if __name__ == "__main__":
    main()
