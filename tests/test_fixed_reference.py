"""Evaluating fixed weights agrees across machines and devices within stated tolerances.

Training repeats exactly on one machine but not across CPUs (their kernels round differently), so the
cross-machine contract is about *evaluating fixed weights*: the committed checkpoint
``tests/data/digits-mlp-fixed.safetensors`` and the numbers it gave on the machine named in
``digits-mlp-fixed.expected.json`` (``tests/data/regenerate_fixed.py`` remakes them).

Tolerances, the same ones the README states:
- clean accuracy and the nearest-class-centre metrics: within one sample of 450 (a point on a decision
  boundary can flip when float32 features round differently);
- every other collapse metric: relative 1e-4 (features are float32; the metrics are float64 functions of them);
- PGD robust accuracy at each eps: within 0.01 (a point near the boundary of the eps-ball can go either way).

The ``cuda`` tests compare the CPU and a GPU on the same checkpoint (TF32 off, fp32): features to relative
1e-4 of their scale, the same metric and accuracy tolerances. They skip without a GPU.
"""

import json
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent / "data"
EXPECTED = json.loads((HERE / "digits-mlp-fixed.expected.json").read_text())
N_TEST = 450
COUNT_KEYS = ("nc4_ncc_mismatch", "ncc_accuracy")


def _regen():
    import importlib.util

    spec = importlib.util.spec_from_file_location("regenerate_fixed", HERE / "regenerate_fixed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def assert_agree(got: dict, want: dict, n: int = N_TEST) -> None:
    for split in ("train", "test"):
        n_split = 1347 if split == "train" else n
        assert abs(got["accuracy"][split] - want["accuracy"][split]) <= 1 / n_split + 1e-12, split
        for key, value in want["collapse"][split].items():
            if key in COUNT_KEYS:
                assert abs(got["collapse"][split][key] - value) <= 1 / n_split + 1e-12, (split, key)
            else:
                assert got["collapse"][split][key] == pytest.approx(value, rel=1e-4, abs=1e-9), (split, key)
    curve = [r["robust_accuracy"] for r in got["robustness"]["curve"]] if "robustness" in got else \
        [r["robust_accuracy"] for r in got["curve"]]
    assert curve == pytest.approx([r["robust_accuracy"] for r in want["curve"]], abs=0.01)


def test_fixed_checkpoint_reproduces_its_committed_numbers():
    rec = _regen().evaluate("cpu")
    assert rec["provenance"]["model"]["checksum"] == EXPECTED["checksum"]
    assert rec["provenance"]["job_id"] == EXPECTED["job_id"]
    assert_agree(rec, EXPECTED)


def test_the_tolerance_would_catch_a_different_model(digits_model):
    """The comparison is not vacuous: the conftest's other digits model fails it."""
    from ncbench.config import build_config
    from ncbench.evaluate import measure_model

    regen = _regen()
    cfg = build_config(regen.CONFIG)
    from ncbench.data import load_dataset

    other = measure_model(digits_model, load_dataset("digits"), cfg, weight_decay=None, progress=False)
    with pytest.raises(AssertionError):
        assert_agree(other, EXPECTED)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
def test_gpu_features_match_the_cpu():
    from ncbench.data import load_dataset
    from ncbench.environment import configure_numerics
    from ncbench.features import extract
    from ncbench.models import load_checkpoint

    ds = load_dataset("digits")
    configure_numerics(torch.device("cuda"))
    f_cpu, z_cpu = extract(load_checkpoint(HERE / "digits-mlp-fixed.safetensors"), ds.x_test)
    f_gpu, z_gpu = extract(load_checkpoint(HERE / "digits-mlp-fixed.safetensors", map_location="cuda"), ds.x_test)
    scale = float(f_cpu.abs().max())
    assert float((f_gpu.cpu() - f_cpu).abs().max()) <= 1e-4 * scale
    assert float((z_gpu.cpu() - z_cpu).abs().max()) <= 1e-4 * float(z_cpu.abs().max())


@pytest.mark.cuda
@cuda
def test_gpu_evaluation_matches_the_cpu_record():
    regen = _regen()
    cpu, gpu = regen.evaluate("cpu"), regen.evaluate("cuda")
    assert gpu["provenance"]["job_id"] == cpu["provenance"]["job_id"]  # the GPU is a speed-up, not another job
    assert gpu["provenance"]["environment"]["tf32_matmul"] is False
    assert_agree(gpu, cpu)
