"""Datasets: a registry of loaders, each returning train/test tensors with inputs in [0, 1].

Every loader returns a :class:`Dataset`. Inputs are scaled to [0, 1] (attack budgets are in that scale); the
dataset *declares* the per-channel mean and std that the model applies inside itself (RobustBench style), so
attacks and collapse measurement see the same function.

>>> ds = load_dataset("digits")
>>> ds.x_train.shape[1:], ds.num_classes, float(ds.x_train.min()) >= 0.0
((1, 8, 8), 10, True)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ._errors import InputError
from ._registry import Registry

DATASETS: Registry = Registry("dataset")
#: loader arguments that say where files live and whether torchvision may fetch them: never which data
LOCATION_ARGS = ("data_dir", "download")
#: options of every dataset that change only the *training* set (the test split is never touched): the
#: validation split is carved out of the training data too
TRAINING_SET_ARGS = ("n_per_class", "n_train", "label_noise", "subset_seed", "val_size", "split_seed")


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one dataset.

    x_* : float32 (N, channels, *spatial), values in [0, 1].  y_* : int64 (N,) in 0..C-1.
    mean, std : per-channel normalisation the model should apply, computed on the scaled train inputs.
    info : how the data was made (generator arguments, split seed), recorded in provenance.
    x_val, y_val : the validation split carved out of the training data (``val_size``), or None. The model
        never trains on it; its labels are clean (label noise touches the training part only).
    train_index, val_index : int64 positions of the training and validation samples in the loader's own
        training split (None when the training split is used whole and in order).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict = field(default_factory=dict)
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    train_index: torch.Tensor | None = None
    val_index: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    def describe(self) -> dict:
        return {
            "name": self.name, "n_train": int(self.x_train.shape[0]), "n_val": self.n_val,
            "n_test": int(self.x_test.shape[0]), "num_classes": self.num_classes,
            "input_shape": list(self.input_shape), **self.info,
        }


def register_dataset(name: str):
    return DATASETS.register(name)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def load_dataset(name: str, *, n_per_class: int | None = None, n_train: int | None = None,
                 label_noise: float = 0.0, subset_seed: int = 0, val_size: float | None = None,
                 split_seed: int = 0, **kwargs) -> Dataset:
    """Load dataset ``name`` (see :func:`list_datasets`); other keyword options depend on the dataset.

    Options for every dataset, applied to the train split in this order. First ``val_size`` (a fraction in
    (0, 1), or a count >= 1) carves a stratified validation split out of the loader's training data (seeded
    by ``split_seed``, with scikit-learn's ``train_test_split``): the model never trains on it, and it is the
    same set of samples whatever the options below. Then, on the rest (seeded by ``subset_seed``):
    ``n_per_class`` keeps a balanced random subset of n training samples per class (as the papers did);
    ``n_train`` keeps a random subset of that many training samples; ``label_noise`` replaces the label of that
    fraction of training samples by a different class drawn uniformly (the record counts them; validation
    labels stay clean). The test split is never changed.

    A process keeps the last two loaded datasets (generating MNIST-1D takes about a second; a sweep worker runs
    many jobs on one dataset). The returned tensors are shared between callers: treat them as read-only.
    """
    DATASETS.get(name)  # an unknown name fails here, listing the valid ones
    try:
        key = tuple(sorted(kwargs.items()))
        hash(key)
    except TypeError:  # an unhashable argument: load without the cache
        ds = _load(name, kwargs)
    else:
        ds = _load_cached(name, key)
    if val_size is not None:
        ds = carve_validation(ds, val_size, seed=split_seed)
    if n_per_class is None and n_train is None and not label_noise:
        return ds
    return subsample(ds, n_per_class=n_per_class, n_train=n_train, label_noise=label_noise, seed=subset_seed)


def _load(name: str, kwargs: dict) -> Dataset:
    loader = DATASETS.get(name)
    try:
        return loader(**kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise InputError(f"dataset {name!r}: {err}") from None
        raise


@functools.lru_cache(maxsize=2)
def _load_cached(name: str, key: tuple) -> Dataset:
    return _load(name, dict(key))


def canonical_val_size(val_size) -> float | int:
    """``val_size`` as a fraction in (0, 1) (float) or a count >= 1 (int); 1000 and 1000.0 are one count."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise InputError(f"dataset_args.val_size must be a fraction in (0, 1) or a count >= 1; got {val_size!r}")
    if 0 < val_size < 1:
        return float(val_size)
    if val_size >= 1 and float(val_size).is_integer():
        return int(val_size)
    raise InputError(f"dataset_args.val_size must be a fraction in (0, 1) or a whole count >= 1; got {val_size!r}")


