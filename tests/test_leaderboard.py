"""Leaderboards: boards, the entry schema, entries from records, rendering, BibTeX, the CLI."""

import argparse
import copy
import csv
import io
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from ncbench._budget import eps_label
from ncbench._errors import InputError, UnknownNameError
from ncbench.leaderboard import (
    ENTRY_SCHEMA, Board, check_rendered, entry_from_records, list_boards, load_board, load_entries, read_bibtex,
    render_all, render_board, schema_bytes, validate_entry, write_entry,
)
from ncbench.leaderboard._cli import register

REPO = Path(__file__).resolve().parents[1]
LEADERBOARDS = REPO / "leaderboards"
BOARD = "mnist1d/Linf"

BIBTEX = r"""% exported from a reference manager
@article{papyan2020prevalence,
  title   = {Prevalence of {N}eural {C}ollapse during the terminal phase of deep learning training},
  author  = {Papyan, Vardan and Han, X. Y. and Donoho, David L.},
  journal = {Proceedings of the National Academy of Sciences},
  volume  = {117},
  number  = {40},
  pages   = {24652--24663},
  year    = 2020,
  month   = oct,
  doi     = {10.1073/pnas.2015509117},
}
"""


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture
def lb(tmp_path):
    """A leaderboards folder holding a copy of the committed mnist1d/Linf board (no entries)."""
    root = tmp_path / "leaderboards"
    (root / BOARD).mkdir(parents=True)
    shutil.copy(LEADERBOARDS / BOARD / "board.yaml", root / BOARD / "board.yaml")
    return root


@pytest.fixture
def board(lb) -> Board:
    return load_board(BOARD, lb)


def _attack(board, name, label, eps, robust, params, checks, clean):
    """One attack's result in a record (``ncbench.record.Robustness``)."""
    return {"name": name, "norm": board.norm, "label": label, "params": params, "eps": list(eps),
            "eps_labels": [eps_label(e) for e in eps], "n_points": board.n_points, "precision": "fp32", "seed": 0,
            "batch_size": params.get("batch_size", 1000), "check_points": 256, "clean_accuracy": clean,
            "curve": [{"eps": e, "eps_label": eps_label(e), "robust_accuracy": r, "n_attacked": 10,
                       "wall_time_s": 1.0} for e, r in zip(eps, robust)],
            "first_fooled_eps": [None] * board.n_points, "checks": checks,
            "reliable": all(c["passed"] for c in checks),
            "unreliable_reasons": [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]],
            "margin": None, "bf16_disagreement": None, "wall_time_s": 2.0}


def make_record(board: Board, *, clean=0.9, robust=0.5, checksum="a" * 64, failed=None, **changes) -> dict:
    """A hand-made schema v2 record (docs/records.md) made with ``board``'s protocol; ``changes`` set fields
    by path (``robustness__n_points=300``)."""
    grid = list(board.curve_eps)

    def checks(names):
        return [{"check": n, "passed": n != failed, "detail": f"{n} detail"} for n in names]

    recipe = {"epochs": 60, "batch_size": 128, "lr": 0.05, "weight_decay": 0.005, "milestones": [20, 40]}
    dataset = {"name": "mnist1d", "args": {"seed": 42, "n_train": 1000, "subset_seed": 0}}
    record = {
        "schema_version": 2, "kind": "ncbench.evaluate", "created": "2025-03-04T23:59:07+00:00",
        "provenance": {
            "job_id": "b" * 64, "ncbench_version": "0.2.0",
            "identity": {"ncbench": "0.2", "dataset": dataset,
                         "model": {"source": "trained", "arch": "cnn1d", "args": {"channels": 32}, "seed": 3,
                                   "recipe": recipe, "collapse_epochs": 12}},
            "versions": {"torch": "2.14.1", "numpy": "2.0"}, "environment": {"device": "cpu"}, "seed": 3,
            "config": {"dataset": "mnist1d", "dataset_args": {"seed": 42, "n_train": 1000}, "data_dir": "/data",
                       "model": "cnn1d", "model_args": {"channels": 32}, "seed": 3, "train": recipe},
            "sweep": None, "dataset": {"name": "mnist1d", "n_train": 1000, "n_test": 1000},
            "model": {"arch": "cnn1d", "num_classes": 10, "input_shape": [1, 40], "mean": [0.5], "std": [0.2],
                      "args": {"channels": 32}, "checksum": checksum, "num_parameters": 12345, "source": "trained",
                      "checkpoint": None, "trained_by": None},
            "ls_gap_weight_decay": 0.005, "wall_time_s": {"total": 10.0},
        },
        "training": {"terminal_phase_epoch": 20, "final_loss": 0.01, "precision": "fp32", "history": [],
                     "collapse_history": []},
        "accuracy": {"train": 1.0, "test": 0.777},  # not the board's points: must not become clean_accuracy
        "collapse": {"train": {"nc1": 0.0123, "nc4_ncc_mismatch": 0.0, "ls_gap": 0.2},
                     "test": {"nc1": 0.456, "nc4_ncc_mismatch": 0.031, "nc1_test_on_train_means": 0.5}},
        "measures": {"num_parameters": 12345, "sum_squared_weights": 3.0, "train_margin_p10": 1.0,
                     "final_train_loss": 0.01},
        "robustness": _attack(board, "autoattack", "AutoAttack standard", [board.eps], [robust],
                              {"square_queries": 5000, "batch_size": board.attack_batch_size},
                              checks(["deterministic", "bounds@0.01"]), clean),
        "extra_robustness": [_attack(board, "pgd", "PGD-Linf, 20 steps", grid,
                                     [max(clean - 0.1 * i, 0.0) for i in range(len(grid))],
                                     {"steps": 20, "alpha_factor": 2.5, "random_start": True, "restarts": 1},
                                     checks(["recomputed@0.01"]), clean)],
    }
    for dotted, value in changes.items():
        obj, *path = dotted.split("__")
        if not path:
            record[obj] = value
            continue
        target = record[obj]
        for p in path[:-1]:
            target = target[int(p) if isinstance(target, list) else p]
        target[path[-1]] = value
    # the job identity's attack parts are what ran: derived from the (possibly changed) attack results
    ident = record["provenance"]["identity"]
    ident["attack"] = _identity_of(record["robustness"])
    ident["extra_attacks"] = [_identity_of(a) for a in record["extra_robustness"]]
    return record


