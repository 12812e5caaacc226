"""Time ncbench's collapse metrics against a notebook-style reference and against a floor.

    python benchmarks/bench_collapse.py            # N = 50,000; (D, C) = (512, 10), (512, 100), (2048, 10)
    python benchmarks/bench_collapse.py --quick    # N = 5,000, for a smoke run

- ncbench: ``collapse_metrics(train, weight=W, bias=b, ls_gap=False)``, every train metric but ``ls_gap``
  (ls_gap is a least-squares fit costing O(N D^2); timed on its own line).
- notebook: the authors' notebook style — class means, then Sigma_W summed from per-sample outer products
  (B x D x D per class and loader batch of 128), an explicit pseudo-inverse of the D x D Sigma_B, and
  nc1 = Tr(Sigma_W Sigma_B^+) / C. Its Sigma_W loop is linear in N and slow, so it is timed on a subsample
  (n_sub, printed) and scaled to N; the pinv is counted once.
- two-pass: a careful plain reference (Sigma_W from per-class Z_c^T Z_c products, explicit pinv): what a
  good hand-written implementation costs, for context.
- nc1 rel.diff: the larger relative difference of ncbench's nc1 from the notebook's (on the subsample) and
  from the two-pass reference (on all N).
- floor: one pass over the features (the float64 conversion) plus one N x D x C matrix product.

Features are float32 (as a model gives them); everything is computed in float64. Median of --repeats runs.
Prints the ratios notebook/ncbench (goal >= 20) and ncbench/floor (goal <= 3).

Per-layer collapse (second table): ``layer_collapse`` on the 32x16x16 = 8,192-wide batch-norm output of a
small conv model, N train + N/4 test inputs, against the two routes it replaces, measured in the same run:

- projected (0.2's route): ``layer_outputs(max_dim=4096)`` (one forward pass, every batch multiplied by a
  seeded 8,192 x 4,096 Gaussian map, N x 4,096 stored) and ``collapse_metrics`` on the projection;
- stored: ``layer_outputs`` at full width (N x 8,192 float64 stored) and ``collapse_metrics`` on it: exact,
  but its memory grows with N D.

ncbench's route reads each split twice (class means, then projections onto the span of the means) and holds
O(C D) per layer. nc1 rel.err: relative difference of each route's train nc1 from the stored (exact) one.
Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ncbench.collapse import collapse_metrics, layer_collapse
from ncbench.features import layer_outputs


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def notebook_sw(h, y, means, batch=128):
    """Sum of per-sample outer products, per class, per loader batch: the authors' notebook loop."""
    d = h.shape[1]
    sw = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, h.shape[0], batch):
        hb, yb = h[i:i + batch].double(), y[i:i + batch]
        for c in range(means.shape[0]):
            z = hb[yb == c] - means[c].unsqueeze(0)
            cov = torch.matmul(z.unsqueeze(-1), z.unsqueeze(1))  # B x D x D
            sw += torch.sum(cov, dim=0)
    return sw


def _pinv_nc1(sw, means, C):
    mt = means - means.mean(0)
    sb = mt.T @ mt / C
    return float(torch.trace(sw @ torch.linalg.pinv(sb)) / C)


def notebook(h, y, C, n_total):
    """Notebook-style nc1 of (h, y). Returns (seconds scaled to n_total samples, nc1 of (h, y)).

    Everything but the D x D pseudo-inverse is linear in N, so those parts are scaled by n_total / len(h);
    the pinv and trace are counted once."""
    t0 = time.perf_counter()
    h64 = h.double()
    means = torch.stack([h64[y == c].mean(0) for c in range(C)])
    sw = notebook_sw(h, y, means) / h.shape[0]
    t_linear = time.perf_counter() - t0
    t0 = time.perf_counter()
    nc1 = _pinv_nc1(sw, means, C)
    t_inv = time.perf_counter() - t0
    return t_linear * n_total / h.shape[0] + t_inv, nc1


def two_pass(h, y, C):
    """A careful plain reference: Sigma_W from per-class Z_c^T Z_c (BLAS), explicit pinv of Sigma_B."""
    h64 = h.double()
    means = torch.stack([h64[y == c].mean(0) for c in range(C)])
    sw = torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64)
    for c in range(C):
        z = h64[y == c] - means[c]
        sw += z.T @ z
    return _pinv_nc1(sw / h.shape[0], means, C)


