"""Collapse over training, as the papers show it, from the committed CPU configs; and its figure."""

from pathlib import Path

import pytest

from ncbench.config import build_config, load_yaml
from ncbench.evaluate import prepare

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist1d-cnn1d", "mnist1d-cnn1d-mse", "digits-mlp", "digits-mlp-mse"])
def test_training_into_the_terminal_phase_collapses(name):
    cfg = build_config(load_yaml(CONFIGS / f"{name}.yaml"), device="cpu")
    _, _, trained, _, _ = prepare(cfg, progress=False)
    rows = [r for r in trained.collapse_history if r["collapse"]]
    nc1 = [r["collapse"]["train"]["nc1"] for r in rows]
    first_zero = next(r for r in rows if r["first_zero_error"])
    last = rows[-1]
    assert trained.history[-1]["train_accuracy"] == 1.0
    assert nc1[0] >= 10 * nc1[-1]  # nc1 falls at least 10x from the first measured epoch
    assert last["collapse"]["train"]["nc1"] < first_zero["collapse"]["train"]["nc1"]  # and keeps falling in TPT
    assert last["collapse"]["train"]["nc4_ncc_mismatch"] == 0.0
    assert last["collapse"]["test"]["nc1"] > last["collapse"]["train"]["nc1"]
    assert rows[0]["epoch"] == 1 and rows[-1]["epoch"] == cfg.train.epochs


def test_collapse_history_is_log_spaced_and_plot_writes_png_and_pdf(tmp_path):
    from ncbench.evaluate import log_epochs, run_evaluate
    from ncbench.plot import plot_training

    assert log_epochs(100, 5) == [1, 3, 10, 32, 100]
    cfg = build_config({"dataset": "digits", "train": {"epochs": 12}, "attack": {"eps": [0.0]}}, device="cpu")
    rec = run_evaluate(cfg, progress=False)
    hist = rec["training"]["collapse_history"]
    epochs = [r["epoch"] for r in hist]
    assert epochs == sorted(set(epochs)) and set(epochs) >= set(log_epochs(12, 12))
    paths = plot_training(rec, tmp_path / "fig")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


def test_plot_command_draws_both_figures_or_says_what_it_skipped(tmp_path, capsys):
    import json

    from ncbench.cli import main
    from ncbench.evaluate import run_evaluate, write_record

    cfg = build_config({"dataset": "digits", "train": {"epochs": 3}, "attack": {"eps": [0.0, 0.1], "steps": 3}},
                       device="cpu")
    path = write_record(run_evaluate(cfg, progress=False), tmp_path)
    assert main(["plot", str(path), "--out", str(tmp_path / "f")]) == 0
    assert sorted(p.name for p in tmp_path.glob("f-*")) == ["f-robustness.pdf", "f-robustness.png",
                                                           "f-training.pdf", "f-training.png"]
    rec = json.loads(path.read_text())
    rec["training"] = None  # a loaded checkpoint has no collapse history
    path2 = tmp_path / "ckpt.json"
    path2.write_text(json.dumps(rec))
    assert main(["plot", str(path2), "--out", str(tmp_path / "g")]) == 0
    assert "skipped training figure" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("g-*")) == ["g-robustness.pdf", "g-robustness.png"]


def test_plot_command_errors(tmp_path, capsys):
    from ncbench.cli import main

    assert main(["plot", str(tmp_path / "none.json")]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["plot", str(bad)]) == 2
    assert "not an ncbench evaluate record" in capsys.readouterr().err
