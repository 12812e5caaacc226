"""Training recipes (issue 15): optimizers, dropout, depth, augmentation and adversarial training.

Each test names the broken implementation it catches. The robustness gaps of adversarial training against a
standard-trained twin (AutoAttack at Linf 0.01 on MNIST-1D) are the ``slow`` tests at the end.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ncbench._errors import InputError
from ncbench.models import create_model, load_checkpoint, model_checksum, save_checkpoint
from ncbench.train import TrainConfig, crop_flip, derived_seed, shift_1d, train

ROOT = Path(__file__).resolve().parents[1]


def _mlp(digits, seed=0, **args):
    torch.manual_seed(seed)
    return create_model("mlp", input_shape=digits.input_shape, num_classes=10, mean=digits.mean, std=digits.std,
                        **{"width": 32, "depth": 1, **args})


def _trained(digits, n=256, seed=0, model_args=None, **recipe):
    m = _mlp(digits, seed, **(model_args or {}))
    r = train(m, digits.x_train[:n], digits.y_train[:n], TrainConfig(**{"epochs": 2, "batch_size": 64, **recipe}),
              seed=seed, progress=False)
    return m, r


# ------------------------------------------------------------------------------------------------ optimizers

def test_adam_and_adamw_give_different_weights_from_sgd_and_each_other(digits):
    """Catches an optimizer switch that is ignored (all SGD) or AdamW built as Adam (the same weights when the
    weight decay is not decoupled)."""
    sums = {opt: model_checksum(_trained(digits, optimizer=opt, lr=1e-3, weight_decay=5e-2)[0])
            for opt in ("sgd", "adam", "adamw")}
    assert len(set(sums.values())) == 3
    # betas reach the optimizer
    assert model_checksum(_trained(digits, optimizer="adam", lr=1e-3, weight_decay=5e-2, betas=(0.5, 0.9))[0]) \
        != sums["adam"]


def test_adamw_decouples_weight_decay_as_torch_does(digits):
    """ncbench's AdamW step is torch.optim.AdamW's with the recipe's lr, betas and weight decay (catches the
    weight decay or betas not being passed)."""
    cfg = TrainConfig(epochs=1, batch_size=1347, lr=1e-2, weight_decay=0.1, optimizer="adamw", betas=(0.8, 0.99),
                      schedule="constant")
    ours = _mlp(digits)
    ref = _mlp(digits)
    train(ours, digits.x_train, digits.y_train, cfg, progress=False)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    perm = torch.randperm(1347, generator=torch.Generator().manual_seed(0))
    ref.train()
    loss = nn.functional.cross_entropy(ref(digits.x_train[perm]), digits.y_train[perm])
    opt.zero_grad()
    loss.backward()
    opt.step()
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_the_schedule_applies_to_adam(digits, monkeypatch):
    """The step schedule sets Adam's learning rate too (catches a schedule written only for SGD)."""
    seen = []

    class Spy(torch.optim.Adam):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", Spy)
    _trained(digits, n=128, epochs=3, optimizer="adam", lr=1e-3, milestones=(1, 2))
    assert sorted(set(seen), reverse=True) == pytest.approx([1e-3, 1e-4, 1e-5])


# ------------------------------------------------------------------------------------------- dropout, depth

@pytest.mark.parametrize("arch,shape", [("mlp", (1, 8, 8)), ("cnn1d", (1, 40)), ("cnn2d", (1, 12, 12))])
def test_dropout_is_off_in_eval_and_on_in_training(arch, shape):
    """Catches dropout that is always on (two eval forwards differ), never on (two training forwards agree),
    or ignored (no Dropout module)."""
    torch.manual_seed(0)
    m = create_model(arch, input_shape=shape, num_classes=4, dropout=0.5, **({"channels": 4} if arch != "mlp" else {}))
    x = torch.rand(16, *shape)
    assert sum(isinstance(mod, nn.Dropout) for mod in m.modules()) >= 1
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
        m.train()
        assert not torch.equal(m(x), m(x))


@pytest.mark.parametrize("arch,shape,args", [("mlp", (1, 8, 8), {"width": 16}), ("cnn1d", (1, 40), {"channels": 4}),
                                             ("cnn2d", (1, 12, 12), {"channels": 4})])
