"""The predictors a record holds beside train/test collapse: the validation split, label-free held-out collapse,
collapse under attack, the accuracy estimators and the stored predictions (GDE), and how evaluate keeps them
apart from the test labels."""

import dataclasses

import numpy as np
import pytest
import torch

from ncbench.config import build_config
from ncbench.evaluate import (_collapse_quiet, accuracy_estimators, decode_labels, encode_labels,
                              label_free_collapse, measure_model, prepare, run_evaluate)
from ncbench.store._frame import gde


def _features(n_per_class=40, c=4, d=6, spread=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=g, dtype=torch.float64) * 3
    y = torch.arange(c).repeat_interleave(n_per_class)
    h = means[y] + spread * torch.randn(len(y), d, generator=g, dtype=torch.float64)
    return h, y, means


def test_label_free_equals_labelled_for_a_perfect_classifier():
    # catches: the label-free split grouped by something other than the prediction, or using other reference
    # means than the labelled split; for a network that classifies every point right they must agree
    h_tr, y_tr, means = _features(seed=0)
    h_te, y_te, _ = _features(seed=1)
    h_te = h_te - _features(seed=1)[2][y_te] + means[y_te]  # same class means as train
    w, b = means.clone(), -0.5 * (means ** 2).sum(1)  # the nearest-mean rule as a linear classifier
    logits = h_te @ w.T + b
    assert torch.equal(logits.argmax(1), y_te)
    free, info = label_free_collapse(h_tr, y_tr, h_te, logits, w, b, 4)
    labelled = _collapse_quiet((h_tr, y_tr), (h_te, y_te), w, b)
    assert info["n_classes"] == 4 and info["missing_classes"] == []
    assert free.keys() == labelled.keys()
    for k in labelled:
        assert free[k] == pytest.approx(labelled[k], rel=1e-12), k


