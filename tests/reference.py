"""An independent, deliberately plain reference for the collapse metrics (notebook style, numpy only).

Two passes over the data, explicit D x D covariances, and an explicit truncated pseudo-inverse of Sigma_B.
Written from spec/nc-metrics.md without looking at ncbench.collapse.
"""

import itertools

import numpy as np


def reference_metrics(h, y, W=None, b=None, global_mean="classes", ref_means=None):
    h = np.asarray(h, dtype=np.float64)
    y = np.asarray(y)
    C = int(y.max()) + 1 if W is None else W.shape[0]
    N, D = h.shape
    mu = np.stack([h[y == c].mean(axis=0) for c in range(C)])
    if global_mean == "classes":
        mu_g = mu.mean(axis=0)
    else:
        mu_g = h.mean(axis=0)
    Mt = mu - mu_g
    Sw = np.zeros((D, D))
    for i in range(N):
        z = h[i] - mu[y[i]]
        Sw += np.outer(z, z)
    Sw /= N
    Sb = Mt.T @ Mt / C
    lam, vec = np.linalg.eigh(Sb)
    cut = lam.max() * max(C, D) * np.finfo(np.float64).eps  # eigh of a DxD matrix: noise ~ eps * lambda_max
    inv = np.where(lam > cut, 1.0 / np.where(lam > cut, lam, 1.0), 0.0)
    Sb_pinv = (vec * inv) @ vec.T
    out = {"nc1": np.trace(Sw @ Sb_pinv) / C, "nc1_quotient": np.trace(Sw) / np.trace(Sb)}
    sig2 = np.array([((h[y == c] - mu[c]) ** 2).sum(1).mean() for c in range(C)])
    pairs = list(itertools.combinations(range(C), 2))
    out["cdnv"] = np.mean([(sig2[a] + sig2[c]) / (2 * np.sum((mu[a] - mu[c]) ** 2)) for a, c in pairs])

    def nc2(rows, tag):
        norms = np.linalg.norm(rows, axis=1)
        out[f"nc2_equinorm_{tag}"] = np.std(norms, ddof=1) / np.mean(norms)
        cos = np.array([rows[a] @ rows[c] / (norms[a] * norms[c]) for a, c in pairs])
        # the authors' code behind PNAS Fig. 3: every off-diagonal entry of the full cosine matrix
        cos_matrix = (rows / norms[:, None]) @ (rows / norms[:, None]).T
        out[f"nc2_equiangle_{tag}"] = np.std(cos_matrix[~np.eye(C, dtype=bool)], ddof=1)
        out[f"nc2_maxangle_{tag}"] = np.mean(np.abs(cos + 1 / (C - 1)))

    nc2(Mt, "means")
    G = Mt @ Mt.T
    out["nc2_etf_error_means"] = np.linalg.norm(G / np.linalg.norm(G) - (np.eye(C) - 1 / C) / np.sqrt(C - 1))
    centres = mu if ref_means is None else ref_means
    dists = ((h[:, None, :] - centres[None]) ** 2).sum(-1)
    ncc = dists.argmin(1)
    out["ncc_accuracy"] = np.mean(ncc == y)
    if W is not None:
        nc2(W, "classifier")
        out["nc3_duality"] = np.linalg.norm(W / np.linalg.norm(W) - Mt / np.linalg.norm(Mt)) ** 2
        out["nc4_ncc_mismatch"] = np.mean(ncc != (h @ W.T + b).argmax(1))
    return out


def exact_ridge(h, y, num_classes, weight_decay=0.0):
    """[W_LS b_LS] (C, D+1) of the ridge problem behind ls_gap, in exact rational arithmetic (no rounding at all).

    Solves the normal equations (X^T X + N lambda I) Theta^T = X^T Y, X = [h 1], Y one-hot, by Gauss-Jordan
    elimination on Fractions built from the float64 inputs exactly. Needs X of full column rank when
    lambda = 0 (then the least-squares solution is unique, so also the minimum-norm one). For small
    problems only (cost O(N D^2) big-rational operations): the test of ls_gap at offsets of 1e9, where every
    float64 solver of the augmented problem (lstsq, QR) is off by orders of magnitude.
    """
    from fractions import Fraction

    h = np.asarray(h, dtype=np.float64)
    n, d = h.shape
    x = [[Fraction(float(v)) for v in row] + [Fraction(1)] for row in h]
    lam = Fraction(float(weight_decay)) * n
    a = [[sum((x[i][j] * x[i][k] for i in range(n)), Fraction(0)) + (lam if j == k else 0) for k in range(d + 1)]
         + [sum((x[i][j] for i in range(n) if y[i] == c), Fraction(0)) for c in range(num_classes)]
         for j in range(d + 1)]
    m = d + 1
    for col in range(m):  # Gauss-Jordan with exact pivots
        piv = next(r for r in range(col, m) if a[r][col] != 0)
        a[col], a[piv] = a[piv], a[col]
        p = a[col][col]
        a[col] = [v / p for v in a[col]]
        for r in range(m):
            if r != col and a[r][col] != 0:
                f = a[r][col]
                a[r] = [v - f * w for v, w in zip(a[r], a[col])]
    return np.array([[float(a[j][m + c]) for j in range(m)] for c in range(num_classes)])