def test_default_dropout_and_depth_leave_todays_models_unchanged(arch, shape, args):
    """dropout 0 adds no module and depth 3 is the 0.2 cnn1d: parameter names, shapes and order are those
    of a model built without the new arguments (so 0.2 checkpoints load), and so are the initial weights."""
    torch.manual_seed(0)
    old = create_model(arch, input_shape=shape, num_classes=4, **args)
    torch.manual_seed(0)
    new = create_model(arch, input_shape=shape, num_classes=4, dropout=0.0,
                       **({**args, "depth": 3} if arch == "cnn1d" else args))
    assert [(k, v.shape) for k, v in old.state_dict().items()] == [(k, v.shape) for k, v in new.state_dict().items()]
    assert model_checksum(old) == model_checksum(new)
    assert not any(isinstance(mod, nn.Dropout) for mod in new.modules())


def test_cnn1d_default_is_the_02_architecture():
    """The default cnn1d's layers are ncbench 0.2's (names and shapes written out)."""
    m = create_model("cnn1d", input_shape=(1, 40), num_classes=10, channels=8, width=16)
    convs = [(k, tuple(v.shape)) for k, v in m.state_dict().items() if k.endswith("weight") and v.ndim == 3]
    assert convs == [("body.0.weight", (8, 1, 5)), ("body.3.weight", (16, 8, 3)), ("body.6.weight", (32, 16, 3))]
    assert tuple(m.state_dict()["body.10.weight"].shape) == (16, 32 * 10)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_cnn1d_depth_is_the_number_of_conv_blocks(depth):
    m = create_model("cnn1d", input_shape=(1, 40), num_classes=10, channels=4, width=8, depth=depth)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv1d)]
    assert len(convs) == depth
    assert m.features(torch.rand(3, 1, 40)).shape == (3, 8)
    with pytest.raises(InputError, match="depth >= 1"):
        create_model("cnn1d", input_shape=(1, 40), num_classes=10, depth=0)


def test_dropout_must_be_a_rate():
    with pytest.raises(InputError, match=r"mlp dropout .* must be in \[0, 1\); got 1.5"):
        create_model("mlp", input_shape=(1, 8, 8), num_classes=10, dropout=1.5)