def _identity_of(att: dict) -> dict:
    from ncbench.attacks import ATTACKS, AttackConfig

    own = {k: v for k, v in att["params"].items() if k in ATTACKS.get(att["name"]).params}
    if "batch_size" not in own:
        own["batch_size"] = att["batch_size"]
    cfg = AttackConfig(name=att["name"], norm=att["norm"], eps=tuple(att["eps"]), n_points=att["n_points"],
                       precision=att["precision"], check_points=att["check_points"], **own)
    return cfg.identity(att["seed"])


def make_entry(board, entry_id="m", **kw) -> dict:
    opts = {k: kw.pop(k) for k in ("name", "source", "paper", "reported", "external") if k in kw}
    return entry_from_records(board, make_record(board, **kw), entry_id=entry_id,
                              name=opts.pop("name", entry_id.upper()), source=opts.pop("source", "sweep"), **opts)


def external(board, robust, note="A stronger attack."):
    return {"attack": "Adaptive attack", "eps": board.eps, "robust_accuracy": robust, "footnote": note}


def paper(key):
    return {"title": f"Paper {key}", "authors": ["A. Author"], "venue": "ICML", "year": 2020, "url": None,
            "bibtex_key": key, "bibtex": f"@inproceedings{{{key},\n  title = {{Paper {key}}},\n}}"}


# ------------------------------------------------------------------------------------------ boards

@pytest.mark.parametrize("path", sorted(LEADERBOARDS.glob("*/*/board.yaml")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_every_committed_board_loads(path):
    b = load_board(path)
    assert b.id == f"{path.parent.parent.name}/{path.parent.name}"
    assert load_board(b.id, LEADERBOARDS) == b
    assert b.eps in b.curve_eps  # the curve passes through the headline budget
    assert b.curve_eps[0] == 0.0 and b.n_points >= 1 and b.regenerate.startswith("ncbench ")
    with pytest.raises(AttributeError):
        b.eps = 1.0  # frozen


def test_the_boards_of_the_issue_are_defined():
    ids = set(list_boards(LEADERBOARDS))
    for ds in ("mnist1d", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"):
        assert {f"{ds}/Linf", f"{ds}/L2"} <= ids
    assert load_board("cifar10/Linf", LEADERBOARDS).eps_label == "8/255"
    assert load_board("digits/Linf", LEADERBOARDS).n_points == 200  # the first 200 of its 450 test points


def test_unknown_board_lists_the_known_ones(lb):
    with pytest.raises(UnknownNameError, match=r"unknown board 'mnist1d/linf'; did you mean 'mnist1d/Linf'.*"
                                               r"boards under .*: mnist1d/Linf"):
        load_board("mnist1d/linf", lb)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t + "headline: 0.01\n", r"unknown key\(s\) \['headline'\]"),
    (lambda t: t.replace("  steps: 20\n", "  steps: 20\n  stepz: 3\n"), r"curve: unknown key\(s\) \['stepz'\]"),
    (lambda t: t.replace("seed: 42}", "seed: 42, n_train: 100}"), r"dataset_args \['n_train'\]"),
    (lambda t: t.replace("norm: Linf", "norm: L2"), r"declares mnist1d/L2 but lies in mnist1d/Linf"),
    (lambda t: t.replace("[0, 0.005, 0.01,", "[0, 0.01, 0.005,"), "strictly ascending"),
    (lambda t: t.replace("n_points: 200", "n_points: '200'"), "n_points must be an integer"),
    (lambda t: t.replace("version: standard", "version: plus"), r"attack.version must be one of \['standard'\]"),
])
def test_board_file_is_checked(lb, edit, match):
    path = lb / BOARD / "board.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(InputError, match=match):
        load_board(BOARD, lb)


# ------------------------------------------------------------------------------------------ schema

def test_a_built_entry_is_valid_and_follows_the_record(board):
    e = make_entry(board, clean=0.9, robust=0.5)
    assert validate_entry(e, board=board) is e
    assert e["clean_accuracy"] == 0.9  # robustness.clean_accuracy (the board's points), not accuracy.test
    assert e["robust_accuracy"] == {"value": 0.5, "attack": "autoattack", "label": "AutoAttack standard",
                                    "eps": 0.01, "eps_label": "0.01", "n_points": 200}
    assert [r["eps_label"] for r in e["pgd_curve"]] == list(board.curve_eps_labels)
    assert e["collapse"]["test"]["nc1_test_on_train_means"] == 0.5  # every metric is kept
    assert [c["check"] for c in e["checks"]] == ["autoattack:deterministic", "autoattack:bounds@0.01",
                                                 "pgd:recomputed@0.01"]
    assert e["reliable"] is True and e["unreliable_reasons"] == []
    assert e["training"] == {"source": "recipe", "recipe": make_record(board)["provenance"]["identity"]["model"]
                             ["recipe"], "seed": 3, "dataset": {"name": "mnist1d", "args": {
                                 "seed": 42, "n_train": 1000, "subset_seed": 0}}, "job_id": "b" * 64}
    assert (e["architecture"], e["architecture_args"], e["num_parameters"]) == ("cnn1d", {"channels": 32}, 12345)
    assert (e["date"], e["torch_version"], e["ncbench_version"]) == ("2025-03-04", "2.14.1", "0.2.0")