def floor(h, w):
    h64 = h.double()
    return h64 @ w.T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n = 5000 if args.quick else 50_000
    cases = [(512, 10), (512, 100), (2048, 10)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N = {n}, float32 features, float64 maths")
    print(f"{'D':>5} {'C':>4} {'n_sub':>6} {'ncbench s':>10} {'notebook s':>11} {'two-pass s':>10} {'floor s':>8} "
          f"{'ls_gap s':>9} {'notebook/ncbench':>17} {'two-pass/ncbench':>17} {'ncbench/floor':>14} "
          f"{'nc1 rel.diff':>13}")
    for d, c in cases:
        g = torch.Generator().manual_seed(0)
        mu = 3 * torch.randn(c, d, generator=g)
        y = torch.arange(n) % c
        h = (mu[y] + torch.randn(n, d, generator=g)).float()
        w = torch.randn(c, d, generator=g).double()
        b = torch.zeros(c, dtype=torch.float64)
        t_nc, out = timed(lambda: collapse_metrics((h, y), weight=w, bias=b, ls_gap=False), args.repeats)
        n_sub = min(n, max(1000, (10_000 * 512 * 512) // (d * d)))
        t_nb, nc1_nb = notebook(h[:n_sub], y[:n_sub], c, n)
        nc1_sub = collapse_metrics((h[:n_sub], y[:n_sub]))["train"]["nc1"]
        t_tp, nc1_tp = timed(lambda: two_pass(h, y, c), args.repeats)
        t_fl, _ = timed(lambda: floor(h, w), args.repeats)
        t_ls, _ = timed(lambda: collapse_metrics((h, y), weight=w, bias=b, weight_decay=5e-4), 1)
        rel = max(abs(nc1_sub - nc1_nb) / nc1_nb, abs(out["train"]["nc1"] - nc1_tp) / nc1_tp)
        print(f"{d:>5} {c:>4} {n_sub:>6} {t_nc:>10.3f} {t_nb:>11.2f} {t_tp:>10.3f} {t_fl:>8.3f} {t_ls:>9.3f} "
              f"{t_nb / t_nc:>17.1f} {t_tp / t_nc:>17.1f} {t_nc / t_fl:>14.2f} {rel:>13.1e}")
    layers_table(500 if args.quick else 2000, args.repeats)


def conv_bn_model(seed=0):
    """Conv(3 -> 32, 3x3) -> BatchNorm2d(32) -> ReLU -> pool -> Linear(32, 10), eval mode, with non-trivial
    running statistics: layer "1" outputs 32 x 16 x 16 = 8,192 values per 16 x 16 input."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10)).eval()
    model[1].running_mean.normal_(generator=g)
    model[1].running_var.uniform_(0.5, 2.0, generator=g)
    return model


def layers_table(n: int, repeats: int) -> None:
    model = conv_bn_model()
    g = torch.Generator().manual_seed(1)
    templates = torch.randn(10, 3, 16, 16, generator=g)
    y, yt = torch.arange(n) % 10, torch.arange(n // 4) % 10
    x = templates[y] + 1.5 * torch.randn(n, 3, 16, 16, generator=g)
    xt = templates[yt] + 1.5 * torch.randn(n // 4, 3, 16, 16, generator=g)

    def via_outputs(max_dim):
        proj: dict = {}
        tr = layer_outputs(model, x, ["1"], max_dim=max_dim, projections=proj)["1"]
        te = layer_outputs(model, xt, ["1"], max_dim=max_dim, projections=proj)["1"]
        return collapse_metrics((tr, y), (te, yt), ls_gap=False)

    t_new, new = timed(lambda: layer_collapse(model, (x, y), (xt, yt), layers=["1"]), repeats)
    t_proj, proj = timed(lambda: via_outputs(4096), repeats)
    t_full, full = timed(lambda: via_outputs(10**9), repeats)
    exact = full["train"]["nc1"]
    d = new["1"]["dim"]
    print(f"\nper-layer collapse, D = {d} (32x16x16 batch norm), N = {n} train + {n // 4} test inputs")
    print(f"{'route':>10} {'seconds':>8} {'ratio to ncbench':>17} {'held per layer':>24} {'train nc1':>10} "
          f"{'nc1 rel.err':>12}")
    rows = [("ncbench", t_new, new["1"]["train"]["nc1"], "O(C D)"),
            ("projected", t_proj, proj["train"]["nc1"], "D x 4096 + N x 4096"),
            ("stored", t_full, exact, "N x D")]
    for name, t, nc1, held in rows:
        print(f"{name:>10} {t:>8.3f} {t / t_new:>17.2f} {held:>24} {nc1:>10.4f} {abs(nc1 - exact) / exact:>12.1e}")


if __name__ == "__main__":
    main()
