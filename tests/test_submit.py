"""`ncbench submit`: a checkpoint trained by `ncbench train`, end to end, and every bad submission refused with
one line, exit 2 and nothing written."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ncbench.cli import main

REPO = Path(__file__).parents[1]


@pytest.fixture()
def boards(tmp_path):
    """A copy of the committed boards, with a small digits board (60 points) so that a test runs in seconds."""
    dst = tmp_path / "leaderboards"
    shutil.copytree(REPO / "leaderboards", dst, ignore=shutil.ignore_patterns("*.json", "*.md", "*.tex", "*.csv",
                                                                               "*.bib", "weights", "data"))
    shutil.copytree(REPO / "leaderboards" / "schema", dst / "schema", dirs_exist_ok=True)
    board = dst / "digits" / "Linf" / "board.yaml"
    board.write_text(board.read_text().replace("n_points: 200", "n_points: 60"))
    return dst


def files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits MLP trained by `ncbench train` (the command a researcher runs)."""
    out = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    cfg = out.parent / "c.yaml"
    cfg.write_text("dataset: digits\nmodel_args: {width: 32, depth: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "ncbench", "train", "--config", str(cfg), "--epochs", "20",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def one_line_error(capsys, pattern):
    import re

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
    return err[0]


def test_submit_end_to_end(trained, boards, capsys):
    from ncbench.features import predict
    from ncbench.data import load_dataset
    from ncbench.leaderboard import load_entries
    from ncbench.models import load_checkpoint, model_checksum

    ds = load_dataset("digits")
    model = load_checkpoint(trained)
    clean = float((predict(model, ds.x_test) == ds.y_test).double().mean())
    rc = main(["submit", str(trained), "--board", "digits/Linf", "--leaderboards", str(boards), "--name", "My MLP",
               "--claim-clean", f"{100 * clean:.2f}", "--claim-robust", "99", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr()
    assert "kept under 'reported' and footnoted" in out.err
    (entry,) = load_entries(boards / "digits" / "Linf")
    assert entry["id"] == "my-mlp" and entry["source"] == "submit"
    assert entry["weights_sha256"] == model_checksum(model)
    # the weights are committed beside the boards, byte for byte the submitted file, named by its sha256
    import hashlib

    committed = boards / entry["weights_file"]["path"]
    assert committed.read_bytes() == trained.read_bytes()
    assert entry["weights_file"]["sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()
    assert committed.name == entry["weights_file"]["sha256"][:16] + ".safetensors"
    assert entry["training"]["job_id"] == model.trained_by["job_id"]  # the recipe travelled in the checkpoint
    assert entry["robust_accuracy"]["n_points"] == 60 and entry["robust_accuracy"]["value"] < entry["clean_accuracy"]
    assert entry["reported"]["robust_accuracy"] == 0.99
    assert isinstance(entry["reliable"], bool) and set(entry["collapse"]) == {"train", "test"}
    readme = (boards / "digits" / "Linf" / "README.md").read_text()
    assert "My MLP" in readme
    # nothing may take the id without --replace; --replace takes only the same weights
    before = files(boards)
    assert main(["submit", str(trained), "--board", "digits/Linf", "--leaderboards", str(boards), "--name",
                 "My MLP", "--quiet"]) == 2
    one_line_error(capsys, r"entry 'my-mlp' exists on board digits/Linf.*--check to re-evaluate it")
    assert files(boards) == before
    from ncbench.models import save_checkpoint

    other = load_checkpoint(trained)
    with torch.no_grad():
        other.fc.bias.add_(0.01)
    other_path = save_checkpoint(other, trained.parent / "other.safetensors")
    assert main(["submit", str(other_path), "--board", "digits/Linf", "--leaderboards", str(boards), "--name",
                 "My MLP", "--replace", "--quiet"]) == 2
    one_line_error(capsys, r"--replace refused: entry 'my-mlp' holds weights")
    assert files(boards) == before
    assert main(["submit", str(trained), "--board", "digits/Linf", "--leaderboards", str(boards), "--name",
                 "My MLP", "--replace", "--claim-clean", f"{100 * clean:.2f}", "--quiet"]) == 0
    (again,) = load_entries(boards / "digits" / "Linf")
    assert again["reported"]["robust_accuracy"] is None  # replaced: the new submission's claims


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        f = torch.nn.functional.dropout(x.flatten(1), 0.5, training=True)  # random even in eval mode
        return f, self.lin(f)


class Probabilities(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        f = x.flatten(1)
        return f, self.lin(f).softmax(1)


def exported(module, path):
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module.eval(), (torch.rand(4, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def test_bad_submissions_write_nothing(trained, boards, tmp_path, capsys):
    from ncbench.models import create_model, save_checkpoint

    seven = save_checkpoint(create_model("mlp", input_shape=(1, 8, 8), num_classes=7, width=8, depth=1),
                            tmp_path / "seven.safetensors")
    wide = save_checkpoint(create_model("mlp", input_shape=(1, 9, 9), num_classes=10, width=8, depth=1),
                           tmp_path / "wide.safetensors")
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    subprocess.run([sys.executable, "-c", "import os, torch\n"
                    "class E:\n"
                    f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
                    f"torch.save({{'spec': {{}}, 'state_dict': E()}}, {str(evil)!r})\n"], check=True)
    noisy = exported(Noisy(), tmp_path / "noisy.pt2")
    probs = exported(Probabilities(), tmp_path / "probs.pt2")
    before = files(boards)
    cases = [
        ([str(seven)], r"the checkpoint has 7 classes but board digits/Linf \(digits\) has 10"),
        ([str(wide)], r"takes inputs of shape \(1, 9, 9\) but board digits/Linf \(digits\) has \(1, 8, 8\)"),
        ([str(evil)], r"refused: the file holds pickled Python objects"),
        ([str(noisy), "--trust-checkpoint"], r"refused: two forwards of 64 inputs differ"),
        ([str(probs), "--trust-checkpoint"], r"refused: every output row is non-negative and sums to 1"),
        ([str(noisy)], r"refused: torch.export archives unpickle"),
        ([str(trained), "--claim-clean", "50"], r"claimed clean accuracy 50.00% does not match ncbench's \d+\.\d\d%"),
        ([str(trained), "--board", "digits/L3"], r"unknown board 'digits/L3'"),
    ]
    for args, pattern in cases:
        board = [] if "--board" in args else ["--board", "digits/Linf"]
        rc = main(["submit", *args, *board, "--leaderboards", str(boards), "--quiet"])
        assert rc == 2, args
        one_line_error(capsys, pattern)
        assert files(boards) == before, args
    assert not marker.exists()


@pytest.mark.slow
def test_maintainers_verify_a_submission(trained, boards, capsys):
    """A submission re-evaluated as a maintainer would: `leaderboard verify` on the committed weights and
    `submit --check` from the submitter's file both reproduce the entry (on this machine, exactly); a changed
    number is caught with its field and both values. Catches a verify or --check that compares nothing, that
    evaluates with another seed (AutoAttack and PGD would then differ beyond one sample on some boards), or
    that writes anything."""
    import json

    from ncbench.leaderboard import load_entries, render_board

    assert main(["submit", str(trained), "--board", "digits/Linf", "--leaderboards", str(boards), "--name", "My MLP",
                 "--quiet"]) == 0
    capsys.readouterr()
    before = files(boards)
    assert main(["leaderboard", "verify", "digits/Linf/my-mlp", "--leaderboards", str(boards)]) == 0
    assert "1 of 1 entry reproduced within the tolerances" in capsys.readouterr().out
    assert main(["submit", str(trained), "--board", "digits/Linf", "--leaderboards", str(boards), "--name", "My MLP",
                 "--check", "--quiet"]) == 0
    assert "ok digits/Linf/my-mlp: the checkpoint is the entry's model" in capsys.readouterr().out
    assert files(boards) == before  # verifying writes nothing
    (entry,) = load_entries(boards / "digits" / "Linf")
    path = boards / "digits" / "Linf" / "my-mlp.json"
    entry["robust_accuracy"]["value"] = round(entry["robust_accuracy"]["value"] + 0.05, 6)
    path.write_text(json.dumps(entry))
    render_board(path.parent)
    assert main(["leaderboard", "verify", "digits/Linf", "--leaderboards", str(boards)]) == 1
    out = capsys.readouterr().out
    assert f"robust_accuracy.value: committed {entry['robust_accuracy']['value']:.6g}, re-evaluated " in out
    assert "(tolerance 0.01)" in out


def test_stray_weights_stay_out_of_commits():
    """The submit walkthrough left a checkpoint at the repository root that `git add -A` committed. Catches a
    .gitignore without the rule, or one whose rule also hides the weights that are committed on purpose."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(rel):
        return subprocess.run(["git", "check-ignore", "-q", rel], cwd=REPO).returncode == 0

    for stray in ("my-mlp.safetensors", "runs/model.pt", "model.pt2", "ckpt/last.pth"):
        assert ignored(stray), stray
    for kept in ("leaderboards/weights/0123456789abcdef.safetensors", "tests/data/digits-mlp-fixed.safetensors"):
        assert not ignored(kept), kept