def carve_validation(ds: Dataset, val_size, *, seed: int = 0) -> Dataset:
    """Split ``ds``'s training data into a training and a stratified validation part (see :func:`load_dataset`).

    The normalisation (``mean``, ``std``) is recomputed on the training part. ``train_index`` and ``val_index``
    say where each sample sat in ``ds``'s training split."""
    from sklearn.model_selection import train_test_split

    size = canonical_val_size(val_size)
    n = int(ds.x_train.shape[0])
    y = ds.y_train.numpy()
    counts = np.bincount(y, minlength=ds.num_classes)
    n_val = size if isinstance(size, int) else int(np.ceil(size * n))
    if n_val < ds.num_classes or n - n_val < ds.num_classes:
        raise InputError(f"dataset_args.val_size = {val_size!r} leaves {n_val} validation and {n - n_val} training "
                         f"samples of {n}; each part needs at least one sample of each of the {ds.num_classes} "
                         "classes")
    if int(counts.min()) < 2:
        raise InputError(f"dataset_args.val_size: class {int(counts.argmin())} of {ds.name!r} has "
                         f"{int(counts.min())} training sample(s); a stratified split needs 2 of each class")
    tr_idx, val_idx = train_test_split(np.arange(n), test_size=size, random_state=int(seed), stratify=y)
    tr_idx, val_idx = torch.from_numpy(np.sort(tr_idx)), torch.from_numpy(np.sort(val_idx))
    x, yt = ds.x_train[tr_idx], ds.y_train[tr_idx]
    mean, std = channel_stats(x)
    info = {**ds.info, "val_size": size, "val_split_seed": int(seed), "n_val": int(val_idx.numel())}
    return replace(ds, x_train=x, y_train=yt, mean=mean, std=std, info=info, x_val=ds.x_train[val_idx],
                   y_val=ds.y_train[val_idx], train_index=tr_idx, val_index=val_idx)


