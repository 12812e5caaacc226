"""The validation split (``dataset_args.val_size``, ``split_seed``): carved from the training data, stratified,
seeded, never overlapping training, part of the job identity."""

import numpy as np
import pytest
import torch

from ncbench._errors import InputError
from ncbench.config import build_config
from ncbench.data import load_dataset
from ncbench.identity import compute_job_id, dataset_identity


def test_no_overlap_by_index_and_the_parts_cover_the_training_split():
    # catches: a split drawn from the wrong pool (val rows that are also training rows), or rows dropped
    ds = load_dataset("digits", val_size=0.2, split_seed=3)
    full = load_dataset("digits")
    tr, va = set(ds.train_index.tolist()), set(ds.val_index.tolist())
    assert not tr & va
    assert tr | va == set(range(full.x_train.shape[0]))
    assert torch.equal(ds.x_val, full.x_train[ds.val_index]) and torch.equal(ds.x_train, full.x_train[ds.train_index])
    assert torch.equal(ds.x_test, full.x_test)  # the test split is never touched


def test_stratified_and_sized_as_asked():
    # catches: an unstratified draw (class shares drift), a count read as a fraction
    ds = load_dataset("mnist1d", val_size=500)
    assert ds.n_val == 500 and ds.x_train.shape[0] == 4000 - 500
    share_val = np.bincount(ds.y_val.numpy(), minlength=10) / 500
    share_all = np.bincount(load_dataset("mnist1d").y_train.numpy(), minlength=10) / 4000
    assert np.abs(share_val - share_all).max() < 0.01


def test_the_same_validation_set_whatever_the_training_options_and_its_labels_stay_clean():
    # catches: subsampling or label noise applied before the carve (the validation set would move between the
    # cells of an n_train / label-noise grid, and noisy validation labels would misstate held-out accuracy)
    base = load_dataset("mnist1d", val_size=800, split_seed=1)
    noisy = load_dataset("mnist1d", val_size=800, split_seed=1, n_train=1000, label_noise=0.3, subset_seed=5)
    assert torch.equal(base.val_index, noisy.val_index) and torch.equal(base.y_val, noisy.y_val)
    full = load_dataset("mnist1d")
    assert torch.equal(noisy.y_val, full.y_train[noisy.val_index])
    assert set(noisy.train_index.tolist()) <= set(base.train_index.tolist())
    assert noisy.info["n_relabelled"] == 300


def test_split_seed_moves_the_split_and_normalisation_comes_from_the_training_part():
    a = load_dataset("digits", val_size=0.25, split_seed=0)
    b = load_dataset("digits", val_size=0.25, split_seed=1)
    assert not torch.equal(a.val_index, b.val_index)
    mean = a.x_train.double().mean().item()
    assert a.mean[0] == pytest.approx(mean, rel=1e-12)  # catches: stats of the whole training split


def test_identity_holds_val_size_and_split_seed_only_when_used():
    plain = build_config({"dataset": "digits"})
    assert "val_size" not in dataset_identity(plain)["args"] and "split_seed" not in dataset_identity(plain)["args"]
    seed_only = build_config({"dataset": "digits", "dataset_args": {"split_seed": 7}})
    assert compute_job_id(seed_only) == compute_job_id(plain)  # an unused seed does not change the job
    count = build_config({"dataset": "digits", "dataset_args": {"val_size": 300}})
    count_f = build_config({"dataset": "digits", "dataset_args": {"val_size": 300.0}})
    assert compute_job_id(count) == compute_job_id(count_f) != compute_job_id(plain)
    other_seed = build_config({"dataset": "digits", "dataset_args": {"val_size": 300, "split_seed": 1}})
    assert compute_job_id(other_seed) != compute_job_id(count)


@pytest.mark.parametrize("bad", [0, 1.5, -3, 2000, "a lot"])
def test_bad_val_size_is_refused_naming_the_option(bad):
    with pytest.raises(InputError, match="val_size"):
        load_dataset("digits", val_size=bad)
