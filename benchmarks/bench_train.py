"""Training throughput: ncbench's loop against a plain PyTorch loop with a DataLoader (MNIST-1D CNN), and the
2-D CNN in contiguous against channels_last memory format (what ncbench uses for 2-D convolutions).

    python benchmarks/bench_train.py [--epochs 5] [--repeats 3] [--cnn2d-batches 30]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cnn2d-batches", type=int, default=30, help="batches of 128 per cnn2d training pass")
    args = ap.parse_args()
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
