"""One identity per computation (provenance.job_id), in both directions, and the records built on it."""

import json

import pytest
import torch

from ncbench.config import DATASET_DEFAULTS, build_config
from ncbench.identity import compute_job_id, identity

DIGITS = {"dataset": "digits", "model_args": {"width": 32, "depth": 1}, "train": {"epochs": 3},
          "attack": {"eps": [0.0, 0.1], "steps": 3, "n_points": 60}, "collapse_epochs": 0}


def job(raw=None, **overrides):
    return compute_job_id(build_config({**DIGITS, **(raw or {})}, **overrides))


def with_attack(**attack):
    return {"attack": {**DIGITS["attack"], **attack}}


# ------------------------------------------------------------------- the same computation, the same id

@pytest.mark.parametrize("a,b", [
    ({}, {"data_dir": "/somewhere/else"}),  # where files live
    ({}, {"download": True}),
    ({}, {"device": "cpu", "threads": 1}),  # the device and thread count are environment facts
    ({}, {"output": "elsewhere"}),
    ({"train": {"epochs": 3, "loss": "ce", "label_smoothing": 0.1}},
     {"train": {"epochs": 3, "loss": "ce", "label_smoothing": 0.3}}),  # unused under cross-entropy
    ({"train": {"epochs": 30, "milestones": [1 / 3, 2 / 3]}},
     {"train": {"epochs": 30, "milestones": [10, 20]}}),  # the same epochs, written two ways
    ({"train": {"epochs": 3, "schedule": "cosine", "milestones": [0.5]}},
     {"train": {"epochs": 3, "schedule": "cosine"}}),  # milestones unused by the cosine schedule
    ({"train": {"epochs": 3, "amp": False}}, {}),  # 0.1's flag, off: fp32 as the default
    (with_attack(eps=[0.0, "8/255"]), with_attack(eps=[0, 0.0313725490196])),  # one budget, two spellings
    (with_attack(batch_size=7), with_attack(batch_size=1000)),  # PGD attacks each point on its own
    # AutoAttack's components are seeded per point position (fixed chunks), not per batch: one job, one result
    (with_attack(name="autoattack", batch_size=50), with_attack(name="autoattack", batch_size=60)),
    # one setting, written as an int or a float, or as YAML reads 5e-4 (a string): one type after coercion
    ({"train": {"epochs": 3, "weight_decay": 0}}, {"train": {"epochs": 3, "weight_decay": 0.0}}),
    ({"train": {"epochs": 3, "lr": 1}}, {"train": {"epochs": 3, "lr": 1.0}}),
    ({"train": {"epochs": 3, "weight_decay": "5e-4"}}, {"train": {"epochs": 3, "weight_decay": 0.0005}}),
    (with_attack(alpha_factor=2), with_attack(alpha_factor=2.0)),
    (with_attack(eps=[0.1, 0]), with_attack(eps=[0, 0.1, 0.1])),  # the grid is ascending, each budget once
    ({"model_args": {"width": 32.0, "depth": 1}}, {}),
    ({"dataset_args": {"n_train": 500.0}}, {"dataset_args": {"n_train": 500}}),
])
def test_same_computation_same_id(a, b):
    assert job(a) == job(b)


@pytest.mark.parametrize("name,norm,unused", [
    ("autoattack", "Linf", {"steps": 50, "alpha_factor": 1.0, "restarts": 3, "random_start": False}),
    ("fgsm", "Linf", {"steps": 50, "restarts": 3, "cw_steps": 7}),
    ("cw", "L2", {"steps": 50, "alpha_factor": 1.0, "deepfool_steps": 3}),
    ("deepfool", "L2", {"steps": 50, "random_start": False, "square_queries": 10}),
])
def test_settings_of_other_attacks_leave_the_id_alone(name, norm, unused):
    base = {"name": name, "norm": norm, "eps": [0.0, 0.5]}
    assert job(with_attack(**base)) == job(with_attack(**base, **unused))


# ------------------------------------------------------------------- different computations, different ids

