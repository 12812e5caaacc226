"""The command line as a user meets it: one-line errors with exit code 2, and end-to-end runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncbench.cli import main

REPO = Path(__file__).parents[1]


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "ncbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def assert_one_line_error(proc, pattern):
    import re

    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("args,pattern", [
    (["--dataset", "mnist-1d"], r"unknown dataset 'mnist-1d'; did you mean 'mnist1d'.*\(valid: cifar10, .*, svhn\)"),
    (["--model", "resnet"], r"unknown model 'resnet'; did you mean .*\(valid: cnn1d, cnn2d, .*, wrn28\)"),
    (["--checkpoint", "missing.safetensors"], r"checkpoint 'missing.safetensors' does not exist"),
    (["--eps", "0,2"], r"eps must be in \[0, 1\]"),
    (["--device", "tpu"], r"argument --device: invalid choice: 'tpu' \(choose from 'auto', 'cpu', 'cuda'\)"),
    (["--eps", "0,8/2x5"], r"eps must be a number or a fraction such as 8/255; got '8/2x5'"),
    (["--config", "configs/cifar10-resnet18-pnas.yaml", "--epochs", "100"],
     r"milestones \[116, 233\] resolve to epochs \[116, 233\] with epochs=100"),
    (["--config", "nope.yaml"], r"config file 'nope.yaml' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args, pattern, tmp_path):
    args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
    assert_one_line_error(run_cli("evaluate", *args, "--quiet", cwd=tmp_path), pattern)


def test_config_with_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: digits\ntrain:\n  epoch: 3\n")
    assert main(["evaluate", "--config", str(cfg), "--quiet"]) == 2
    assert "unknown key(s) ['epoch'] in train" in capsys.readouterr().err


def test_corrupt_checkpoint(tmp_path, digits_checkpoint):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    assert_one_line_error(run_cli("evaluate", "--dataset", "digits", "--checkpoint", str(bad), "--quiet"),
                          "not a readable safetensors file")


def test_checkpoint_with_wrong_class_count(tmp_path, digits):
    from ncbench.models import create_model, save_checkpoint

    m = create_model("mlp", input_shape=digits.input_shape, num_classes=7, width=16, depth=1)
    path = save_checkpoint(m, tmp_path / "seven.safetensors")
    assert_one_line_error(run_cli("evaluate", "--dataset", "digits", "--checkpoint", str(path), "--quiet"),
                          r"the checkpoint has 7 classes but dataset 'digits' has 10")


def test_pickle_checkpoint_refused_without_running(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    script = ("import os, torch\n"
              "class E:\n"
              f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
              f"torch.save({{'spec': {{}}, 'state_dict': E()}}, {str(evil)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert evil.exists() and not marker.exists()
    assert_one_line_error(run_cli("evaluate", "--dataset", "digits", "--checkpoint", str(evil), "--quiet"),
                          "refused: the file holds pickled Python objects")
    assert not marker.exists()


def test_evaluate_a_saved_checkpoint(tmp_path, digits_checkpoint, digits_model, digits):
    out = tmp_path / "res"
    proc = run_cli("evaluate", "--dataset", "digits", "--checkpoint", str(digits_checkpoint), "--output", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["provenance"]["model"]["source"] == "checkpoint"
    assert rec["training"] is None
    with torch.no_grad():
        acc = float((digits_model(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert rec["accuracy"]["test"] == pytest.approx(acc)


def _check_record(rec, n_train, n_test, n_val=0):
    from ncbench.record import validate_record

    validate_record(rec)
    assert rec["schema_version"] == 3
    prov = rec["provenance"]
    assert prov["dataset"]["n_train"] == n_train and prov["dataset"]["n_test"] == n_test
    assert prov["dataset"]["n_val"] == n_val and (rec["accuracy"]["val"] is None) == (n_val == 0)
    assert len(prov["job_id"]) == 64 and prov["versions"]["torch"] == torch.__version__
    assert set(prov["wall_time_s"]) >= {"data", "train", "features", "collapse", "attack", "total"}
    assert rec["accuracy"]["train"] == 1.0
    assert rec["training"]["terminal_phase_epoch"] < len(rec["training"]["history"])  # trained past zero error
    col = rec["collapse"]
    assert col["train"]["nc1"] < col["test"]["nc1"]
    curve = [row["robust_accuracy"] for row in rec["robustness"]["curve"]]
    assert curve[0] == pytest.approx(rec["accuracy"]["test"])  # the attack's clean pass = the features' logits
    assert curve[-1] < rec["accuracy"]["test"] - 0.2  # the attack bites at the largest budget


@pytest.mark.slow
def test_readme_default_evaluate_end_to_end(tmp_path):
    """The README's first command: MNIST-1D, the default CNN into the terminal phase, collapse, PGD."""
    proc = run_cli("evaluate", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "ncbench-results").glob("*.json")
    rec = json.loads(path.read_text())
    _check_record(rec, 3500, 1000, n_val=500)  # the default holds 500 of the 4000 training points out
    assert rec["accuracy"]["test"] >= 0.85
    assert "nc1" in proc.stdout and "robust acc" in proc.stdout and str(path.name) in proc.stdout
    # another job writes a second record, never over the first; the same job is not computed again
    proc2 = run_cli("evaluate", "--quiet", "--epochs", "1", cwd=tmp_path)
    assert proc2.returncode == 0
    assert len(list((tmp_path / "ncbench-results").glob("*.json"))) == 2
    assert json.loads(path.read_text()) == rec
    proc3 = run_cli("evaluate", "--quiet", cwd=tmp_path)
    assert proc3.returncode == 0 and "already recorded" in proc3.stdout
    assert len(list((tmp_path / "ncbench-results").glob("*.json"))) == 2


@pytest.mark.slow
def test_digits_end_to_end_and_train_command(tmp_path):
    proc = run_cli("evaluate", "--dataset", "digits", "--quiet", "--output", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "r").glob("*.json")
    rec = json.loads(path.read_text())
    _check_record(rec, 1347, 450)
    ck = tmp_path / "m.safetensors"
    proc = run_cli("train", "--dataset", "digits", "--epochs", "3", "--out", str(ck), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert ck.exists()
    assert_one_line_error(run_cli("train", "--dataset", "digits", "--epochs", "3", "--out", str(ck), "--quiet"),
                          "exists; choose another --out or pass --force")


CONFIGS = sorted(Path(__file__).parents[1].glob("configs/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_committed_configs_are_valid(path):
    from ncbench.config import build_config, load_yaml

    from ncbench.identity import compute_job_id

    cfg = build_config(load_yaml(path))
    if path.stem in ("mnist1d-cnn1d", "digits-mlp"):
        # the written-out defaults must stay equal to DATASET_DEFAULTS: the same job
        assert compute_job_id(cfg) == compute_job_id(build_config(None, dataset=cfg.dataset))
