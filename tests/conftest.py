import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py


@pytest.fixture(scope="session")
def digits():
    from ncbench.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_model(digits):
    """A small MLP trained a few epochs on digits (seconds): good enough to attack and measure."""
    from ncbench.models import create_model
    from ncbench.train import TrainConfig, train

    torch.manual_seed(0)
    model = create_model("mlp", input_shape=digits.input_shape, num_classes=10, mean=digits.mean,
                         std=digits.std, width=64, depth=2)
    train(model, digits.x_train, digits.y_train, TrainConfig(epochs=8, batch_size=64), progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def digits_checkpoint(digits_model, tmp_path_factory):
    from ncbench.models import save_checkpoint

    return save_checkpoint(digits_model, tmp_path_factory.mktemp("ckpt") / "digits-mlp.safetensors")


@pytest.fixture(scope="session")
def mnist1d_default():
    """The default MNIST-1D CNN, trained with the default recipe (about 20 s): (dataset, model)."""
    from ncbench.config import build_config
    from ncbench.evaluate import prepare

    ds, model, _, _, _ = prepare(build_config(None, device="cpu"), progress=False)
    return ds, model.eval()


@pytest.fixture(scope="session")
def digits_record():
    """A real schema-2 record of a small digits job (a few seconds): for record, store and report tests."""
    from ncbench.config import build_config
    from ncbench.evaluate import run_evaluate

    cfg = build_config({"dataset": "digits", "model_args": {"width": 32, "depth": 1}, "train": {"epochs": 4},
                        "attack": {"eps": [0.0, 0.05, 0.1], "steps": 3, "n_points": 60}, "collapse_epochs": 2,
                        "extra_attacks": [{"name": "fgsm", "eps": [0.0, 0.1], "n_points": 60}]}, device="cpu")
    return run_evaluate(cfg, progress=False)
