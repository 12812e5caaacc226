"""PGD-Linf (20 steps) on the default MNIST-1D CNN over the full test set: a plain torchattacks loop vs ncbench.

    python benchmarks/bench_attacks.py [--eps 0.01,0.02] [--repeats 3]

- plain: ``torchattacks.PGD`` over every test point in batches of 128 (random start, alpha = 2.5 eps / 20),
  robust accuracy from the final iterate, as most papers compute it.
- ncbench: ``robustness_curve`` with the same attack: only correctly classified points, batches of 1000,
  frozen parameters, and each point dropped from the batch once it is fooled.

The random starts differ: the plain loop draws torchattacks' stream after ``torch.manual_seed``, ncbench draws
each point's start from its position and the job's seed (docs/attacks.md, "Seeding"), so the two accuracies
agree within the spread of the random start, not exactly (tests/test_attacks.py checks the iterates from one
start). ncbench counts a point as fooled if any iterate fools it; the plain loop's accuracy is printed both
ways (final iterate, and any iterate — measured in a separate untimed pass with a wrapper that records every
forward). Times are medians of --repeats runs on this machine. Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from ncbench.attacks import AttackConfig, robustness_curve
from ncbench.config import build_config
from ncbench.evaluate import prepare

STEPS, BATCH, SEED = 20, 128, 0


class Tracker(nn.Module):
    """Records, per point of the current batch, whether any forward so far misclassified it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.y, self.ever = model, None, None

    def forward(self, x):
        out = self.model(x)
        self.ever |= out.argmax(1) != self.y
        return out


def plain_loop(model, x, y, eps, track=False):
    import torchattacks

    net = Tracker(model).eval() if track else model
    torch.manual_seed(SEED)
    robust_final, robust_any = [], []
    for i in range(0, len(y), BATCH):
        xb, yb = x[i:i + BATCH], y[i:i + BATCH]
        if track:
            net.y, net.ever = yb, torch.zeros(len(yb), dtype=torch.bool)
        adv = torchattacks.PGD(net, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS, random_start=True)(xb, yb)
        with torch.no_grad():
            final = net(adv).argmax(1) == yb
            robust_final.append(final)
            if track:
                net.ever |= model(xb).argmax(1) != yb
                robust_any.append(~net.ever)
    acc = lambda parts: int(torch.cat(parts).sum()) / len(y)  # noqa: E731
    return acc(robust_final), (acc(robust_any) if track else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eps", default="0.01,0.02,0.03,0.04")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ds, model, _, _, _ = prepare(build_config(None, device="cpu"), progress=False)
    model.eval()
    x, y = ds.x_test, ds.y_test
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum()) / len(y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MNIST-1D CNN, {len(y)} test points, "
          f"clean accuracy {clean:.4f}; PGD-Linf {STEPS} steps; medians of {args.repeats}")
    print(f"{'eps':>6} {'plain s':>8} {'ncbench s':>10} {'speed-up':>9} {'plain acc (final)':>18} "
          f"{'plain acc (any)':>16} {'ncbench acc':>12} {'clean - robust':>15}")
    for eps in (float(e) for e in args.eps.split(",")):
        t_plain, t_ours = [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine speed hits both alike
            t = time.perf_counter()
            final, _ = plain_loop(model, x, y, eps)
            t_plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours = robustness_curve(model, x, y, AttackConfig(eps=(eps,), steps=STEPS), seed=SEED, progress=False)
            t_ours.append(time.perf_counter() - t)
        _, any_acc = plain_loop(model, x, y, eps, track=True)
        r = ours["curve"][0]["robust_accuracy"]
        tp, to = statistics.median(t_plain), statistics.median(t_ours)
        print(f"{eps:>6g} {tp:>8.2f} {to:>10.2f} {tp / to:>8.2f}x {final:>18.4f} {any_acc:>16.4f} {r:>12.4f} "
              f"{clean - r:>15.4f}")


if __name__ == "__main__":
    main()