def _set(path, value):
    def edit(e):
        *parents, last = path
        for p in parents:
            e = e[p]
        if value is KeyError:
            del e[last]
        else:
            e[last] = value
    return edit


@pytest.mark.parametrize("edit, match", [
    (_set(["robust_accuracy", "value"], "0.5"), r"^robust_accuracy\.value: '0.5' is not of type 'number'"),
    (_set(["clean_accuracy"], "90%"), r"^clean_accuracy: '90%' is not of type 'number'"),
    (_set(["reliable"], KeyError), r"^\(entry\): 'reliable' is a required property"),
    (_set(["reliable"], None), r"^reliable: None is not of type 'boolean'"),
    (_set(["leaderboard_rank"], 3), r"^\(entry\): Additional properties are not allowed \('leaderboard_rank'"),
    (_set(["robust_accuracy", "std"], 0.1), r"^robust_accuracy: Additional properties are not allowed"),
    (_set(["pgd_curve", 1, "robust_accuracy"], 1.5), r"^pgd_curve\[1\]\.robust_accuracy: 1.5 is greater than "
                                                      "the maximum of 1"),
    (_set(["clean_accuracy"], -0.01), r"^clean_accuracy: -0.01 is less than the minimum of 0"),
    (_set(["collapse", "test", "nc1"], float("nan")), r"^collapse\.test\.nc1: nan is not a finite number"),
    (_set(["collapse", "train", "nc1"], "0.1"), r"^collapse\.train\.nc1: '0.1' is not of type 'number'"),
    (_set(["num_parameters"], 12345.0), r"^num_parameters: 12345.0 is not of type 'integer'"),
    (_set(["date"], "2025-13-01"), r"^date: '2025-13-01' is not a 'date'"),
    (_set(["id"], "Has Spaces"), r"^id: 'Has Spaces' does not match"),
    (_set(["training", "job_id"], KeyError), r"^training: 'job_id' is a required property"),
    (_set(["training", "source"], "external"), r"^training: Additional properties are not allowed"),
    (_set(["source"], "manual"), r"^source: 'manual' is not one of \['sweep', 'submit'\]"),
    (_set(["checks", 0, "passed"], False), r"^reliable: true, but check\(s\) autoattack:deterministic failed"),
    (_set(["robust_accuracy", "eps_label"], "1/100"), r"eps_label: '1/100' is not the label of eps 0.01"),
    (_set(["weights_file"], KeyError), r"^\(entry\): 'weights_file' is a required property"),
    (_set(["weights_file"], {"path": "../x.safetensors", "sha256": "0" * 64, "bytes": 5}),
     r"^weights_file\.path: '\.\./x\.safetensors' does not match"),
    (_set(["evaluation", "seed"], KeyError), r"^evaluation: 'seed' is a required property"),
    (_set(["schema_version"], 1), r"^schema_version: 1, written by an older ncbench .* rebuild the board"),
])
def test_schema_refuses(board, edit, match):
    e = make_entry(board)
    edit(e)
    with pytest.raises(InputError, match=match):
        validate_entry(e)


@pytest.mark.parametrize("edit, match", [
    (lambda e: e["robust_accuracy"].update(eps=0.02, eps_label="0.02"),
     "robust_accuracy.eps: 0.02 is not board mnist1d/Linf's headline budget 0.01"),
    (_set(["robust_accuracy", "n_points"], 100), "100 points, but board mnist1d/Linf attacks 200"),
    (lambda e: e["pgd_curve"].pop(), r"board mnist1d/Linf's curve is \['0', '0.005'"),
    (_set(["board"], "mnist1d/L2"), "the entry is for 'mnist1d/L2'"),
])
def test_entry_must_match_its_board(board, edit, match):
    e = make_entry(board)
    edit(e)
    validate_entry(e)  # valid on its own (schema)...
    with pytest.raises(InputError, match=match):
        validate_entry(e, board=board)  # ...but not on this board


def test_a_check_an_attack_ran_twice_is_listed_once(board):
    """Issue 18: entries listed ``autoattack:eval_mode`` twice (the attack checks it before and after). Catches
    an entry that copies every check of the record; a check whose outcome changed in between stays twice."""
    twice = [{"check": "eval_mode", "passed": True, "detail": "every module in eval mode"}] * 2
    record = make_record(board)
    record["robustness"]["checks"] = twice + record["robustness"]["checks"]
    e = entry_from_records(board, record, entry_id="x", name="x", source="sweep")
    assert [c["check"] for c in e["checks"]].count("autoattack:eval_mode") == 1
    record["robustness"]["checks"][1] = {"check": "eval_mode", "passed": True, "detail": "3 modules in train mode"}
    e = entry_from_records(board, record, entry_id="x", name="x", source="sweep")
    assert [c["check"] for c in e["checks"]].count("autoattack:eval_mode") == 2