@pytest.mark.parametrize("a,b", [
    ({}, {"train": {"epochs": 3, "precision": "bf16"}}),  # bf16 training is a different computation
    ({}, {"seed": 1}),
    ({"train": {"epochs": 3, "loss": "label_smoothing", "label_smoothing": 0.1}},
     {"train": {"epochs": 3, "loss": "label_smoothing", "label_smoothing": 0.3}}),
    (with_attack(steps=3), with_attack(steps=4)),
    (with_attack(precision="bf16"), {}),
    (with_attack(n_points=60), with_attack(n_points=61)),
    ({"dataset_args": {"label_noise": 0.1}}, {}),
    ({"dataset_args": {"label_noise": 0.1, "subset_seed": 1}}, {"dataset_args": {"label_noise": 0.1}}),
    ({"collapse_epochs": 3}, {}),
    ({"extra_attacks": [{"name": "pgd", "eps": [0, 0.1]}]}, {}),
])
def test_different_computation_different_id(a, b):
    assert job(a) != job(b)


def test_values_that_are_not_the_declared_type_are_refused_with_their_field():
    from ncbench._errors import InputError

    with pytest.raises(InputError, match=r"train\.epochs must be an integer; got 2\.5"):
        job({"train": {"epochs": 2.5}})
    with pytest.raises(InputError, match=r"train\.weight_decay must be a number; got 'x'"):
        job({"train": {"epochs": 3, "weight_decay": "x"}})


def test_unused_subset_seed_is_not_part_of_the_id():
    assert job({"dataset_args": {"subset_seed": 5}}) == job()


def test_checkpoints_are_identified_by_their_weights_not_the_config(tmp_path, digits_model):
    from ncbench.models import save_checkpoint

    import copy

    a = save_checkpoint(digits_model, tmp_path / "a.safetensors")
    b_model = copy.deepcopy(digits_model)  # same architecture, other weights
    with torch.no_grad():
        b_model.fc.bias.add_(1.0)
    b = save_checkpoint(b_model, tmp_path / "b.safetensors")
    copy_of_a = tmp_path / "renamed.safetensors"
    copy_of_a.write_bytes(a.read_bytes())
    cfg = build_config(DIGITS)
    other_recipe = build_config({**DIGITS, "train": {"epochs": 9, "lr": 0.3}, "model_args": {"width": 7}})
    assert compute_job_id(cfg, checkpoint=str(a)) != compute_job_id(cfg, checkpoint=str(b))
    # the file's name and the unused recipe do not matter; the weights do
    assert compute_job_id(cfg, checkpoint=str(a)) == compute_job_id(other_recipe, checkpoint=str(copy_of_a))
    assert compute_job_id(cfg, checkpoint=str(a)) != compute_job_id(cfg)


def test_identity_holds_no_environment_facts():
    ident = json.dumps(identity(build_config({**DIGITS, "data_dir": "/secret/path"}, device="cpu")))
    for fact in ("/secret/path", "cpu", torch.__version__, "threads", "output"):
        assert fact not in ident


# ------------------------------------------------------------------- records: written once, named honestly

def test_a_job_is_written_once_and_found(tmp_path):
    from ncbench.evaluate import find_record, run_evaluate, write_record

    cfg = build_config(DIGITS, device="cpu")
    rec = run_evaluate(cfg, progress=False)
    assert rec["provenance"]["job_id"] == compute_job_id(cfg)
    assert find_record(tmp_path, rec["provenance"]["job_id"]) is None
    first = write_record(rec, tmp_path)
    assert first.name == f"digits-mlp-s0-{rec['provenance']['job_id'][:16]}.json"
    assert write_record(rec, tmp_path) == first  # "already done": nothing new
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert find_record(tmp_path, rec["provenance"]["job_id"]) == first