def test_label_free_groups_by_prediction_and_handles_classes_never_predicted():
    h_tr, y_tr, means = _features(seed=0)
    h_te, _, _ = _features(seed=2)
    w, b = means.clone(), torch.zeros(4, dtype=torch.float64)
    logits = torch.zeros(len(h_te), 4, dtype=torch.float64)
    logits[:, 1] = 1.0
    logits[: len(h_te) // 2, 3] = 2.0  # the network predicts only classes 3 and 1
    free, info = label_free_collapse(h_tr, y_tr, h_te, logits, w, b, 4)
    assert info["n_classes"] == 2 and info["missing_classes"] == [0, 2]
    # catches: a silent NaN or an error when a class is never predicted, and the wrong classes kept (the first C'
    # rows of W instead of the predicted classes'): the metrics over the predicted classes 1 and 3 alone
    keep = (y_tr == 1) | (y_tr == 3)
    remap = torch.tensor([-1, 0, -1, 1])
    pred = logits.argmax(1)
    direct = _collapse_quiet((h_tr[keep], remap[y_tr[keep]]), (h_te, remap[pred]), w[[1, 3]], b[[1, 3]])
    assert free.keys() == direct.keys() and all(free[k] == pytest.approx(direct[k], rel=1e-12) for k in direct)
    logits[:, 3] = 5.0  # one class only
    free, info = label_free_collapse(h_tr, y_tr, h_te, logits, w, b, 4)
    assert info["n_classes"] == 1 and all(v is None for v in free.values()) and "undefined" in info["note"]


def test_atc_threshold_reproduces_validation_accuracy_and_estimates_test_accuracy():
    rng = np.random.default_rng(0)

    def draw(n):  # logits whose confidence goes with correctness: the setting ATC is made for
        y = rng.integers(0, 5, n)
        z = rng.normal(size=(n, 5))
        z[np.arange(n), y] += rng.normal(1.5, 1.0, n)
        return torch.tensor(z), torch.tensor(y)

    z_val, y_val = draw(4000)
    z_te, y_te = draw(4000)
    out = accuracy_estimators(z_te, z_val, y_val)
    from ncbench.evaluate import _neg_entropy

    n_correct = int((z_val.argmax(1) == y_val).sum())
    above = int((_neg_entropy(z_val) > out["atc_threshold"]).sum())
    assert above == n_correct  # catches: a threshold one rank off, or fitted to something else
    test_acc = float((z_te.argmax(1) == y_te).double().mean())
    assert abs(out["atc"] - test_acc) < 0.02  # same distribution: ATC is accurate
    assert 0 < out["confidence"] < 1
    assert accuracy_estimators(z_te, None, None)["atc"] is None  # no validation split, no ATC


def test_predictions_round_trip_compactly():
    y = torch.tensor([0, 9, 3, 3, 7])
    enc = encode_labels(y)
    assert enc["encoding"] == "base64-uint8" and np.array_equal(decode_labels(enc), y.numpy())
    big = torch.tensor([0, 300, 999])
    enc = encode_labels(big)
    assert enc["encoding"] == "base64-uint16le" and np.array_equal(decode_labels(enc), big.numpy())


def test_gde_is_the_mean_agreement_with_the_other_seeds_of_a_configuration():
    a = np.array([0, 1, 2, 3])
    b = np.array([0, 1, 2, 0])  # agrees with a on 3 of 4
    c = np.array([0, 0, 0, 0])  # agrees with a on 1, with b on 2
    lone = np.array([1, 1, 1, 1])
    out = gde([a, b, c, lone, None], ["g", "g", "g", "h", "g"])
    assert out[0] == pytest.approx((0.75 + 0.25) / 2)
    assert out[1] == pytest.approx((0.75 + 0.5) / 2)
    assert out[2] == pytest.approx((0.25 + 0.5) / 2)
    assert np.isnan(out[3]) and np.isnan(out[4])  # no partner: undefined, not 1


@pytest.fixture(scope="module")
def small_job():
    cfg = build_config({"dataset": "digits", "dataset_args": {"val_size": 200}, "model_args": {"width": 32, "depth": 1},
                        "train": {"epochs": 4}, "attack": {"eps": [0.0, 0.05], "steps": 3, "n_points": 80},
                        "collapse_epochs": 0, "measures": False, "adv_collapse_points": 80}, device="cpu")
    ds, model, trained, _, _ = prepare(cfg, progress=False)
    return cfg, ds, model


def test_training_never_reads_the_validation_split(monkeypatch):
    import ncbench.evaluate as ev

    seen = {}
    real = ev.train

    def spy(model, x, y, cfg, **kw):
        seen["x"] = x
        return real(model, x, y, cfg, **kw)

    monkeypatch.setattr(ev, "train", spy)
    cfg = build_config({"dataset": "digits", "dataset_args": {"val_size": 200}, "model_args": {"width": 16, "depth": 1},
                        "train": {"epochs": 1}, "collapse_epochs": 0}, device="cpu")
    ds, *_ = prepare(cfg, progress=False)
    trained_rows = {tuple(r.flatten().tolist()) for r in seen["x"]}
    assert len(seen["x"]) == len(ds.x_train) == 1347 - 200
    # catches: the validation rows handed to training (e.g. the full training split)
    assert not any(tuple(r.flatten().tolist()) in trained_rows for r in ds.x_val)


def test_label_free_and_estimators_never_read_the_test_labels(small_job):
    # catches: a label-free predictor that peeks at y_test: shuffling the test labels must leave every
    # label-free number unchanged while the labelled test metrics move
    cfg, ds, model = small_job
    cfg = dataclasses.replace(cfg, adv_collapse_points=0)
    a = measure_model(model, ds, cfg, weight_decay=cfg.train.weight_decay, progress=False)
    perm = torch.randperm(len(ds.y_test), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(ds, y_test=ds.y_test[perm])
    b = measure_model(model, shuffled, cfg, weight_decay=cfg.train.weight_decay, progress=False)
    assert a["collapse"]["test_pred"] == b["collapse"]["test_pred"]
    assert a["collapse"]["val_pred"] == b["collapse"]["val_pred"]
    assert a["estimators"] == b["estimators"] and a["predictions"] == b["predictions"]
    assert a["collapse"]["test"]["nc1"] != b["collapse"]["test"]["nc1"]


def test_reused_model_gives_the_same_record_and_rerun_trains_again(tmp_path, monkeypatch):
    import ncbench.evaluate as ev

    cfg = build_config({"dataset": "digits", "dataset_args": {"val_size": 100}, "model_args": {"width": 16, "depth": 1},
                        "train": {"epochs": 2}, "attack": {"eps": [0.0, 0.05], "steps": 2, "n_points": 40},
                        "collapse_epochs": 2, "adv_collapse_points": 60}, device="cpu")
    first = run_evaluate(cfg, progress=False, model_dir=tmp_path)
    calls = []
    real = ev.train
    monkeypatch.setattr(ev, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run_evaluate(cfg, progress=False, model_dir=tmp_path)
    assert calls == []  # catches: a second training of the same recipe
    assert again["provenance"]["job_id"] == first["provenance"]["job_id"]
    # catches: a reuse path that loses the initial weights (measures), the validation split, or anything else
    for key in ("accuracy", "collapse", "collapse_info", "training", "measures", "estimators", "predictions"):
        assert again[key] == first[key], key
    assert again["measures"]["dist_from_init"] is not None
    assert again["robustness"]["first_fooled_eps"] == first["robustness"]["first_fooled_eps"]
    other_attack = dataclasses.replace(cfg, attack=dataclasses.replace(cfg.attack, steps=3))
    third = run_evaluate(other_attack, progress=False, model_dir=tmp_path)
    assert calls == [] and third["provenance"]["model"]["checksum"] == first["provenance"]["model"]["checksum"]
    run_evaluate(cfg, progress=False, model_dir=tmp_path, rerun=True)
    assert calls == [1]  # --rerun trains again


def test_under_attack_collapse_follows_the_budget(small_job):
    # catches: adversarial examples that ignore the budget (or are the clean inputs): the nearest-clean-mean
    # accuracy of an undefended model must fall as the budget grows, and at budget 0 the features are the
    # clean ones (mean shift 0, nc1 around the clean means = nc1)
    from ncbench.evaluate import adversarial_collapse

    cfg, ds, model = small_job
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    x, y = ds.x_train[:300], ds.y_train[:300]
    got = {eps: adversarial_collapse(model, x, y, cfg.attack, eps, seed=0, weight=w, bias=b)[0]
           for eps in (0.0, 0.05, 0.15)}
    assert got[0.0]["mean_shift"] == pytest.approx(0.0, abs=1e-12)
    assert got[0.0]["nc1_on_clean_means"] == pytest.approx(got[0.0]["nc1"], rel=1e-9)
    acc = [got[e]["ncc_accuracy"] for e in (0.0, 0.05, 0.15)]
    assert acc[0] > acc[1] > acc[2]
    shift = [got[e]["mean_shift"] for e in (0.0, 0.05, 0.15)]
    assert shift[0] < shift[1] < shift[2]


def test_the_same_job_gives_the_same_adversarial_examples():
    # catches: examples drawn from the global RNG or a stream shared with earlier attacks
    from ncbench.attacks import AttackConfig, adversarial_examples, robustness_curve

    cfg = build_config({"dataset": "digits", "model_args": {"width": 16, "depth": 1}, "train": {"epochs": 2},
                        "collapse_epochs": 0}, device="cpu")
    ds, model, _, _, _ = prepare(cfg, progress=False)
    acfg = AttackConfig(name="pgd", eps=(0.0, 0.05), steps=5)
    a = adversarial_examples(model, ds.x_train[:100], ds.y_train[:100], acfg, 0.05, seed=3)
    robustness_curve(model, ds.x_test, ds.y_test, AttackConfig(name="pgd", eps=(0.0, 0.1), steps=3), progress=False)
    torch.rand(5)
    b = adversarial_examples(model, ds.x_train[:100], ds.y_train[:100], acfg, 0.05, seed=3)
    assert torch.equal(a, b)
    assert float((a - ds.x_train[:100]).abs().amax()) <= 0.05 + 1e-6 and not torch.equal(a, ds.x_train[:100])


def test_evaluate_model_runs_the_pipeline_on_a_wrapped_network_in_memory():
    # catches: a public call that skips parts of the pipeline, or gives the same weights another job id than
    # the same weights saved as a checkpoint would get
    import ncbench
    from ncbench.data import load_dataset
    from ncbench.identity import checkpoint_facts
    from ncbench.models import wrap_classifier

    ds = load_dataset("digits")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    model = wrap_classifier(net, ds.input_shape, 10, ds.mean, ds.std)
    rec = ncbench.evaluate_model(model, dataset="digits", attack={"name": "pgd", "eps": [0, 0.05], "steps": 2},
                                 config={"measures": False, "adv_collapse_points": 50}, device="cpu")
    assert rec["provenance"]["model"]["source"] == "memory"
    assert {"train", "test", "test_pred", "train_adv"} <= set(rec["collapse"])
    assert rec["robustness"]["curve"][0]["robust_accuracy"] == pytest.approx(rec["accuracy"]["test"])
    assert rec["provenance"]["identity"]["model"]["checksum"] == checkpoint_facts(model)["checksum"]
    with pytest.raises(Exception, match="wrap_classifier"):
        ncbench.evaluate_model(net, dataset="digits")


def test_evaluate_model_refuses_unknown_options_and_tells_architectures_apart():
    import ncbench
    from ncbench._errors import InputError
    from ncbench.identity import checkpoint_facts
    from ncbench.models import wrap_classifier

    def net(act):
        torch.manual_seed(0)
        return wrap_classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), act,
                                                   torch.nn.Linear(16, 10)), (1, 8, 8), 10)

    with pytest.raises(InputError, match=r"no option\(s\) \['seeed'\]"):
        ncbench.evaluate_model(net(torch.nn.ReLU()), dataset="digits", seeed=3)
    with pytest.raises(InputError, match="checkpoint"):
        ncbench.evaluate_model(net(torch.nn.ReLU()), dataset="digits", config={"checkpoint": "x.safetensors"})
    # catches: an identity of the weights alone: the same weights behind another activation are another model
    from ncbench.evaluate import evaluate_model  # noqa: F401  (the spec is set on first evaluation)
    a, b = net(torch.nn.ReLU()), net(torch.nn.Tanh())
    for m in (a, b):
        from ncbench.models import ModelSpec

        m.spec = ModelSpec(f"memory:{type(m).__name__}", 10, (1, 8, 8), (0.0,), (1.0,), {"modules": repr(m)})
    assert checkpoint_facts(a)["checksum"] == checkpoint_facts(b)["checksum"]
    assert checkpoint_facts(a)["spec"] != checkpoint_facts(b)["spec"]


def test_under_attack_collapse_on_a_subset_missing_classes():
    # catches: a crash (or a misleading "class missing in the train split") when a small subset misses classes
    from ncbench.evaluate import adversarial_collapse

    cfg = build_config({"dataset": "digits", "model_args": {"width": 16, "depth": 1}, "train": {"epochs": 2},
                        "collapse_epochs": 0}, device="cpu")
    ds, model, _, _, _ = prepare(cfg, progress=False)
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    keep = ds.y_train < 3
    out, info = adversarial_collapse(model, ds.x_train[keep][:60], ds.y_train[keep][:60], cfg.attack, 0.05, seed=0,
                                     weight=w, bias=b)
    assert info["missing_classes"] == list(range(3, 10)) and all(np.isfinite(v) for v in out.values())
    one = ds.y_train == 0
    out, info = adversarial_collapse(model, ds.x_train[one][:5], ds.y_train[one][:5], cfg.attack, 0.05, seed=0,
                                     weight=w, bias=b)
    assert all(v is None for v in out.values()) and "fewer than two classes" in info["note"]
