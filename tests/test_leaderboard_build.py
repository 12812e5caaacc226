"""`ncbench leaderboard build GRID`: from a grid to its boards, measures board and data export, resumably."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from ncbench.cli import main

REPO = Path(__file__).parents[1]
GRID = """\
name: tiny-digits
base:
  dataset: digits
  model_args: {depth: 1}
  train: {epochs: 6}
  attack: {eps: [0, 0.05], steps: 3, n_points: 50}
  collapse_epochs: 0
grid:
  model_args.width: [16, 32]
  train.weight_decay: [5.0e-4, 5.0e-3]
  dataset_args.n_train: [600, 1000]
  seed: [0, 1]
"""


@pytest.mark.slow
def test_build_fills_the_boards_and_resumes(tmp_path, capsys):
    from ncbench.leaderboard import load_entries
    from ncbench.store import ResultsStore

    lb = tmp_path / "leaderboards"
    shutil.copytree(REPO / "leaderboards", lb, ignore=shutil.ignore_patterns("*.json", "*.md", "*.tex", "*.csv",
                                                                              "*.bib", "data", "measures"))
    shutil.copytree(REPO / "leaderboards" / "schema", lb / "schema", dirs_exist_ok=True)
    for norm in ("Linf", "L2"):
        board = lb / "digits" / norm / "board.yaml"
        board.write_text(board.read_text().replace("n_points: 450", "n_points: 40"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    store = tmp_path / "res" / "results.sqlite"
    args = ["leaderboard", "build", str(grid), "--leaderboards", str(lb), "--store", str(store), "--quiet",
            "--executor", "local"]
    assert main(args) == 0, capsys.readouterr().err
    for norm in ("Linf", "L2"):
        entries = load_entries(lb / "digits" / norm)
        assert len(entries) == 8  # one model (seed 0) per configuration
        assert {e["source"] for e in entries} == {"sweep"}
        assert all(e["training"]["seed"] == 0 and e["robust_accuracy"]["n_points"] == 40 for e in entries)
        assert (lb / "digits" / norm / "README.md").is_file()
    # an entry's "train" collapse is measured on the training set its model saw (600 or 1000 samples), as in
    # the sweep's own records
    from ncbench.store import load_frame

    frame = load_frame(store, sweep="tiny-digits").set_index(["model_args.width", "train.weight_decay",
                                                              "dataset_args.n_train", "seed"])
    for e in load_entries(lb / "digits" / "Linf"):
        n = e["training"]["dataset"]["args"]["n_train"]
        width, wd = e["architecture_args"]["width"], e["training"]["recipe"]["weight_decay"]
        assert e["collapse"]["train"]["nc1"] == pytest.approx(frame.loc[(width, wd, n, 0), "train.nc1"], rel=1e-9)
    measures = lb / "measures" / "tiny-digits"
    assert (measures / "measures.csv").is_file() and "test_accuracy" in (measures / "README.md").read_text()
    lines = gzip.decompress((lb / "data" / "tiny-digits" / "records.jsonl.gz").read_bytes()).splitlines()
    assert len(lines) == 16 and all(json.loads(x)["schema_version"] == 2 for x in lines)
    snapshot = {p: p.read_bytes() for p in lb.rglob("*") if p.is_file()}
    jobs = len(ResultsStore(store).statuses())
    # a second build computes nothing and writes the same bytes
    assert main(args) == 0
    assert len(ResultsStore(store).statuses()) == jobs == 16 + 2 * 8
    assert {p: p.read_bytes() for p in lb.rglob("*") if p.is_file()} == snapshot
    assert main(["leaderboard", "check", "--leaderboards", str(lb)]) == 0
