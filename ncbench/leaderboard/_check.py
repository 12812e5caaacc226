"""``ncbench leaderboard check``: every committed entry is valid, holds its committed weights, and says what the
committed data exports say.

Four checks, each problem one line naming the file or entry, the field, the committed and the found value:

1. every entry file validates against the entry schema and its board (:func:`validate_entry`), and its id is
   its file name;
2. its committed weights (``weights_file``) are there, unchanged (sha256, size), and hold the entry's model
   (``weights_sha256``, ``num_parameters``); no file under ``weights/`` is left that no entry names;
3. an entry a build made (``source: sweep``) agrees with the data exports under ``data/<sweep>/`` it was built
   from: rebuilt from its protocol job's record (``boards.jsonl.gz``), it is the committed entry field for
   field; and the grid's record of the model it names (``records.jsonl.gz``, ``results.csv``) has the same
   weights checksum and parameter count, and the same collapse and clean accuracy within the fixed-weights
   tolerances (:mod:`ncbench.leaderboard._verify`: the protocol job re-measured the same weights);
4. the rendered tables are current (:func:`check_rendered`).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

from .._errors import InputError, NcbenchError

DATA_DIR = "data"
GRID_RECORDS = "records.jsonl.gz"
BOARD_RECORDS = "boards.jsonl.gz"
RESULTS = "results.csv"


def _records(path: Path) -> dict[str, dict]:
    out = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            out[record["provenance"]["job_id"]] = record
    return out


class DataExports:
    """The records and tables under ``<leaderboards>/data/*/``, indexed by job id."""

    def __init__(self, leaderboards: str | Path) -> None:
        self.grid: dict[str, tuple[str, dict]] = {}
        self.boards: dict[str, tuple[str, dict]] = {}
        self.rows: dict[str, tuple[str, dict]] = {}
        self.problems: list[str] = []
        for folder in sorted((Path(leaderboards) / DATA_DIR).glob("*/")):
            for name, index in ((GRID_RECORDS, self.grid), (BOARD_RECORDS, self.boards)):
                path = folder / name
                if path.is_file():
                    try:
                        index.update({j: (str(path), r) for j, r in _records(path).items()})
                    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, json.JSONDecodeError,
                            KeyError, TypeError) as err:
                        self.problems.append(f"{path}: not a records export ({type(err).__name__}: {err})")
            path = folder / RESULTS
            if path.is_file():
                with open(path, newline="", encoding="utf-8") as f:
                    self.rows.update({row["job_id"]: (str(path), row) for row in csv.DictReader(f) if "job_id" in row})


def _flat(obj, prefix="") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: obj}


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _close(a, b, *, count: int | None = None) -> bool:
    """Within the fixed-weights tolerances: one sample of ``count`` points, else relative 1e-4."""
    from ._verify import COLLAPSE_ATOL, COLLAPSE_RTOL

    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return False
    if count:
        return abs(a - b) <= 1 / count + 1e-12
    return math.isclose(a, b, rel_tol=COLLAPSE_RTOL, abs_tol=COLLAPSE_ATOL)


def _against_board_record(entry: dict, board, record: dict, where: str) -> list[str]:
    """The entry rebuilt from the record it was built from must be the entry, field for field."""
    from ._entry import entry_from_records

    try:
        rebuilt = entry_from_records(board, record, entry_id=entry["id"], name=entry["name"], source=entry["source"],
                                     paper=entry["paper"], reported=entry["reported"], external=entry["external"],
                                     weights_file=entry["weights_file"])
    except NcbenchError as err:
        return [f"evaluation.job_id: its record in {where} does not make an entry: {err}"]
    mine, theirs = _flat(entry), _flat(rebuilt)
    return [f"{k}: committed {mine.get(k)!r}, exported {theirs.get(k)!r} ({where})"
            for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]


