import numpy as np
import pytest
import torch

from ncbench._errors import InputError, UnknownNameError
from ncbench.data import list_datasets, load_dataset
from ncbench.models import create_model, list_models
from ncbench.train import TrainConfig, lr_at, train

# the input shape each architecture takes in the registry-built tests (images by default)
SHAPES = {"cnn1d": (1, 40), "mlp": (1, 8, 8)}
EMBEDDED = ["digits", "gaussian", "mnist1d"]
# torchvision's datasets are loaded from tiny files in their on-disk formats in test_torchvision_datasets.py
TORCHVISION = ["cifar10", "cifar100", "fashion_mnist", "kmnist", "mnist", "stl10", "svhn"]


def test_every_registered_dataset_is_tested():
    assert sorted(EMBEDDED + TORCHVISION) == list_datasets()


@pytest.mark.parametrize("name", EMBEDDED)
def test_every_dataset_is_in_unit_range_with_all_classes(name):
    ds = load_dataset(name)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert set(y.tolist()) == set(range(ds.num_classes))
    assert len(ds.mean) == ds.x_train.shape[1] == len(ds.std)


def test_mnist1d_is_the_standard_split_and_deterministic():
    state = np.random.get_state()
    a, b = load_dataset("mnist1d"), load_dataset("mnist1d")
    assert (a.x_train.shape, a.x_test.shape) == ((4000, 1, 40), (1000, 1, 40))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global numpy generator is left alone


def test_digits_split_is_fixed_and_stratified():
    ds = load_dataset("digits")
    assert (ds.x_train.shape[0], ds.x_test.shape[0]) == (1347, 450)
    assert torch.equal(ds.x_test, load_dataset("digits").x_test)
    n_test = torch.bincount(ds.y_test).double()
    n_all = n_test + torch.bincount(ds.y_train).double()
    assert torch.all((n_test - 0.25 * n_all).abs() <= 1.0)  # stratified: every class split 3:1


def test_unknown_dataset_and_option():
    with pytest.raises(UnknownNameError, match="valid: cifar10, cifar100, digits"):
        load_dataset("cifar")
    with pytest.raises(InputError, match="unexpected keyword"):
        load_dataset("digits", n_per_clas=3)


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_features_and_one_step(name):
    torch.manual_seed(0)
    shape = SHAPES.get(name, (3, 32, 32))
    model = create_model(name, input_shape=shape, num_classes=5, mean=(0.5,), std=(0.2,))
    x = torch.rand(6, *shape)
    feats = model.features(x)
    assert feats.shape == (6, model.fc.in_features)
    assert model(x).shape == (6, 5)
    assert torch.allclose(model(x), model.fc(feats))
    before = [p.detach().clone() for p in model.parameters()]
    train(model, x, torch.arange(6) % 5, TrainConfig(epochs=1, batch_size=6), progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_create_model_refuses_unknown_arguments():
    with pytest.raises(InputError, match=r"takes no argument\(s\) \['widht'\]; its arguments are \['width', 'depth', 'dropout'\]"):
        create_model("mlp", input_shape=(1, 8, 8), num_classes=10, widht=3)


def test_step_schedule_divides_by_ten_at_thirds():
    cfg = TrainConfig(epochs=30, lr=0.1)
    assert [lr_at(cfg, e) for e in (0, 9, 10, 19, 20, 29)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_training_repeats_exactly_on_cpu(digits):
    def run():
        torch.manual_seed(3)
        m = create_model("mlp", input_shape=digits.input_shape, num_classes=10, width=32, depth=1)
        r = train(m, digits.x_train[:256], digits.y_train[:256], TrainConfig(epochs=2, batch_size=64), seed=3,
                  progress=False)
        return m, r

    (m1, r1), (m2, r2) = run(), run()
    assert r1.history == r2.history
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("loss", ["ce", "mse", "label_smoothing"])
def test_losses_reduce_training_loss(digits, loss):
    torch.manual_seed(0)
    m = create_model("mlp", input_shape=digits.input_shape, num_classes=10, width=64, depth=2)
    r = train(m, digits.x_train, digits.y_train, TrainConfig(epochs=4, batch_size=64, loss=loss), progress=False)
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.history[-1]["train_accuracy"] > 0.8


def test_bad_training_config():
    with pytest.raises(InputError, match="loss must be one of"):
        TrainConfig(loss="hinge")
    # each refusal names its field and the value at fault
    for kw, message in (({"epochs": 0}, r"train\.epochs must be >= 1; got 0"),
                        ({"batch_size": -2}, r"train\.batch_size must be >= 1; got -2"),
                        ({"lr": 0}, r"train\.lr must be > 0; got 0\.0"),
                        ({"weight_decay": -1}, r"train\.weight_decay must be >= 0; got -1\.0"),
                        ({"momentum": 1.0}, r"train\.momentum must be in \[0, 1\); got 1\.0")):
        with pytest.raises(InputError, match=message):
            TrainConfig(**kw)


def test_gaussian_mixture_separation_controls_difficulty():
    from ncbench.collapse import collapse_metrics

    easy = load_dataset("gaussian", separation=8.0, dim=16)
    hard = load_dataset("gaussian", separation=0.5, dim=16)
    nc1 = lambda ds: collapse_metrics((ds.x_train.flatten(1), ds.y_train))["train"]["nc1"]  # noqa: E731
    assert nc1(easy) < nc1(hard)
    assert easy.input_shape == (16,) and torch.equal(easy.x_test, load_dataset("gaussian", separation=8.0, dim=16).x_test)


def test_torchvision_adapter_and_bring_your_own_errors():
    from torch import nn

    from ncbench.models import wrap_classifier

    m = create_model("tv:resnet18", input_shape=(3, 32, 32), num_classes=7)
    x = torch.rand(2, 3, 32, 32)
    assert m.features(x).shape == (2, 512) and m.fc.out_features == 7
    with pytest.raises(InputError, match="torchvision has no model 'resnet19'"):
        create_model("tv:resnet19", input_shape=(3, 32, 32), num_classes=7)
    with pytest.raises(InputError, match="needs timm|unknown model source"):
        create_model("timm:resnet18", input_shape=(3, 32, 32), num_classes=7)
    no_linear = nn.Sequential(nn.Flatten(), nn.Conv1d(1, 1, 1))
    with pytest.raises(InputError, match="has no nn.Linear layer"):
        wrap_classifier(nn.Sequential(nn.Flatten(), nn.ReLU()), (1, 4), 3)
    with pytest.raises(InputError, match="has 5 outputs but the dataset has 3 classes"):
        wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 5)), (1, 4), 3)
    with pytest.raises(InputError, match="is not produced by its last nn.Linear"):
        wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh()), (1, 4), 3)
    del no_linear
    ok = wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), (1, 4), 3)
    assert ok.features(torch.rand(5, 1, 4)).shape == (5, 6)


