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
  dataset_args.n_train: [600, 1000]
  seed: [0, 1]
"""


@pytest.mark.slow
def test_build_fills_the_boards_and_resumes(tmp_path, capsys):
    """A real build of an 8-model grid on both digits boards (40 points): entries with their weights committed
    once per model, data exports that `leaderboard check` agrees with, and a second build, on a fresh store that
    only imported the committed files (no checkpoints), that computes nothing and writes the same bytes."""
    from ncbench.leaderboard import load_entries
    from ncbench.leaderboard._check import check_entries
    from ncbench.store import ResultsStore

    lb = tmp_path / "leaderboards"
    shutil.copytree(REPO / "leaderboards", lb, ignore=shutil.ignore_patterns("*.json", "*.md", "*.tex", "*.csv",
                                                                              "*.bib", "data", "measures", "weights"))
    shutil.copytree(REPO / "leaderboards" / "schema", lb / "schema", dirs_exist_ok=True)
    for norm in ("Linf", "L2"):
        board = lb / "digits" / norm / "board.yaml"
        board.write_text(board.read_text().replace("n_points: 200", "n_points: 40"))
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    store = tmp_path / "res" / "results.sqlite"
    args = ["leaderboard", "build", str(grid), "--leaderboards", str(lb), "--quiet", "--executor", "local"]
    assert main(args + ["--store", str(store)]) == 0, capsys.readouterr().err
    entries = {}
    for norm in ("Linf", "L2"):
        entries[norm] = load_entries(lb / "digits" / norm)
        assert len(entries[norm]) == 4  # one model (seed 0) per configuration
        assert {e["source"] for e in entries[norm]} == {"sweep"}
        assert all(e["training"]["seed"] == 0 and e["robust_accuracy"]["n_points"] == 40 for e in entries[norm])
        assert (lb / "digits" / norm / "README.md").is_file()
    # each model's weights are committed once and shared by its two boards
    files = {e["weights_file"]["path"] for e in entries["Linf"]}
    assert files == {e["weights_file"]["path"] for e in entries["L2"]} == {
        f"weights/{p.name}" for p in (lb / "weights").iterdir()} and len(files) == 4
    # an entry's "train" collapse is measured on the training set its model saw (600 or 1000 samples), as in
    # the sweep's own records
    from ncbench.store import load_frame

    frame = load_frame(store, sweep="tiny-digits").set_index(["model_args.width", "dataset_args.n_train", "seed"])
    for e in entries["Linf"]:
        n = e["training"]["dataset"]["args"]["n_train"]
        width = e["architecture_args"]["width"]
        assert e["collapse"]["train"]["nc1"] == pytest.approx(frame.loc[(width, n, 0), "train.nc1"], rel=1e-9)
    # the job a board entry records is the one `leaderboard verify` and `submit` run on its committed weights:
    # the board's protocol alone, no generalization measures and no collapse under attack (a build that dropped
    # those keys ran 4 times longer under an identity nobody could reproduce)
    from ncbench.identity import compute_job_id
    from ncbench.leaderboard import load_board
    from ncbench.leaderboard._verify import protocol_config

    board = load_board("digits/Linf", lb)
    for e in entries["Linf"]:
        cfg, _ = protocol_config(board, lb / e["weights_file"]["path"], seed=e["evaluation"]["seed"])
        assert compute_job_id(cfg) == e["evaluation"]["job_id"]
    records = {json.loads(x)["provenance"]["job_id"]: json.loads(x)
               for x in gzip.decompress((lb / "data" / "tiny-digits" / "boards.jsonl.gz").read_bytes()).splitlines()}
    assert all("adv_collapse" not in r["provenance"]["wall_time_s"] and "switched off" in r["measures_info"]["note"]
               for r in records.values())
    measures = lb / "measures" / "tiny-digits"
    assert (measures / "measures.csv").is_file() and "test_accuracy" in (measures / "README.md").read_text()
    data = lb / "data" / "tiny-digits"
    lines = gzip.decompress((data / "records.jsonl.gz").read_bytes()).splitlines()
    assert len(lines) == 8 and all(json.loads(x)["kind"] == "ncbench.evaluate" for x in lines)
    assert len(gzip.decompress((data / "boards.jsonl.gz").read_bytes()).splitlines()) == 2 * 4
    assert check_entries(lb) == []
    assert main(["leaderboard", "check", "--leaderboards", str(lb)]) == 0
    snapshot = {p: p.read_bytes() for p in lb.rglob("*") if p.is_file()}
    jobs = len(ResultsStore(store).statuses())
    assert jobs == 8 + 2 * 4
    # a second build computes nothing and writes the same bytes
    assert main(args + ["--store", str(store)]) == 0
    assert len(ResultsStore(store).statuses()) == jobs
    assert {p: p.read_bytes() for p in lb.rglob("*") if p.is_file()} == snapshot
    # another machine: a store holding only the committed exports, no checkpoints, resumes without computing
    fresh = tmp_path / "elsewhere" / "results.sqlite"
    assert main(["results", "import", str(data), "--store", str(fresh)]) == 0
    assert main(args + ["--store", str(fresh)]) == 0
    assert len(ResultsStore(fresh).statuses()) == jobs and not (fresh.parent / "checkpoints").exists()
    assert {p: p.read_bytes() for p in lb.rglob("*") if p.is_file()} == snapshot

def test_no_boards_and_progressive_exports_resume_elsewhere(tmp_path, monkeypatch):
    """`build --no-boards --export-every 2` on a 6-job grid interrupted after its 4th job: the export holds the 4
    finished jobs (written during the run, saying it is partial); a fresh store that imports the export runs only
    the other 2. No board, entry or weights is made. Catches: an export only at the end (nothing to commit
    when a long build stops), an export that is not importable, a --no-boards that still fills boards."""
    import copy
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from sweep_helpers import DIGITS_SMALL, fake_job

    import ncbench.leaderboard._build as build_module
    import ncbench.sweep._driver as driver
    from ncbench.store import ResultsStore

    calls = []

    def job(spec):
        calls.append(spec.cell)
        if spec.cell == 4 and calls.count(4) == 1:
            raise KeyboardInterrupt  # Ctrl-C during the 5th job
        return fake_job(spec)

    exported = []
    real_export = build_module.export_data

    def export_data(store, name, out_dir, **kw):
        paths = real_export(store, name, out_dir, **kw)
        lines = gzip.decompress((out_dir / "records.jsonl.gz").read_bytes()).splitlines()
        exported.append((len(lines), "Partial export" in (out_dir / "README.md").read_text()))
        return paths

    monkeypatch.setattr(driver, "run_job", job)
    monkeypatch.setattr(build_module, "export_data", export_data)
    grid = tmp_path / "g.yaml"
    grid.write_text(json.dumps({"name": "nb", "base": copy.deepcopy(DIGITS_SMALL),
                                "grid": {"model_args.width": [8, 16, 32], "seed": [0, 1]}}))
    lb = tmp_path / "lb"
    lb.mkdir()
    args = ["leaderboard", "build", str(grid), "--leaderboards", str(lb), "--executor", "local", "--quiet",
            "--no-boards", "--export-every", "2"]
    assert main(args + ["--store", str(tmp_path / "a" / "r.sqlite")]) == 2  # interrupted: the build says so
    assert exported == [(2, True), (4, True)] and calls == [0, 1, 2, 3, 4]
    # another machine: the committed export, imported, is where the build resumes
    fresh = tmp_path / "b" / "r.sqlite"
    assert main(["results", "import", str(lb / "data" / "nb"), "--store", str(fresh)]) == 0
    assert main(args + ["--store", str(fresh)]) == 0
    assert calls == [0, 1, 2, 3, 4, 4, 5] and exported[-1] == (6, False)
    assert len(ResultsStore(fresh).statuses()) == 6
    assert (lb / "measures" / "nb" / "measures.csv").is_file()
    assert not (lb / "weights").exists() and not [p for p in lb.glob("*/*/*.json") if p.parts[-3] != "measures"]