def _against_grid(entry: dict, board, record: dict | None, row: dict | None, where: tuple[str, str]) -> list[str]:
    """The model's own grid record and results.csv row: same weights, same size, same numbers within the
    fixed-weights tolerances (the protocol job measured the same weights again)."""
    out = []
    if record is not None:
        model, ds = record["provenance"]["model"], record["provenance"]["dataset"]
        for field, value in (("weights_sha256", model.get("checksum")),
                             ("num_parameters", model.get("num_parameters"))):
            if entry[field] != value:
                out.append(f"{field}: committed {entry[field]!r}, exported {value!r} ({where[0]})")
        for split, metrics in entry["collapse"].items():
            count_of = ds.get("n_train") if split == "train" else ds.get("n_test")
            for key, value in metrics.items():
                theirs = (record.get("collapse") or {}).get(split, {}).get(key)
                count = count_of if key in ("nc4_ncc_mismatch", "ncc_accuracy") else None
                if not _close(value, theirs, count=count):
                    out.append(f"collapse.{split}.{key}: committed {value!r}, exported {theirs!r} ({where[0]})")
        if ds.get("n_test") == board.n_points:  # the board attacks the whole test split: clean = test accuracy
            test = (record.get("accuracy") or {}).get("test")
            if not _close(entry["clean_accuracy"], test, count=board.n_points):
                out.append(f"clean_accuracy: committed {entry['clean_accuracy']!r}, exported accuracy.test "
                           f"{test!r} ({where[0]})")
    if row is not None:
        n = _number(row.get("num_parameters"))
        if n is None or int(n) != entry["num_parameters"]:
            out.append(f"num_parameters: committed {entry['num_parameters']!r}, exported {row.get('num_parameters')!r} "
                       f"({where[1]})")
        ds = record["provenance"]["dataset"] if record is not None else {}
        counts = {"train": ds.get("n_train", _number(row.get("n_train"))),
                  "test": ds.get("n_test", _number(row.get("n_test")))}
        for split, metrics in entry["collapse"].items():
            for key, value in metrics.items():
                column = f"{split}.{key}"
                if column not in row:
                    continue
                count = counts.get(split) if key in ("nc4_ncc_mismatch", "ncc_accuracy") else None
                if not _close(value, _number(row[column]), count=int(count) if count else None):
                    out.append(f"collapse.{split}.{key}: committed {value!r}, exported {row[column]} ({where[1]})")
        if counts.get("test") == board.n_points and "test_accuracy" in row:
            if not _close(entry["clean_accuracy"], _number(row["test_accuracy"]), count=board.n_points):
                out.append(f"clean_accuracy: committed {entry['clean_accuracy']!r}, exported test_accuracy "
                           f"{row['test_accuracy']} ({where[1]})")
    return out


def check_entries(leaderboards: str | Path = "leaderboards", *, weights: bool = True) -> list[str]:
    """Checks 1-3 of the module docstring; one line per problem (``<board>/<entry>: field: ...``), [] if none.

    ``weights``: also load each committed weights file (a few milliseconds per model).
    """
    from ._boards import list_boards, load_board
    from ._schema import validate_entry
    from ._weights import check_weights, stray_weights

    root = Path(leaderboards)
    if not root.is_dir():
        raise InputError(f"no leaderboards folder {root}")
    data = DataExports(root)
    problems = list(data.problems)
    for board_id in list_boards(root):
        board = load_board(board_id, root)
        for path in sorted(board.path.glob("*.json")):
            label = f"{board_id}/{path.stem}"
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                validate_entry(entry, board=board)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                problems.append(f"{label}: cannot read {path}: {err}")
                continue
            except InputError as err:
                problems.append(f"{label}: {err}")
                continue
            if entry["id"] != path.stem:
                problems.append(f"{label}: id {entry['id']!r} is not the file's name ({path.name})")
            if weights:
                problems += [f"{label}: {line}" for line in check_weights(entry, root)]
            if entry["weights_file"] is None and entry["source"] == "sweep":
                problems.append(f"{label}: weights_file: null, but a build commits every model's weights")
            if entry["source"] != "sweep":
                continue
            job = entry["evaluation"]["job_id"]
            if job not in data.boards:
                problems.append(f"{label}: evaluation.job_id: no committed export holds its record {job[:16]}... "
                                f"({DATA_DIR}/*/{BOARD_RECORDS}; rebuild the board with `{board.regenerate}`)")
            else:
                where, record = data.boards[job]
                problems += [f"{label}: {line}" for line in _against_board_record(entry, board, record,
                                                                                   str(Path(where).relative_to(root)))]
            trained = entry["training"].get("job_id")
            record_file, record = data.grid.get(trained, ("", None))
            row_file, row = data.rows.get(trained, ("", None))
            if record is None and row is None:
                problems.append(f"{label}: training.job_id: no committed export holds the model's grid job "
                                f"{str(trained)[:16]}... ({DATA_DIR}/*/{GRID_RECORDS}, {RESULTS})")
                continue
            where = tuple(str(Path(f).relative_to(root)) if f else "" for f in (record_file, row_file))
            problems += [f"{label}: {line}" for line in _against_grid(entry, board, record, row, where)]
    problems += [f"{p.relative_to(root)}: no entry names this weights file (remove it, or rebuild)"
                 for p in stray_weights(root)]
    return problems