def subsample(ds: Dataset, *, n_per_class=None, n_train=None, label_noise=0.0, seed=0) -> Dataset:
    """Balanced subsampling, train-set size and label noise on the train split (see :func:`load_dataset`)."""
    g = torch.Generator().manual_seed(int(seed))
    x, y = ds.x_train, ds.y_train
    index = ds.train_index if ds.train_index is not None else torch.arange(x.shape[0])
    info = dict(ds.info)
    if n_per_class is not None:
        counts = torch.bincount(y, minlength=ds.num_classes)
        if n_per_class < 1 or int(counts.min()) < n_per_class:
            raise InputError(f"n_per_class must be in 1..{int(counts.min())} (the rarest class of {ds.name!r} has "
                             f"{int(counts.min())} training samples); got {n_per_class}")
        keep = torch.cat([(y == c).nonzero().flatten()[torch.randperm(int(counts[c]), generator=g)[:n_per_class]]
                          for c in range(ds.num_classes)]).sort().values
        x, y, index = x[keep], y[keep], index[keep]
        info["n_per_class"] = int(n_per_class)
    if n_train is not None:
        if not 1 <= n_train <= x.shape[0]:
            raise InputError(f"n_train must be in 1..{x.shape[0]}; got {n_train}")
        keep = torch.randperm(x.shape[0], generator=g)[:n_train].sort().values
        x, y, index = x[keep], y[keep], index[keep]
        info["n_train_subset"] = int(n_train)
    if label_noise:
        if not 0.0 <= label_noise <= 1.0:
            raise InputError(f"label_noise must be a fraction in [0, 1]; got {label_noise}")
        n_noisy = int(round(label_noise * x.shape[0]))
        which = torch.randperm(x.shape[0], generator=g)[:n_noisy]
        shift = torch.randint(1, ds.num_classes, (n_noisy,), generator=g)
        y = y.clone()
        y[which] = (y[which] + shift) % ds.num_classes  # always a different class
        info["label_noise"] = float(label_noise)
        info["n_relabelled"] = n_noisy
    missing = (torch.bincount(y, minlength=ds.num_classes) == 0).nonzero().flatten().tolist()
    if missing:
        raise InputError(f"after subsampling, class(es) {missing[:10]} have no training sample; keep more data")
    info["subset_seed"] = int(seed)
    mean, std = channel_stats(x)
    return replace(ds, x_train=x, y_train=y, mean=mean, std=std, info=info, train_index=index)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, channels, ...) inputs, in float64."""
    dims = [0] + list(range(2, x.ndim))
    x64 = x.to(torch.float64)
    mean = x64.mean(dim=dims)
    std = x64.std(dim=dims).clamp_min(1e-12)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _finish(name, x_tr, y_tr, x_te, y_te, num_classes, info) -> Dataset:
    x_tr = torch.as_tensor(x_tr, dtype=torch.float32).contiguous()
    x_te = torch.as_tensor(x_te, dtype=torch.float32).contiguous()
    for split, x in (("train", x_tr), ("test", x_te)):
        if not (float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
            raise AssertionError(f"{name}: {split} inputs left [0,1]: a loader bug")
    mean, std = channel_stats(x_tr)
    return Dataset(name, x_tr, torch.as_tensor(y_tr, dtype=torch.int64), x_te,
                   torch.as_tensor(y_te, dtype=torch.int64), num_classes, mean, std, info)


@register_dataset("mnist1d")
def mnist1d(*, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated by ``mnist1d.data.make_dataset`` (never downloaded).

    The defaults give the standard 4000 train / 1000 test split of seed 42. The generator standardises the
    signals; ncbench maps them to [0, 1] with the min and max over all generated samples (a fixed affine map of
    the fixed dataset, so no value is clipped). Inputs have shape (1, 40).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = int(num_samples), float(train_split), int(seed)
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator; leave it as we found it
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(state)
    lo = min(raw["x"].min(), raw["x_test"].min())
    hi = max(raw["x"].max(), raw["x_test"].max())
    scale = lambda a: ((a - lo) / (hi - lo))[:, None, :]  # noqa: E731
    info = {"generator": "mnist1d.data.make_dataset", "num_samples": int(num_samples),
            "train_split": float(train_split), "seed": int(seed)}
    return _finish("mnist1d", scale(raw["x"]), raw["y"], scale(raw["x_test"]), raw["y_test"], 10, info)


@register_dataset("digits")
def digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16 scaled by 1/16), with a fixed seeded
    stratified split (default 1347 train / 450 test). Inputs have shape (1, 8, 8)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < float(test_fraction) < 1.0:
        raise InputError(f"test_fraction must be in (0, 1); got {test_fraction}")
    bunch = load_digits()
    x = (bunch.images / 16.0)[:, None, :, :]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=float(test_fraction), random_state=int(seed), stratify=bunch.target)
    info = {"source": "sklearn.datasets.load_digits", "test_fraction": float(test_fraction), "split_seed": int(seed)}
    return _finish("digits", x_tr, y_tr, x_te, y_te, 10, info)


@register_dataset("gaussian")
def gaussian(*, num_classes: int = 10, dim: int = 32, n_train: int = 2000, n_test: int = 1000,
             separation: float = 3.0, seed: int = 0) -> Dataset:
    """A seeded Gaussian mixture: C class means drawn on the sphere of radius ``separation`` in R^dim, unit
    isotropic noise, balanced classes. Mapped to [0, 1] by the min and max over all generated samples.
    Inputs have shape (dim,). Larger ``separation`` means easier classes."""
    if num_classes < 2 or dim < 1 or n_train < num_classes or n_test < num_classes or separation < 0:
        raise InputError("gaussian needs num_classes >= 2, dim >= 1, n_train and n_test >= num_classes and "
                         "separation >= 0")
    rng = np.random.default_rng(int(seed))
    mu = rng.standard_normal((num_classes, dim))
    mu *= separation / np.linalg.norm(mu, axis=1, keepdims=True)

    def draw(n):
        y = np.arange(n) % num_classes
        rng.shuffle(y)
        return mu[y] + rng.standard_normal((n, dim)), y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    lo, hi = min(x_tr.min(), x_te.min()), max(x_tr.max(), x_te.max())
    info = {"num_classes": num_classes, "dim": dim, "separation": float(separation), "seed": int(seed)}
    return _finish("gaussian", (x_tr - lo) / (hi - lo), y_tr, (x_te - lo) / (hi - lo), y_te, num_classes, info)


# ----------------------------------------------------------------------------------------- torchvision

def _data_root(data_dir) -> str:
    import os

    return str(data_dir) if data_dir is not None else os.environ.get("NCBENCH_DATA", os.path.expanduser("~/.cache/ncbench/data"))


def _torchvision(name, cls_name, num_classes, *, data_dir, download, split_kw):
    """Load both splits through torchvision's own download code and file readers; uint8 -> [0, 1]."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _data_root(data_dir)
    splits = []
    for train in (True, False):
        kw = {"train": train} if split_kw == "train" else {"split": "train" if train else "test"}
        try:
            obj = cls(root=root, download=download, **kw)
        except RuntimeError as err:
            archives = [] if download else _archives(root, cls_name)
            if archives:
                shown = ", ".join(str(p) for p in archives[:4]) + (" ..." if len(archives) > 4 else "")
                raise InputError(f"dataset {name!r}: its compressed files are under {root} ({shown}) but not "
                                 "extracted; pass download=True (--download): torchvision then finds them, checks "
                                 "their checksums and extracts them without downloading again") from None
            hint = "" if download else " (pass download=True, or --download, to fetch it)"
            raise InputError(f"dataset {name!r} not found under {root}: {err}{hint}") from None
        data = obj.data if isinstance(obj.data, np.ndarray) else obj.data.numpy()
        labels = np.asarray(getattr(obj, "targets", None) if hasattr(obj, "targets") else obj.labels)
        if data.ndim == 3:  # (N, H, W) grey
            data = data[:, None]
        elif data.shape[-1] == 3 and data.shape[1] != 3:  # (N, H, W, 3) -> (N, 3, H, W)
            data = data.transpose(0, 3, 1, 2)
        splits += [torch.from_numpy(np.ascontiguousarray(data)).float().div_(255.0),
                   torch.from_numpy(labels.astype(np.int64))]
    info = {"source": f"torchvision.datasets.{cls_name}", "root": root}
    return _finish(name, splits[0], splits[1], splits[2], splits[3], num_classes, info)