def test_dropout_model_round_trips_through_a_checkpoint(tmp_path, digits):
    m, _ = _trained(digits, model_args={"dropout": 0.3})
    path = save_checkpoint(m.eval(), tmp_path / "d.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.spec.args["dropout"] == 0.3 and model_checksum(loaded) == model_checksum(m)
    with torch.no_grad():
        torch.testing.assert_close(loaded(digits.x_test[:8]), m(digits.x_test[:8]))


# ------------------------------------------------------------------------------------------- augmentation

def test_shift_translates_each_signal_with_zero_padding():
    """Each output row is its input row moved by some s in [-S, S], zeros where it moved in (catches
    wrap-around (torch.roll), shifts beyond S, or one shift for the whole batch)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2, 20) + 0.5  # no zeros of its own
    out = shift_1d(x, 3, g)
    found = []
    for i in range(64):
        matches = []
        for s in range(-3, 4):
            ref = torch.zeros_like(x[i])
            if s >= 0:
                ref[:, s:] = x[i, :, :20 - s]
            else:
                ref[:, :20 + s] = x[i, :, -s:]
            if torch.equal(out[i], ref):
                matches.append(s)
        assert len(matches) == 1
        found += matches
    assert len(set(found)) > 3  # drawn per signal


def test_crop_flip_is_a_padded_crop_then_maybe_a_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 3, 8, 8) + 0.5
    out = crop_flip(x, g)
    flips = 0
    for i in range(32):
        padded = nn.functional.pad(x[i], (4, 4, 4, 4))
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                if torch.equal(out[i], (lambda c: c.flip(-1) if f else c)(padded[:, dy:dy + 8, dx:dx + 8]))]
        assert len(hits) == 1
        flips += hits[0][2]
    assert 0 < flips < 32


def test_shift_augmentation_changes_the_batches_and_keeps_the_labels(monkeypatch):
    """Inside the training loop, every augmented input the model sees is a shift of the training point its
    label belongs to (catches augmenting labels' partners out of order, or not augmenting at all)."""
    import ncbench.train as T
    from ncbench.data import load_dataset

    ds = load_dataset("mnist1d")
    x, y = ds.x_train[:200], ds.y_train[:200]
    seen_x, seen_y = [], []
    base = T._loss_fn

    def spy(cfg, num_classes):
        fn = base(cfg, num_classes)
        return lambda logits, yb: (seen_y.append(yb.clone()), fn(logits, yb))[1]

    monkeypatch.setattr(T, "_loss_fn", spy)
    torch.manual_seed(0)
    m = create_model("cnn1d", input_shape=ds.input_shape, num_classes=10, channels=4, width=8)
    m.register_forward_pre_hook(lambda mod, inp: seen_x.append(inp[0].detach().clone()) if mod.training else None)
    train(m, x, y, TrainConfig(epochs=1, batch_size=50, augment="shift", augment_shift=4), seed=1, progress=False)
    xs, ys = torch.cat(seen_x), torch.cat(seen_y)
    assert xs.shape == (200, 1, 40)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ys, y[perm])  # the labels of the points, in batch order, unchanged
    assert not torch.equal(xs, x[perm])  # the batches changed
    for got, orig in zip(xs, x[perm]):
        assert any(torch.equal(got, torch.roll(orig, s, -1) * ((torch.arange(40) - s >= 0) & (torch.arange(40) - s < 40)))
                   for s in range(-4, 5))


def test_augmented_training_repeats_exactly_and_depends_on_the_seed(digits):
    def run(seed):
        torch.manual_seed(0)
        m = create_model("cnn2d", input_shape=(1, 8, 8), num_classes=10, channels=2, width=8)
        train(m, digits.x_train[:128], digits.y_train[:128], TrainConfig(epochs=1, batch_size=64, augment="crop_flip"),
              seed=seed, progress=False)
        return model_checksum(m)

    assert run(0) == run(0) != run(1)


def test_augmentation_of_the_wrong_kind_is_refused(digits):
    with pytest.raises(InputError, match=r"augment: shift translates 1-D signals .* shape \(1, 8, 8\); use augment: "
                                         r"crop_flip for images"):
        _trained(digits, augment="shift")
    m = create_model("cnn1d", input_shape=(1, 40), num_classes=10, channels=2, width=4)
    with pytest.raises(InputError, match=r"crop_flip crops and flips images .* shape \(1, 40\); use augment: shift"):
        train(m, torch.rand(8, 1, 40), torch.arange(8) % 10, TrainConfig(epochs=1, augment="crop_flip"), progress=False)


# --------------------------------------------------------------------------------------- adversarial examples

class _Counting(nn.Module):
    """A small BatchNorm MLP that counts its forward passes in train and in eval mode."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = create_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=16, depth=1)
        self.fc = self.net.fc
        self.calls = {True: 0, False: 0}

    def forward(self, x):
        self.calls[self.training] += 1
        return self.net(x)


@pytest.mark.parametrize("method,train_calls,eval_calls", [("pgd", 3 + 1, 0), ("fgsm_rs", 1 + 1, 0),
                                                           ("trades", 3, 1 + 3)])
def test_where_the_examples_are_found(digits, method, train_calls, eval_calls):
    """PGD-AT and FGSM-RS find their examples in train mode (Madry et al.'s and Wong et al.'s code); TRADES in
    eval mode (one clean forward, then one per step) and updates with three train-mode forwards (Zhang et al.'s
    code). Catches a wrong mode, a missing step, or an extra pass."""
    m = _Counting()
    cfg = TrainConfig(epochs=1, batch_size=64, adversarial=method, adv_eps=0.05, adv_steps=3)
    import ncbench.train as T

    step = T._step_fn(m, cfg, T._loss_fn(cfg, 10), torch.Generator().manual_seed(0))
    m.train()
    step(digits.x_train[:64], digits.y_train[:64])
    assert m.calls == {True: train_calls, False: eval_calls}
    assert m.training


def test_fgsm_rs_is_wong_et_al_s_step(digits):
    """One step of 1.25 eps from a uniform start, then clip to the ball and to [0, 1] (their
    ``clamp(delta + alpha * sign(grad), -eps, eps)``; ``clamp(delta, -X, 1 - X)``), written out independently."""
    from ncbench.attacks._training import pgd_at_examples

    m = _mlp(digits).train()
    x, y, eps = digits.x_train[:64], digits.y_train[:64], 0.05
    got = pgd_at_examples(m, x, y, eps=eps, norm="Linf", steps=1, step_size=1.25 * eps,
                          generator=torch.Generator().manual_seed(7))
    delta = torch.empty(x.shape).uniform_(-eps, eps, generator=torch.Generator().manual_seed(7))
    delta = torch.clamp(delta, -x, 1 - x).requires_grad_(True)
    nn.functional.cross_entropy(m(x + delta), y).backward()
    delta = torch.clamp(delta.detach() + 1.25 * eps * delta.grad.sign(), -eps, eps)
    delta = torch.clamp(delta, -x, 1 - x)
    torch.testing.assert_close(got, x + delta, rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm,eps", [("Linf", 0.05), ("L2", 0.5)])
def test_pgd_and_trades_examples_stay_in_the_ball_and_raise_their_loss(digits, norm, eps):
    from ncbench.attacks._training import pgd_at_examples, trades_examples

    m = _mlp(digits).eval()
    x, y = digits.x_train[:128], digits.y_train[:128]
    size = (lambda d: d.flatten(1).abs().amax(1)) if norm == "Linf" else (lambda d: d.flatten(1).norm(dim=1))
    adv = pgd_at_examples(m, x, y, eps=eps, norm=norm, steps=5, step_size=2.5 * eps / 5,
                          generator=torch.Generator().manual_seed(0))
    assert float(size(adv - x).max()) <= eps + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
    ce = lambda t: float(nn.functional.cross_entropy(m(t), y))  # noqa: E731
    with torch.no_grad():
        assert ce(adv) > ce(x) + 0.05
    adv_t = trades_examples(m, x, eps=eps, norm=norm, steps=5, step_size=2.5 * eps / 5,
                            generator=torch.Generator().manual_seed(0))
    assert float(size(adv_t - x).max()) <= eps + 1e-6 and 0 <= float(adv_t.min()) and float(adv_t.max()) <= 1
    with torch.no_grad():
        p = nn.functional.softmax(m(x), 1)
        kl = lambda t: float(nn.functional.kl_div(nn.functional.log_softmax(m(t), 1), p, reduction="sum"))  # noqa
        assert kl(adv_t) > 10 * kl(torch.clamp(x + 0.001 * torch.randn(x.shape), 0, 1))


def test_adversarial_training_reports_robust_training_accuracy(digits):
    """adv_train_accuracy is set only under adversarial training, on a stated number of points, and is a
    robust accuracy: at most the clean accuracy on the same points (catches a clean accuracy reported as
    robust)."""
    _, plain = _trained(digits)
    assert plain.adv_train_accuracy is None and plain.adv_train_points is None
    m, r = _trained(digits, n=300, adversarial="pgd", adv_eps=0.1, adv_steps=3)
    assert r.adv_train_points == 300 and 0 <= r.adv_train_accuracy <= 1  # fewer than 1000 points: all of them
    with torch.no_grad():
        clean = float((m.eval()(digits.x_train[:300]).argmax(1) == digits.y_train[:300]).double().mean())
    assert r.adv_train_accuracy < clean


def test_robust_training_accuracy_uses_a_seeded_subset_of_1000_points(digits):
    """On more than 1000 training points: 1000 of them, drawn from the seed (the same number twice)."""
    from ncbench.train import adv_train_accuracy

    m = _mlp(digits).eval()
    cfg = TrainConfig(adversarial="pgd", adv_eps=0.02)
    a = adv_train_accuracy(m, digits.x_train, digits.y_train, cfg, seed=0)
    assert a[1] == 1000 and a == adv_train_accuracy(m, digits.x_train, digits.y_train, cfg, seed=0)


def test_adversarial_training_repeats_exactly(digits):
    def run():
        return model_checksum(_trained(digits, n=128, epochs=1, adversarial="trades", adv_eps=0.05, adv_steps=2)[0])

    assert run() == run()


# --------------------------------------------------------------------------------------- identity and labels

def _ids(*recipes):
    from ncbench.config import build_config
    from ncbench.identity import compute_job_id

    return [compute_job_id(build_config({"dataset": "digits", "train": r})) for r in recipes]


def test_the_plain_sgd_recipe_keeps_its_02_identity():
    assert TrainConfig().effective() == {"epochs": 60, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
                                         "weight_decay": 5e-4, "loss": "ce", "schedule": "step", "precision": "fp32",
                                         "milestones": [20, 40]}


@pytest.mark.parametrize("a,b", [
    ({"optimizer": "adam"}, {"optimizer": "adam", "momentum": 0.5}),  # momentum is SGD's
    ({}, {"betas": [0.5, 0.9]}),  # betas are Adam's
    ({}, {"adv_eps": 0.1, "adv_steps": 3, "trades_beta": 1.0}),  # no adversarial training
    ({"adversarial": "pgd", "adv_eps": 0.01}, {"adversarial": "pgd", "adv_eps": 0.01, "trades_beta": 1.0}),
    ({"adversarial": "fgsm_rs", "adv_eps": 0.01}, {"adversarial": "fgsm_rs", "adv_eps": 0.01, "adv_steps": 7}),
    ({"adversarial": "pgd", "adv_eps": 0.01}, {"adversarial": "pgd", "adv_eps": 0.01, "adv_step_size": 0.0025}),
    ({"adversarial": "pgd", "adv_eps": "8/255"}, {"adversarial": "pgd", "adv_eps": 8 / 255}),
    ({}, {"augment_shift": 9}),  # no augmentation
])
def test_unused_fields_leave_the_identity_alone(a, b):
    assert TrainConfig(**{k: tuple(v) if k == "betas" else v for k, v in a.items()}).effective() == \
        TrainConfig(**{k: tuple(v) if k == "betas" else v for k, v in b.items()}).effective()
    ida, idb = _ids(a, b)
    assert ida == idb


@pytest.mark.parametrize("change", [
    {"optimizer": "adam"}, {"optimizer": "adamw"}, {"augment": "shift"}, {"augment": "crop_flip"},
    {"adversarial": "pgd", "adv_eps": 0.01}, {"adversarial": "fgsm_rs", "adv_eps": 0.01},
    {"adversarial": "trades", "adv_eps": 0.01},
])
def test_used_fields_change_the_identity(change):
    base, changed = _ids({}, change)
    assert base != changed


@pytest.mark.parametrize("base,change", [
    ({"optimizer": "adam"}, {"betas": [0.5, 0.9]}), ({"augment": "shift"}, {"augment_shift": 3}),
    ({"adversarial": "pgd", "adv_eps": 0.01}, {"adv_steps": 5}), ({"adversarial": "pgd", "adv_eps": 0.01},
                                                                   {"adv_norm": "L2"}),
    ({"adversarial": "trades", "adv_eps": 0.01}, {"trades_beta": 1.0}),
    ({"adversarial": "pgd", "adv_eps": 0.01}, {"adv_step_size": 0.001}),
])
def test_each_used_setting_changes_the_identity(base, change):
    a, b = _ids(base, {**base, **change})
    assert a != b


def test_describe_names_the_recipe():
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, schedule="cosine", weight_decay=5e-4, epochs=60, batch_size=128,
                      adversarial="pgd", adv_eps=0.01, augment="shift", augment_shift=5)
    assert cfg.describe() == ("AdamW (betas 0.9, 0.999), lr 0.001 cosine, wd 5e-4, 60 epochs, batch 128; PGD-AT Linf "
                              "eps 0.01, 10 steps of 0.0025; shift ±5")
    assert TrainConfig().describe() == "SGD (momentum 0.9), lr 0.05 step at epochs 20, 40, wd 5e-4, 60 epochs, batch 128"
    assert TrainConfig(adversarial="trades", adv_eps="8/255", augment="crop_flip").describe().endswith(
        "TRADES Linf eps 8/255, 10 steps of 2/255, beta 6; crop (4-pixel padding) and flip")
    assert "FGSM-RS Linf eps 0.01, 1 step of 0.0125" in TrainConfig(adversarial="fgsm_rs", adv_eps=0.01).describe()


@pytest.mark.parametrize("kwargs,message", [
    ({"optimizer": "rmsprop"}, r"train.optimizer must be one of \('sgd', 'adam', 'adamw'\); got 'rmsprop'"),
    ({"betas": (0.9,)}, r"train.betas must be two numbers"),
    ({"betas": None}, r"train.betas must be two numbers, e.g. \[0.9, 0.999\]; got None"),
    ({"adversarial": "pgd", "adv_eps": "big"}, r"train.adv_eps: eps must be a number or a fraction"),
    ({"betas": (0.9, 1.0)}, r"train.betas must both lie in \[0, 1\)"),
    ({"augment": "flip"}, r"train.augment must be one of"),
    ({"augment": "shift", "augment_shift": 0}, r"augment_shift .* must be >= 1; got 0"),
    ({"adversarial": "pgd"}, r"adversarial: pgd needs train.adv_eps > 0, .*; got None"),
    ({"adversarial": "fgsm_rs", "adv_eps": 0.5, "adv_norm": "L2"}, r"fgsm_rs is defined for adv_norm Linf"),
    ({"adversarial": "trades", "adv_eps": 0.01, "loss": "mse"}, r"trades .* takes loss: ce; got loss 'mse'"),
    ({"adversarial": "pgd", "adv_eps": 2.0}, r"adv_eps must be <= 1 under Linf"),
    ({"adversarial": "pgd", "adv_eps": 0.1, "adv_steps": 0}, r"adv_steps must be >= 1; got 0"),
    ({"adversarial": "fast"}, r"train.adversarial must be one of"),
])
def test_bad_recipes_are_refused_in_one_line(kwargs, message):
    with pytest.raises(InputError, match=message) as err:
        TrainConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_configs_directory_loads():
    from ncbench.config import build_config, load_yaml

    paths = sorted((ROOT / "configs").glob("*.yaml"))
    for name in ("mnist1d-cnn1d-pgd-at", "mnist1d-cnn1d-trades", "mnist1d-cnn1d-fgsm-rs", "mnist1d-mlp-adamw-dropout",
                 "mnist1d-cnn1d-shift"):
        assert ROOT / "configs" / f"{name}.yaml" in paths
    for p in paths:
        cfg = build_config(load_yaml(p))
        assert cfg.train.describe()


def test_ncbench_train_reports_robust_training_accuracy(tmp_path, capsys):
    """`ncbench train` of an adversarially trained model states clean and robust training accuracy instead of
    warning that it did not reach the terminal phase."""
    from ncbench.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: digits\nmodel_args: {width: 16, depth: 1}\n"
                   "train: {epochs: 1, adversarial: pgd, adv_eps: 0.05, adv_steps: 2}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "m.safetensors"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "robust training accuracy" in out and "PGD-10 at Linf eps 0.05" in out
    assert "not in the terminal phase" not in out
    assert "PGD-AT Linf eps 0.05, 2 steps of 0.0625" in out


# --------------------------------------------------------------------------------------------- import circle

def test_models_and_archs_import_without_a_circle():
    """_classifier imports neither models nor _archs, _archs does not import models; importing _archs first
    works and registers every architecture (catches the circle coming back)."""
    def imports(path):
        tree = ast.parse(path.read_text())
        return {(n.module or "") + ":" + ",".join(a.name for a in n.names) for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom)}

    assert not any("models" in i or "_archs" in i for i in imports(ROOT / "ncbench" / "_classifier.py"))
    assert not any(i.startswith("models") or ":models" in i for i in imports(ROOT / "ncbench" / "_archs.py"))
    code = ("import ncbench._archs as a, ncbench._classifier as c; assert {'cnn1d', 'mlp', 'resnet18'} <= "
            "set(c.MODELS.names()); from ncbench.models import Classifier, ModelSpec, register_model, MODELS; "
            "assert MODELS is c.MODELS")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_derived_seeds_are_distinct_and_fixed():
    assert derived_seed(0, "augment") == derived_seed(0, "augment")
    assert len({derived_seed(s, p) for s in (0, 1) for p in ("augment", "adversarial")}) == 4


# --------------------------------------------------------------------------------- the gaps that matter (slow)

def _mnist1d_twin(adversarial):
    """A cnn1d (8 channels, 20 epochs) trained on MNIST-1D's default training split, standard or adversarially at
    Linf 0.01 (PGD-AT and TRADES with 5 steps of 0.005), and its AutoAttack robust accuracy at Linf 0.01 on the
    first 200 test points.

    Sized for the suite's time budget: with 16 channels, 30 epochs and 300 points (2-core CPU, issue 15) the gaps
    were +25.6 (PGD-AT), +27.6 (TRADES) and +26.0 (FGSM-RS) points; at this size (2-core CPU, 0.3) standard
    0.535, and +18.5, +21.0 and +16.0."""
    from ncbench.attacks import AttackConfig, robustness_curve
    from ncbench.data import load_dataset

    ds = load_dataset("mnist1d")
    torch.manual_seed(0)
    m = create_model("cnn1d", input_shape=ds.input_shape, num_classes=10, mean=ds.mean, std=ds.std, channels=8)
    cfg = TrainConfig(epochs=20, weight_decay=5e-3, adversarial=adversarial, adv_steps=5,
                      adv_eps=None if adversarial == "none" else 0.01)
    train(m, ds.x_train, ds.y_train, cfg, progress=False)
    res = robustness_curve(m.eval(), ds.x_test, ds.y_test,
                           AttackConfig(name="autoattack", norm="Linf", eps=(0, 0.01), n_points=200), progress=False)
    return res["curve"][-1]["robust_accuracy"]


@pytest.fixture(scope="module")
def standard_twin_robust():
    return _mnist1d_twin("none")


@pytest.mark.slow
@pytest.mark.parametrize("method,margin", [("pgd", 0.15), ("trades", 0.15), ("fgsm_rs", 0.0)])
def test_adversarial_training_buys_autoattack_robustness(standard_twin_robust, method, margin):
    """AutoAttack robust accuracy at Linf 0.01 of the adversarially trained twin minus the standard one:
    at least 15 points for PGD-AT and TRADES (the issue's bar), not negative for FGSM-RS (catches an inner
    attack that does not attack, or examples that are not trained on)."""
    robust = _mnist1d_twin(method)
    print(f"{method}: AutoAttack robust accuracy at Linf 0.01 {robust:.3f} vs standard {standard_twin_robust:.3f}")
    assert robust - standard_twin_robust >= margin


def test_train_takes_float64_inputs_and_int32_labels():
    # catches: "expected m1 and m2 to have the same dtype" / "expected target dtype to be Long" inside torch
    from ncbench.models import create_model
    from ncbench.train import TrainConfig, train

    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8, dtype=torch.float64)
    y = (torch.arange(64) % 10).to(torch.int32)
    model = create_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=8, depth=1)
    result = train(model, x, y, TrainConfig(epochs=1, batch_size=32), progress=False)
    assert 0.0 <= result.history[-1]["train_accuracy"] <= 1.0


def test_trades_loss_is_its_formula():
    # catches: the KL the wrong way round (KL(f(x') || f(x))), a dropped or fixed beta, a mean over classes
    # instead of the sum, or KL(f(x) || f(x)) (the adversarial logits never used): the loss against
    # CE(f(x), y) + beta * (1/N) sum_i sum_c p_c(x_i) (log p_c(x_i) - log p_c(x'_i)) computed here directly
    from ncbench.attacks._training import trades_loss

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)
    x, x_adv = torch.randn(6, 5), torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        p, q = torch.softmax(model(x), 1), torch.softmax(model(x_adv), 1)
    forward_kl = (p * (p.log() - q.log())).sum() / 6
    reverse_kl = (q * (q.log() - p.log())).sum() / 6
    assert abs(float(forward_kl - reverse_kl)) > 1e-3  # the case tells the two directions apart
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(model(x), y)
    for beta in (0.0, 1.0, 6.0):
        loss, logits = trades_loss(model, x, x_adv, y, beta)
        assert float(loss.detach()) == pytest.approx(float(ce + beta * forward_kl), rel=1e-5)
    assert torch.equal(logits.detach(), model(x).detach())


def test_pgd_at_examples_follow_the_written_out_steps():
    # catches: a projection only at the end, steps along the raw gradient under Linf, a missing [0, 1] clamp
    from ncbench.attacks._training import pgd_at_examples

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 3))
    x = torch.rand(5, 1, 8)
    y = torch.tensor([0, 1, 2, 0, 1])
    eps, steps, alpha = 0.1, 4, 0.06
    g = torch.Generator().manual_seed(3)
    got = pgd_at_examples(model, x, y, eps=eps, norm="Linf", steps=steps, step_size=alpha, generator=g,
                          loss_fn=torch.nn.functional.cross_entropy)
    from ncbench.attacks._pgd import random_start

    adv = random_start(x, eps, "Linf", torch.Generator().manual_seed(3))
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.clamp(x + torch.clamp(adv - x, -eps, eps), 0, 1)
    assert torch.allclose(got, adv, atol=1e-7)
