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
