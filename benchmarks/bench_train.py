"""Training throughput of the MNIST-1D CNN: ncbench's loop against a plain PyTorch loop with a DataLoader.

    python benchmarks/bench_train.py [--epochs 5] [--repeats 3]

Both train the same model (cnn1d, fresh from the same seed) with the same SGD settings and batch size 128
for --epochs epochs on the 4000 MNIST-1D training samples, on the CPU.
- plain: ``DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)`` (default: no worker processes),
  the usual zero_grad / forward / backward / step loop.
- ncbench: ``ncbench.train.train`` — data held as tensors, batches drawn by index from one permutation per
  epoch. Its time includes the eval-mode train-accuracy pass it runs after every epoch (which the plain loop
  does not do), so the ratio understates the loop's own speed-up.
Throughput = training samples per second; medians of --repeats, the two run in turn. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
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


if __name__ == "__main__":
    main()