def test_failed_check_makes_the_entry_unreliable_with_its_reason(board):
    e = make_entry(board, failed="recomputed@0.01")
    assert e["reliable"] is False
    assert e["unreliable_reasons"] == ["pgd:recomputed@0.01: recomputed@0.01 detail"]


@pytest.mark.parametrize("changes, match", [
    ({"robustness__curve": [{"eps": 0.02, "eps_label": "0.02", "robust_accuracy": 0.3, "n_attacked": 9,
                             "wall_time_s": 1.0}]}, "no result at board mnist1d/Linf's headline eps 0.01"),
    ({"robustness__name": "pgd", "robustness__params": {"steps": 20, "alpha_factor": 2.5, "random_start": True,
                                                         "restarts": 1}},
     r"did not follow board mnist1d/Linf's protocol: name: 'pgd' \(board: 'autoattack'\)"),
    ({"robustness__n_points": 300}, r"n_points: 300 \(board: 200\)"),
    ({"robustness__precision": "bf16"}, r"precision: 'bf16' \(board: 'fp32'\)"),
    # a weaker Square is not AutoAttack "standard"; a grid is not the headline budget alone
    ({"robustness__params": {"square_queries": 10, "batch_size": 1000}}, r"params: .*'square_queries': 10"),
    ({"robustness__eps": [0.005, 0.01]}, r"eps: \[0\.005, 0\.01\] \(board: \[0\.01\]\)"),
    ({"extra_robustness__0__params": {"steps": 5, "alpha_factor": 2.5, "random_start": True, "restarts": 1}},
     r"extra_robustness\[0\] \(the curve\) did not follow .*'steps': 5"),
    ({"extra_robustness": []}, "no extra_robustness"),
    ({"provenance__config__dataset_args": {"seed": 7}}, "split .* is not board mnist1d/Linf's"),
    ({"provenance__dataset__name": "digits"}, "on dataset 'digits'"),
])
def test_entry_from_records_refuses_a_record_of_another_protocol(board, changes, match):
    with pytest.raises(InputError, match=match):
        entry_from_records(board, make_record(board, **changes), entry_id="x", name="x", source="sweep")


def test_the_attack_batch_size_is_not_part_of_the_protocol(board):
    """AutoAttack's result does not depend on its batch size (one job, one result): a record made with another
    batch size follows the board's protocol. Catches an entry check that compares settings outside the job
    identity (and so refuses a result that is the same)."""
    record = make_record(board, robustness__params={"square_queries": 5000, "batch_size": 7})
    assert entry_from_records(board, record, entry_id="x", name="x", source="sweep")["board"] == BOARD


def test_entry_from_records_refuses_an_invalid_record(board):
    with pytest.raises(InputError, match="not a valid ncbench record"):
        entry_from_records(board, make_record(board, accuracy={"train": "1"}), entry_id="x", name="x",
                           source="sweep")


def test_training_of_checkpoints(board):
    ckpt = {"provenance__model__source": "checkpoint", "provenance__model__checkpoint": "/x.safetensors",
            "training": None}
    foreign = make_entry(board, **ckpt)
    assert foreign["training"] == {"source": "external"}
    trained_by = {"job_id": "c" * 64, "recipe": {"epochs": 5}, "seed": 1, "ncbench_version": "0.2.0",
                  "dataset": {"name": "mnist1d", "args": {"seed": 42}}}
    ours = make_entry(board, **ckpt, provenance__model__trained_by=trained_by)
    assert ours["training"] == {"source": "recipe", "recipe": {"epochs": 5}, "seed": 1, "job_id": "c" * 64,
                                "dataset": {"name": "mnist1d", "args": {"seed": 42}}}


def test_record_with_the_default_dataset_args_spelled_out_or_not_is_the_same_split(board):
    record = make_record(board, provenance__config__dataset_args={})  # every argument at its default
    assert entry_from_records(board, record, entry_id="x", name="x", source="sweep")["board"] == BOARD


# ------------------------------------------------------------------------------------------ write_entry

def test_write_entry_never_overwrites_and_replaces_only_the_same_weights(board):
    path = write_entry(make_entry(board, "m1", robust=0.5), board.path)
    assert path == board.path / "m1.json" and json.loads(path.read_text())["robust_accuracy"]["value"] == 0.5
    before = path.read_bytes()
    with pytest.raises(InputError, match="entry 'm1' already exists in board mnist1d/Linf.*--replace"):
        write_entry(make_entry(board, "m1", robust=0.4), board.path)
    with pytest.raises(InputError, match="with other weights.*--replace only replaces the same weights"):
        write_entry(make_entry(board, "m1", robust=0.4, checksum="c" * 64), board.path, replace=True)
    assert path.read_bytes() == before
    write_entry(make_entry(board, "m1", robust=0.4), board.path, replace=True)
    assert json.loads(path.read_text())["robust_accuracy"]["value"] == 0.4
    assert sorted(p.name for p in board.path.iterdir()) == ["board.yaml", "m1.json"]  # no temporary left


def test_write_entry_validates_against_the_board(board, lb):
    e = make_entry(board, "m1")
    e["pgd_curve"] = e["pgd_curve"][:3]
    with pytest.raises(InputError, match="curve is"):
        write_entry(e, board.path)
    assert not (board.path / "m1.json").exists()


def test_load_entries_refuses_a_file_named_other_than_its_id(board):
    write_entry(make_entry(board, "m1"), board.path)
    (board.path / "m1.json").rename(board.path / "other.json")
    with pytest.raises(InputError, match="other.json: id 'm1' is not the file's name"):
        load_entries(board.path)