def test_milestones_as_epochs():
    cfg = TrainConfig(epochs=350, lr=0.1, milestones=(116, 233))
    assert [lr_at(cfg, e) for e in (115, 116, 232, 233)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_datasets_are_cached_per_process_and_never_mutated_by_subsampling():
    base = load_dataset("digits")
    assert load_dataset("digits") is base  # generated once per process (a sweep worker runs many jobs)
    y_before = base.y_train.clone()
    noisy = load_dataset("digits", label_noise=0.3, n_train=500)
    assert noisy.y_train.shape == (500,) and torch.equal(base.y_train, y_before)
    assert load_dataset("digits", test_fraction=0.5) is not base


def test_bf16_training_runs_under_autocast(digits):
    """precision: bf16 trains through bf16 autocast (an autocast that did nothing would give fp32's weights)."""
    from ncbench.models import model_checksum

    def run(precision):
        torch.manual_seed(0)
        m = create_model("mlp", input_shape=digits.input_shape, num_classes=10, width=32, depth=1)
        seen = []
        m.fc.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
        train(m, digits.x_train[:256], digits.y_train[:256], TrainConfig(epochs=1, batch_size=64, precision=precision),
              progress=False)
        return model_checksum(m), seen[0]

    (fp32, dtype32), (bf16, dtype16) = run("fp32"), run("bf16")
    assert dtype32 == torch.float32 and dtype16 == torch.bfloat16
    assert fp32 != bf16


def test_milestones_are_refused_when_they_cannot_apply():
    with pytest.raises(InputError, match=r"epoch milestones must be within 1\.\.99 \(\[116, 233\] would never apply\)"):
        TrainConfig(epochs=100, milestones=(116, 233))
    with pytest.raises(InputError, match="strictly increasing"):
        TrainConfig(epochs=100, milestones=(50, 20))
    with pytest.raises(InputError, match="positive numbers"):
        TrainConfig(epochs=100, milestones=(-1,))
    assert TrainConfig(epochs=1).milestone_epochs() == (1, 1)  # fractions scale; at the last epoch: no effect