def _archives(root: str, cls_name: str) -> list:
    """Downloaded but unextracted files of a torchvision dataset: ``*.gz`` (``*.tar.gz`` too), ``*.tgz`` and
    ``*.zip`` archives in the root, its class folder and the class folder's ``raw`` (torchvision's layouts)."""
    from pathlib import Path

    found = []
    for folder in (Path(root), Path(root) / cls_name, Path(root) / cls_name / "raw"):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".gz", ".zip", ".tgz")))
    return found


def _register_torchvision(name, cls_name, num_classes, split_kw="train"):
    def loader(*, data_dir: str | None = None, download: bool = False) -> Dataset:
        return _torchvision(name, cls_name, num_classes, data_dir=data_dir, download=download, split_kw=split_kw)

    loader.__doc__ = (f"torchvision's {cls_name} ({num_classes} classes) from ``data_dir`` (default "
                      f"$NCBENCH_DATA or ~/.cache/ncbench/data); ``download=True`` fetches it with torchvision.")
    register_dataset(name)(loader)


for _name, _cls, _c, _split in [("mnist", "MNIST", 10, "train"), ("fashion_mnist", "FashionMNIST", 10, "train"),
                                ("kmnist", "KMNIST", 10, "train"), ("cifar10", "CIFAR10", 10, "train"),
                                ("cifar100", "CIFAR100", 100, "train"), ("svhn", "SVHN", 10, "split"),
                                ("stl10", "STL10", 10, "split")]:
    _register_torchvision(_name, _cls, _c, _split)