# ------------------------------------------------------------------------------------------ rendering

def _rows(board_dir):
    return list(csv.DictReader(io.StringIO((board_dir / "table.csv").read_text())))


def test_rows_sort_numerically_by_best_known_then_clean(board):
    # as strings "9.50" > "10.20": a string sort would put the 9.5 % entry first
    for entry_id, robust, clean in (("low", 0.095, 0.9), ("high", 0.102, 0.9), ("tie-clean", 0.095, 0.95)):
        write_entry(make_entry(board, entry_id, robust=robust, clean=clean), board.path)
    write_entry(make_entry(board, "ext", robust=0.5, external=external(board, 0.09)), board.path)
    render_board(board.path)
    rows = _rows(board.path)
    assert [r["id"] for r in rows] == ["high", "tie-clean", "low", "ext"]  # ext: best known 9 %
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert float(rows[0]["robust_accuracy"]) == 0.102 and rows[0]["reliable"] == "true"  # fractions, numbers
    assert float(rows[3]["best_known_robust_accuracy"]) == 0.09 and float(rows[3]["robust_accuracy"]) == 0.5
    readme = (board.path / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [line.split(" | ")[1] for line in table] == ["HIGH", "TIE-CLEAN", "LOW", "EXT"]
    assert "| 10.20 | 10.20 |" in table[0] and "| 50.00 | 9.00[^1] |" in table[3]
    assert "[^1]: Adaptive attack (external): robust 9.00 % at eps 0.01. A stronger attack." in readme


def test_unreliable_entries_carry_their_reason(board):
    write_entry(make_entry(board, "bad", failed="deterministic"), board.path)
    write_entry(make_entry(board, "good"), board.path)
    render_board(board.path)
    readme = (board.path / "README.md").read_text()
    bad = next(line for line in readme.splitlines() if "| BAD |" in line)
    good = next(line for line in readme.splitlines() if "| GOOD |" in line)
    assert "| **no**[^1] |" in bad and "| yes |" in good
    assert "[^1]: Unreliable: autoattack:deterministic: deterministic detail." in readme
    assert "no\\textsuperscript{1}" in (board.path / "table.tex").read_text()
    row = next(r for r in _rows(board.path) if r["id"] == "bad")
    assert row["reliable"] == "false" and row["unreliable_reasons"] == "autoattack:deterministic: deterministic detail"


def test_reported_numbers_are_footnoted(board):
    write_entry(make_entry(board, "claimed", robust=0.5, reported={"robust_accuracy": 0.62}), board.path)
    render_board(board.path)
    readme = (board.path / "README.md").read_text()
    assert "| 50.00[^1] |" in readme
    assert "[^1]: Reported by the submitter: robust 62.00 %; ncbench measures clean 90.00 %, robust 50.00 %." in readme


def test_render_twice_gives_identical_bytes(board):
    write_entry(make_entry(board, "a", robust=0.3, paper=paper("smith2020"), failed="deterministic"), board.path)
    write_entry(make_entry(board, "b", robust=0.3, external=external(board, 0.2)), board.path)
    first = {p.name: p.read_bytes() for p in render_board(board.path)}
    for name in first:
        (board.path / name).unlink()
    second = {p.name: p.read_bytes() for p in render_board(board.path)}
    assert first == second and set(first) == {"README.md", "table.tex", "table.csv", "entries.bib"}


def test_citet_only_for_entries_with_a_paper(board):
    write_entry(make_entry(board, "with-paper", robust=0.6, paper=paper("smith2020")), board.path)
    write_entry(make_entry(board, "also-with", robust=0.55, paper=paper("smith2020")), board.path)
    write_entry(make_entry(board, "without", robust=0.5), board.path)
    render_board(board.path)
    tex = (board.path / "table.tex").read_text()
    rows = {line.split(" & ")[1]: line for line in tex.splitlines() if line[:1].isdigit()}
    assert rows.keys() == {r"WITH-PAPER \citet{smith2020}", r"ALSO-WITH \citet{smith2020}", "WITHOUT"}
    assert tex.count(r"\citet{") == 2 and r"\toprule" in tex and r"\bottomrule" in tex
    bib = (board.path / "entries.bib").read_text()
    assert bib.count("@inproceedings{smith2020,") == 1  # one BibTeX per key


def test_entries_bib_is_empty_without_papers_and_sorted_by_key(board):
    write_entry(make_entry(board, "a"), board.path)
    render_board(board.path)
    assert (board.path / "entries.bib").read_bytes() == b""
    write_entry(make_entry(board, "b", paper=paper("zeta2021")), board.path)
    write_entry(make_entry(board, "c", paper=paper("alpha2019")), board.path)
    render_board(board.path)
    bib = (board.path / "entries.bib").read_text()
    assert bib.index("alpha2019") < bib.index("zeta2021")


def test_a_name_with_a_pipe_does_not_break_the_table(board):
    write_entry(make_entry(board, "pipe", name="A | B"), board.path)
    render_board(board.path)
    line = next(x for x in (board.path / "README.md").read_text().splitlines() if "A \\| B" in x)
    assert line.count(" | ") == 11  # 12 cells


def test_check_rendered_finds_a_hand_edited_file(board, lb):
    write_entry(make_entry(board, "a"), board.path)
    render_all(lb)
    assert (lb / "schema" / "entry.schema.json").read_bytes() == schema_bytes()
    assert check_rendered(lb) == []
    csv_path = board.path / "table.csv"
    csv_path.write_text(csv_path.read_text().replace("0.5", "0.55"))
    (board.path / "entries.bib").unlink()
    assert check_rendered(lb) == ["mnist1d/Linf/entries.bib", "mnist1d/Linf/table.csv"]
    assert not (board.path / "entries.bib").exists()  # check never writes into the folder


def test_check_rendered_sees_a_new_entry_that_was_not_rendered(board, lb):
    render_all(lb)
    write_entry(make_entry(board, "a"), board.path)
    assert "mnist1d/Linf/README.md" in check_rendered(lb)


def test_render_all_renders_measures_boards(lb, monkeypatch):
    calls = []

    def fake(board_dir):
        calls.append(Path(board_dir).name)
        (Path(board_dir) / "README.md").write_text("measures\n")
        return [Path(board_dir) / "README.md"]

    try:
        import ncbench.analysis as analysis
    except ImportError:
        analysis = types.ModuleType("ncbench.analysis")
        monkeypatch.setitem(sys.modules, "ncbench.analysis", analysis)
    monkeypatch.setattr(analysis, "render_measures_board", fake, raising=False)
    for sweep in ("grid-a", "grid-b", "no-csv"):
        (lb / "measures" / sweep).mkdir(parents=True)
    for sweep in ("grid-a", "grid-b"):
        (lb / "measures" / sweep / "measures.csv").write_text("x\n1\n")
    paths = render_all(lb)
    assert calls == ["grid-a", "grid-b"]  # every folder with a measures.csv, in order; none without
    assert lb / "measures" / "grid-b" / "README.md" in paths
    calls.clear()
    render_all(lb, boards=["measures/grid-b"])
    assert calls == ["grid-b"]


def test_render_all_skips_boards_never_rendered_but_renders_a_named_one(lb, board):
    render_all(lb)
    assert not (board.path / "README.md").exists()  # no entries, never rendered: left alone
    render_all(lb, boards=[BOARD])
    assert "No entries yet" in (board.path / "README.md").read_text()


def test_committed_leaderboards_are_rendered_and_pass_the_check():
    from ncbench.leaderboard._check import check_entries

    assert check_entries(LEADERBOARDS) == []  # schema, committed weights, committed data exports
    assert check_rendered(LEADERBOARDS) == []


# ------------------------------------------------------------------------------------------ BibTeX

def test_read_bibtex_parses_one_entry(tmp_path):
    path = tmp_path / "paper.bib"
    path.write_text(BIBTEX)
    p = read_bibtex(path)
    assert p["title"] == "Prevalence of Neural Collapse during the terminal phase of deep learning training"
    assert p["authors"] == ["Papyan, Vardan", "Han, X. Y.", "Donoho, David L."]
    assert (p["venue"], p["year"], p["bibtex_key"]) == ("Proceedings of the National Academy of Sciences", 2020,
                                                        "papyan2020prevalence")
    assert p["url"] == "https://doi.org/10.1073/pnas.2015509117"
    assert p["bibtex"].startswith("@article{papyan2020prevalence,") and p["bibtex"].endswith("}")
    e_paper = dict(p)
    assert set(e_paper) == set(ENTRY_SCHEMA["properties"]["paper"]["properties"])  # usable as an entry's paper


def test_read_bibtex_keeps_braced_and_in_one_author_and_reads_booktitle(tmp_path):
    path = tmp_path / "p.bib"
    path.write_text('@InProceedings(k1, author = "{Barnes and Noble} and Ng, A." # "", '
                    'booktitle = {ICLR}, title = "A {"}B{"} title", url = {https://x.org/a_b})')
    p = read_bibtex(path)
    assert p["authors"] == ["Barnes and Noble", "Ng, A."]
    assert (p["venue"], p["year"], p["url"]) == ("ICLR", None, "https://x.org/a_b")


@pytest.mark.parametrize("text, match", [
    (BIBTEX + "\n@misc{other, title={Other}}\n", r"holds 2 BibTeX entries \(papyan2020prevalence, other\)"),
    ("% nothing here\n@comment{not an entry}\n", "holds 0 BibTeX entries"),
    ("@string{pnas = {PNAS}}\n" + BIBTEX, "@string macros are not supported"),
    ("@article{k, title = {Unclosed}\n", "never closed"),
    ("@article{k, title = {T}, journal = pnas}", "undefined macro 'pnas'"),
    ("@article{k, title = {T}, title = {U}}", "field 'title' appears twice"),
    ("@article{k, author = {A}}", "has no title"),
])
def test_read_bibtex_refuses(tmp_path, text, match):
    path = tmp_path / "bad.bib"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        read_bibtex(path)


# ------------------------------------------------------------------------------------------ CLI

def _cli(argv):
    parser = argparse.ArgumentParser(prog="ncbench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_render_and_check(board, lb, capsys):
    write_entry(make_entry(board, "a", source="submit"), board.path)  # a submission: no data export to agree with
    assert _cli(["leaderboard", "check", "--leaderboards", str(lb)]) == 1
    assert "mnist1d/Linf/README.md" in capsys.readouterr().err
    assert _cli(["leaderboard", "render", BOARD, "--leaderboards", str(lb)]) == 0
    assert "README.md" in capsys.readouterr().out
    assert _cli(["leaderboard", "render", "--leaderboards", str(lb)]) == 0  # writes the schema too
    assert _cli(["leaderboard", "check", "--leaderboards", str(lb)]) == 0
    with pytest.raises(UnknownNameError, match="unknown board 'nope/Linf'"):
        _cli(["leaderboard", "render", "nope/Linf", "--leaderboards", str(lb)])


def test_schema_file_matches_the_schema_in_code():
    committed = LEADERBOARDS / "schema" / "entry.schema.json"
    assert committed.read_bytes() == schema_bytes()
    assert json.loads(committed.read_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"



# ------------------------------------------------------------------------ committed weights, check, verify

TRAINED_JOB = "c" * 64


@pytest.fixture
def built(lb, board, tmp_path):
    """A board as ``ncbench leaderboard build`` leaves it: an entry (source sweep) made from its protocol job's
    record, its weights committed under weights/, the grid's export (records.jsonl.gz, results.csv) and the
    protocol jobs' export (boards.jsonl.gz) under data/g/, every table rendered."""
    import torch

    from ncbench.leaderboard._weights import commit_weights
    from ncbench.models import create_model, model_checksum, save_checkpoint
    from ncbench.record import upgrade_record
    from ncbench.store import ResultsStore, frame_csv, gzip_bytes, load_frame, records_jsonl

    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 40), num_classes=10, width=8, depth=1)
    n = sum(p.numel() for p in model.parameters())
    dataset = {"name": "mnist1d", "args": {"seed": 42, "n_train": 1000, "subset_seed": 0}}
    trained_by = {"job_id": TRAINED_JOB, "recipe": {"epochs": 60}, "seed": 3, "dataset": dataset,
                  "ncbench_version": "0.2.0"}
    ckpt = save_checkpoint(model, tmp_path / "ckpt.safetensors", training=trained_by)
    same = {"checksum": model_checksum(model), "provenance__model__num_parameters": n, "measures__num_parameters": n}
    protocol = make_record(board, **same, provenance__model__source="checkpoint",
                           provenance__model__checkpoint=str(ckpt), provenance__model__trained_by=trained_by,
                           training=None, provenance__sweep={"name": "g@mnist1d/Linf", "axes": {"seed": 3}})
    grid = make_record(board, **same, provenance__job_id=TRAINED_JOB, provenance__sweep={"name": "g",
                                                                                          "axes": {"seed": 3}})
    weights = commit_weights(ckpt, lb)
    entry = entry_from_records(board, protocol, entry_id="m", name="M", source="sweep", weights_file=weights)
    write_entry(entry, board.path)
    data = lb / "data" / "g"
    data.mkdir(parents=True)
    (data / "boards.jsonl.gz").write_bytes(gzip_bytes(records_jsonl([protocol])))
    (data / "records.jsonl.gz").write_bytes(gzip_bytes(records_jsonl([grid])))
    with ResultsStore(tmp_path / "s.sqlite") as st:
        st.put_record(upgrade_record(grid))
        (data / "results.csv").write_bytes(frame_csv(load_frame(st, sweep="g")))
    render_all(lb)
    return types.SimpleNamespace(lb=lb, board=board, entry=entry, weights=lb / weights["path"], n=n,
                                 protocol=protocol, checkpoint=ckpt)


def _edit_entry(built, edit, render=True):
    """Change the committed entry file and re-render, so that only the new checks can see the change."""
    path = built.board.path / "m.json"
    entry = json.loads(path.read_text())
    edit(entry)
    path.write_text(json.dumps(entry))
    if render:
        render_all(built.lb)


def test_check_passes_on_what_a_build_leaves(built, capsys):
    from ncbench.leaderboard._check import check_entries

    assert built.weights.is_file() and built.entry["weights_file"]["bytes"] == built.weights.stat().st_size
    assert check_entries(built.lb) == []
    assert _cli(["leaderboard", "check", "--leaderboards", str(built.lb)]) == 0
    assert "agrees with the committed data exports" in capsys.readouterr().out


@pytest.mark.parametrize("change, expected", [
    # a check that only re-renders the tables (the old one) passes every case below
    (lambda b: _edit_entry(b, _set(["clean_accuracy"], 0.91)),
     [r"^mnist1d/Linf/m: clean_accuracy: committed 0\.91, exported 0\.9 \(data/g/boards\.jsonl\.gz\)$"]),
    # a collapse number: against the protocol record exactly, and the grid's record and table within 1e-4
    (lambda b: _edit_entry(b, lambda e: e["collapse"]["train"].update(nc1=0.0124)),
     [r"collapse\.train\.nc1: committed 0\.0124, exported 0\.0123 \(data/g/boards\.jsonl\.gz\)",
      r"collapse\.train\.nc1: committed 0\.0124, exported 0\.0123 \(data/g/records\.jsonl\.gz\)",
      r"collapse\.train\.nc1: committed 0\.0124, exported 0\.0123 \(data/g/results\.csv\)"]),
    (lambda b: _edit_entry(b, _set(["num_parameters"], 999)),
     [r"num_parameters: committed 999, the committed file's model has \d+",
      r"num_parameters: committed 999, exported \d+ \(data/g/boards",
      r"num_parameters: committed 999, exported \d+ \(data/g/records", r"num_parameters: committed 999, "
      r"exported '\d+' \(data/g/results\.csv\)"]),
    (lambda b: b.weights.write_bytes(b.weights.read_bytes()[:-1] + b"\x01"),
     [r"^mnist1d/Linf/m: weights_file\.sha256: committed [0-9a-f]{64}, the file's is [0-9a-f]{64}$"]),
    (lambda b: b.weights.unlink(), [r"weights_file\.path: weights/[0-9a-f]{16}\.safetensors is not committed"]),
    (lambda b: (b.lb / "weights" / "ffffffffffffffff.safetensors").write_bytes(b"x"),
     [r"^weights/ffffffffffffffff\.safetensors: no entry names this weights file"]),
    (lambda b: (b.lb / "data" / "g" / "boards.jsonl.gz").unlink(),
     [r"evaluation\.job_id: no committed export holds its record b{16}\.\.\."]),
    (lambda b: _edit_entry(b, _set(["weights_file"], KeyError), render=False),
     [r"^mnist1d/Linf/m: \(entry\): 'weights_file' is a required property",
      r"^weights/[0-9a-f]{16}\.safetensors: no entry names this weights file"]),
])
def test_check_names_the_entry_field_and_both_values(built, change, expected, capsys):
    import re

    from ncbench.leaderboard._check import check_entries

    change(built)
    problems = check_entries(built.lb)
    assert len(problems) == len(expected), problems
    for pattern, line in zip(expected, problems):
        assert re.search(pattern, line), (pattern, line)
    assert _cli(["leaderboard", "check", "--leaderboards", str(built.lb)]) == 1
    assert problems[0] in capsys.readouterr().err


def test_compare_states_its_tolerances(board):
    """Catches a tolerance that is too loose (a changed number passes) or too tight (rounding fails)."""
    from ncbench.leaderboard._verify import compare

    e = make_entry(board)
    n_split = {"train": 1000, "test": 1000}
    assert compare(e, copy.deepcopy(e), n_split=n_split) == []

    def changed(edit):
        f = copy.deepcopy(e)
        edit(f)
        return compare(e, f, n_split=n_split)

    assert changed(lambda f: f.update(clean_accuracy=0.9 + 1 / 200)) == []  # one sample of 200 points
    assert changed(lambda f: f.update(clean_accuracy=0.9 + 2 / 200)) == [
        "clean_accuracy: committed 0.9, re-evaluated 0.91 (tolerance 1/200)"]
    assert changed(lambda f: f["robust_accuracy"].update(value=0.51)) == []
    assert changed(lambda f: f["robust_accuracy"].update(value=0.515)) == [
        "robust_accuracy.value: committed 0.5, re-evaluated 0.515 (tolerance 0.01)"]
    assert changed(lambda f: f["pgd_curve"][2].update(robust_accuracy=e["pgd_curve"][2]["robust_accuracy"] + 0.02)
                   )[0].startswith("pgd_curve@0.01: committed 0.7, re-evaluated 0.72 (tolerance 0.01)")
    assert changed(lambda f: f["collapse"]["test"].update(nc1=0.456 * (1 + 5e-5))) == []
    assert changed(lambda f: f["collapse"]["test"].update(nc1=0.456 * (1 + 2e-4))) == [
        "collapse.test.nc1: committed 0.456, re-evaluated 0.456091 (tolerance relative 0.0001)"]
    assert changed(lambda f: f["collapse"]["test"].update(nc4_ncc_mismatch=0.032)) == []  # one test point
    assert len(changed(lambda f: f["collapse"]["test"].update(nc4_ncc_mismatch=0.033))) == 1
    assert changed(lambda f: f.update(weights_sha256="d" * 64))[0].startswith("weights_sha256: committed 'aaaa")
    assert changed(lambda f: f["evaluation"].update(job_id="e" * 64))[0].startswith("evaluation.job_id")


def test_verify_reruns_the_protocol_on_the_committed_weights(built, monkeypatch, capsys):
    """verify loads the committed file (not the sweep's checkpoint), runs the board's protocol with the entry's
    seed, and reports what differs. The evaluation itself is stood in for by the entry's own record (the real
    one runs in tests/test_submit.py's slow test); catches a verify that evaluates another file or seed, that
    compares nothing, or whose exit code ignores a difference."""
    import ncbench.evaluate
    from ncbench.leaderboard import _verify

    seen = []
    answer = {"record": built.protocol}

    def fake_run_evaluate(cfg, *, progress=True, **kw):
        seen.append((cfg.checkpoint, cfg.seed, cfg.attack.name, [a.name for a in cfg.extra_attacks]))
        return answer["record"]

    monkeypatch.setattr(ncbench.evaluate, "run_evaluate", fake_run_evaluate)
    assert _verify.verify("mnist1d/Linf/m", leaderboards=built.lb) == [("mnist1d/Linf/m", [])]
    assert seen == [(str(built.weights), 3, "autoattack", ["pgd"])]
    bumped = copy.deepcopy(built.protocol)
    bumped["robustness"]["curve"][0]["robust_accuracy"] = 0.55
    answer["record"] = bumped
    assert _cli(["leaderboard", "verify", "mnist1d/Linf", "--leaderboards", str(built.lb)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS mnist1d/Linf/m" in out and "robust_accuracy.value: committed 0.5, re-evaluated 0.55 " \
        "(tolerance 0.01)" in out and "0 of 1 entry reproduced within the tolerances; 1 differ" in out
    built.weights.write_bytes(b"not the weights")  # a changed file is reported, not evaluated
    (diffs,) = [d for _, d in _verify.verify(None, leaderboards=built.lb)]
    assert diffs[0].startswith("weights_file.sha256") and len(seen) == 2
    with pytest.raises(InputError, match=r"board mnist1d/Linf has no entry 'mm'; did you mean 'm'\?"):
        _verify.verify("mnist1d/Linf/mm", leaderboards=built.lb)
    with pytest.raises(InputError, match="expected BOARD"):
        _verify.verify("mnist1d", leaderboards=built.lb)