def test_checkpoint_records_carry_the_training_seed_and_weight_decay(tmp_path):
    """A model trained with seed 1 and evaluated from its checkpoint with the default seed is named s1; its
    ls_gap uses the recipe's weight decay (as evaluating while training does), a foreign checkpoint's says
    unknown."""
    from ncbench.evaluate import evaluate_job, record_stem, run_evaluate
    from ncbench.models import load_checkpoint, save_checkpoint

    from ncbench.evaluate import model_file
    from ncbench.identity import digest, training_identity

    trained_cfg = build_config(DIGITS, seed=1, device="cpu")
    trained = evaluate_job(trained_cfg, checkpoint_dir=tmp_path)
    ckpt = model_file(tmp_path, trained_cfg)  # keyed by the training, which several jobs share
    assert ckpt.exists()
    loaded = run_evaluate(build_config(DIGITS, device="cpu"), checkpoint=str(ckpt), progress=False)
    assert record_stem(loaded).startswith("digits-mlp-s1-")
    assert loaded["provenance"]["model"]["trained_by"]["training_id"] == digest(training_identity(trained_cfg))
    # the initial weights are rebuilt from the recorded seed and checked against the recorded checksum
    assert loaded["provenance"]["model"]["init_checksum"] == trained["provenance"]["model"]["init_checksum"]
    assert loaded["measures"]["dist_from_init"] == pytest.approx(trained["measures"]["dist_from_init"], rel=1e-12)
    assert loaded["provenance"]["ls_gap_weight_decay"] == trained_cfg.train.weight_decay
    assert loaded["collapse"]["train"]["ls_gap"] == pytest.approx(trained["collapse"]["train"]["ls_gap"], rel=1e-9)
    foreign = save_checkpoint(load_checkpoint(ckpt), tmp_path / "foreign.safetensors")  # no training metadata
    rec = run_evaluate(build_config(DIGITS, device="cpu"), checkpoint=str(foreign), progress=False)
    assert rec["provenance"]["ls_gap_weight_decay"] is None
    assert record_stem(rec).startswith("digits-mlp-ckpt")
    assert rec["measures"]["dist_from_init"] is None and "initial weights" in rec["measures_info"]["initial_weights"]
    assert rec["collapse"]["train"]["ls_gap"] != loaded["collapse"]["train"]["ls_gap"]


# ------------------------------------------------------------------- defaults for every dataset

SHAPES = {"mnist1d": (1, 40), "digits": (1, 8, 8), "gaussian": (32,), "mnist": (1, 28, 28),
          "fashion_mnist": (1, 28, 28), "kmnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
          "svhn": (3, 32, 32), "stl10": (3, 96, 96)}


def test_every_dataset_has_defaults_whose_model_takes_its_inputs():
    from ncbench.data import list_datasets
    from ncbench.models import create_model

    assert sorted(SHAPES) == list_datasets() == sorted(DATASET_DEFAULTS)
    for name, shape in SHAPES.items():
        cfg = build_config(None, dataset=name)
        model = create_model(cfg.model, input_shape=shape, num_classes=10, **cfg.model_args).eval()
        with torch.no_grad():
            assert model(torch.rand(2, *shape)).shape == (2, 10), name


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist"])
def test_mnist_like_budgets(name):
    assert max(build_config(None, dataset=name, norm="Linf").attack.eps) == 0.3
    assert max(build_config(None, dataset=name, norm="L2").attack.eps) == 3.0


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "stl10"])
def test_image_budgets_include_8_255_and_0_5(name):
    from ncbench._budget import canonical_eps

    assert canonical_eps(8 / 255) in build_config(None, dataset=name, norm="Linf").attack.eps
    assert 0.5 in build_config(None, dataset=name, norm="L2").attack.eps


def test_a_checkpoint_in_the_config_is_the_same_job_as_one_passed_in():
    from ncbench.evaluate import run_evaluate

    fixed = "tests/data/digits-mlp-fixed.safetensors"
    in_config = build_config({**DIGITS, "checkpoint": fixed}, device="cpu")
    assert compute_job_id(in_config) == compute_job_id(build_config(DIGITS), checkpoint=fixed)
    rec = run_evaluate(in_config, progress=False)
    assert rec["provenance"]["model"]["source"] == "checkpoint"
    assert rec["provenance"]["job_id"] == compute_job_id(in_config)


@pytest.mark.parametrize("a,b,same", [
    ({"measures": False}, {}, False),  # a record without the measures is not the record with them
    ({"adv_collapse_points": 0}, {}, False),
    ({"adv_collapse_points": 500}, {}, False),
    # the default budget of the collapse under attack is the median of the attack's nonzero budgets (0.1 here)
    ({"adv_collapse_eps": 0.1}, {}, True),
    ({"adv_collapse_eps": 0.05}, {}, False),
    ({"adv_collapse_points": 0, "adv_collapse_eps": 0.05}, {"adv_collapse_points": 0}, True),  # unused budget
])
def test_the_optional_predictors_are_part_of_the_identity(a, b, same):
    # catches: a predictors identity that ignores the number of points or the budget, or counts an unused one
    assert (job(a) == job(b)) is same
