"""The entry schema (JSON Schema draft 2020-12) and :func:`validate_entry`.

The schema lives here, as data, and is written to ``leaderboards/schema/entry.schema.json`` by
:func:`ncbench.leaderboard.render_all` (so the committed file and the validator can never disagree: CI
re-renders and compares). Every object whose shape ncbench defines has ``additionalProperties: false``;
accuracies are fractions in [0, 1] and every number is a JSON number, never a string.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .._budget import canonical_eps, eps_label
from .._errors import InputError

#: 2: ``weights_file`` (the committed safetensors and its sha256) and ``evaluation`` (the protocol job)
SCHEMA_VERSION = 2
SCHEMA_ID = "urn:ncbench:leaderboard-entry"

_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_NULLABLE_FRACTION = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_TEXT = {"type": "string", "minLength": 1}


def _object(properties: dict, required: list[str] | None = None, *, nullable: bool = False,
            description: str | None = None) -> dict:
    out = {"type": ["object", "null"] if nullable else "object", "additionalProperties": False,
           "required": list(properties) if required is None else required, "properties": properties}
    if description:
        out = {"description": description, **out}
    return out


ENTRY_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "ncbench leaderboard entry",
    "description": "One model on one board (leaderboards/<dataset>/<norm>/<id>.json). Accuracies are fractions "
                   "in [0, 1]; budgets are in the [0, 1] input scale. Written by ncbench (sweep or submit); "
                   "edit through ncbench, not by hand.",
    "$defs": {
        "fraction": _FRACTION,
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "eps": {"type": "number", "minimum": 0},
        "eps_label": _TEXT,
        "metrics": {"type": "object", "minProperties": 1,
                    "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                    "additionalProperties": {"type": "number"},
                    "description": "collapse metric name (docs/metrics.md) -> value"},
    },
    **_object({
        "schema_version": {"const": SCHEMA_VERSION},
        "id": {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?$",
               "description": "slug, unique within the board; the file is <id>.json"},
        "board": {"type": "string", "pattern": "^[a-z0-9_]+/(Linf|L2)$", "description": "dataset/norm"},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "architecture": {**_TEXT, "description": "the registered architecture (ncbench.models)"},
        "architecture_args": {"type": "object", "description": "its arguments, as the checkpoint's spec holds them"},
        "num_parameters": {"type": "integer", "minimum": 1},
        "weights_sha256": {"$ref": "#/$defs/sha256",
                           "description": "ncbench.models.model_checksum: sha256 over the state dict's names, "
                                          "dtypes, shapes and bytes"},
        "weights_file": _object({
            "path": {"type": "string", "pattern": "^weights/[0-9a-f]{16}\\.safetensors$",
                     "description": "relative to the leaderboards folder: weights/<first 16 hex of sha256>"
                                    ".safetensors"},
            "sha256": {"$ref": "#/$defs/sha256", "description": "sha256 of the file's bytes"},
            "bytes": {"type": "integer", "minimum": 1},
        }, nullable=True, description="the committed weights that `ncbench leaderboard verify` re-evaluates "
                                      "(shared by the boards of the same model), or null for a model that "
                                      "cannot be written as safetensors (a torch.export archive)"),
        "evaluation": _object({
            "job_id": {"$ref": "#/$defs/sha256", "description": "provenance.job_id of the record the entry was "
                                                               "built from (the board's protocol on these weights)"},
            "seed": {"type": "integer", "description": "the protocol job's seed (it seeds the attacks)"},
        }, description="the job that measured this entry"),
        "training": {
            "description": "how the model was trained: an ncbench recipe (the effective training recipe, the "
                           "training seed, the training data, the job that trained it) or elsewhere",
            "type": "object", "required": ["source"], "properties": {"source": {"enum": ["recipe", "external"]}},
            "allOf": [  # one shape per source (if/then, so that errors name the field at fault)
                {"if": {"properties": {"source": {"const": "recipe"}}},
                 "then": _object({"source": {"const": "recipe"}, "recipe": {"type": "object"},
                                  "seed": {"type": "integer"},
                                  "dataset": _object({"name": _TEXT, "args": {"type": "object"}}),
                                  "job_id": {"$ref": "#/$defs/sha256"}})},
                {"if": {"properties": {"source": {"const": "external"}}},
                 "then": _object({"source": {"const": "external"}})},
            ],
        },
        "clean_accuracy": {**_FRACTION, "description": "clean top-1 on the board's n_points test points"},
        "robust_accuracy": _object({
            "value": {"$ref": "#/$defs/fraction"},
            "attack": _TEXT, "label": _TEXT,
            "eps": {"$ref": "#/$defs/eps"}, "eps_label": {"$ref": "#/$defs/eps_label"},
            "n_points": {"type": "integer", "minimum": 1},
        }, description="the board's attack at its headline budget"),
        "pgd_curve": {"type": "array", "minItems": 1, "items": _object({
            "eps": {"$ref": "#/$defs/eps"}, "eps_label": {"$ref": "#/$defs/eps_label"},
            "robust_accuracy": {"$ref": "#/$defs/fraction"}})},
        "collapse": _object({
            "train": {"allOf": [{"$ref": "#/$defs/metrics"}, {"required": ["nc1"]}]},
            "test": {"allOf": [{"$ref": "#/$defs/metrics"}, {"required": ["nc1", "nc4_ncc_mismatch"]}]},
        }),
        "checks": {"type": "array", "items": _object({"check": _TEXT, "passed": {"type": "boolean"},
                                                      "detail": {"type": "string"}})},
        "reliable": {"type": "boolean", "description": "true exactly when every check passed"},
        "unreliable_reasons": {"type": "array", "items": _TEXT},
        "reported": _object({"clean_accuracy": _NULLABLE_FRACTION, "robust_accuracy": _NULLABLE_FRACTION},
                            nullable=True, description="the numbers the submitter claimed, or null"),
        "external": _object({"attack": _TEXT, "eps": {"$ref": "#/$defs/eps"},
                             "robust_accuracy": {"$ref": "#/$defs/fraction"}, "footnote": _TEXT,
                             "url": {"type": ["string", "null"]}},
                            required=["attack", "eps", "robust_accuracy", "footnote"], nullable=True,
                            description="a stronger attack's result at the headline budget, or null"),
        "source": {"enum": ["sweep", "submit"]},
        "paper": _object({"title": _TEXT, "authors": {"type": "array", "items": _TEXT},
                          "venue": {"type": ["string", "null"]},
                          "year": {"type": ["integer", "null"], "minimum": 1000, "maximum": 9999},
                          "url": {"type": ["string", "null"]},
                          "bibtex_key": {"type": "string", "pattern": "^[^\\s,{}()\"#%'=]+$"},
                          "bibtex": _TEXT}, nullable=True),
        "ncbench_version": _TEXT,
        "torch_version": _TEXT,
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"},
    }, required=["schema_version", "id", "board", "name", "architecture", "architecture_args", "num_parameters",
                 "weights_sha256", "weights_file", "evaluation", "training", "clean_accuracy", "robust_accuracy",
                 "pgd_curve", "collapse", "checks", "reliable", "unreliable_reasons", "reported", "external", "source",
                 "ncbench_version", "torch_version", "date"]),
}


def schema_bytes() -> bytes:
    """The schema as the committed file holds it: sorted keys, two-space indent, a trailing newline."""
    return (json.dumps(ENTRY_SCHEMA, indent=2, sort_keys=True) + "\n").encode()


_VALIDATOR = None


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        from jsonschema import Draft202012Validator, validators

        # JSON Schema counts 5.0 as an integer; an entry stores counts as integers, so refuse floats there
        checker = Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
        cls = validators.extend(Draft202012Validator, type_checker=checker)
        cls.check_schema(ENTRY_SCHEMA)
        _VALIDATOR = cls(ENTRY_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return _VALIDATOR


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(entry)"


def _non_finite(obj, parts=()) -> tuple | None:
    """The path of the first NaN or infinity in ``obj`` (JSON cannot hold them and the schema's bounds let NaN
    through), or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return parts
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _non_finite(v, (*parts, k))
            if found is not None:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _non_finite(v, (*parts, i))
            if found is not None:
                return found
    return None


def _same_eps(a, b) -> bool:
    return canonical_eps(a) == canonical_eps(b)


def validate_entry(entry: Any, *, board=None) -> dict:
    """Check ``entry`` against the schema and the rules the schema cannot state; return it unchanged.

    Parameters
    ----------
    entry : the entry as a dict (as read from its JSON file).
    board : a :class:`~ncbench.leaderboard.Board`; when given, the entry must belong to it: the same board
        id, headline budget and number of points, and the PGD curve over exactly the board's grid.

    Rules beyond the schema: no NaN or infinity anywhere; every ``eps_label`` is the label of its ``eps``;
    ``reliable`` is true only when every check passed and there is no unreliable reason, and false only with
    at least one reason (a failed check always makes an entry unreliable).

    Raises
    ------
    InputError : naming the path of the first problem, e.g.
        ``robust_accuracy.value: '0.5' is not of type 'number'``.
    """
    from jsonschema.exceptions import best_match

    if not isinstance(entry, dict):
        raise InputError(f"an entry must be a JSON object; got {type(entry).__name__}")
    version = entry.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version < SCHEMA_VERSION:
        how = f"`{board.regenerate}`" if board is not None else "`ncbench leaderboard build GRID`"
        raise InputError(f"schema_version: {version}, written by an older ncbench (this one writes "
                         f"{SCHEMA_VERSION}: entries now carry their committed weights); rebuild the board ({how}) "
                         "or submit the model again")
    bad = _non_finite(entry)
    if bad is not None:
        raise InputError(f"{_path(bad)}: {_walk(entry, bad)!r} is not a finite number (JSON holds no NaN or "
                         "infinity)")
    error = best_match(_validator().iter_errors(entry))
    if error is not None:
        raise InputError(f"{_path(error.absolute_path)}: {error.message}")
    for where, item in [("robust_accuracy", entry["robust_accuracy"])] + [
            (f"pgd_curve[{i}]", row) for i, row in enumerate(entry["pgd_curve"])]:
        if item["eps_label"] != eps_label(item["eps"]):
            raise InputError(f"{where}.eps_label: {item['eps_label']!r} is not the label of eps {item['eps']!r} "
                             f"(expected {eps_label(item['eps'])!r})")
    failed = [c["check"] for c in entry["checks"] if not c["passed"]]
    if entry["reliable"] and failed:
        raise InputError(f"reliable: true, but check(s) {', '.join(failed)} failed; an entry with a failed check "
                         "is unreliable")
    if entry["reliable"] and entry["unreliable_reasons"]:
        raise InputError("reliable: true, but unreliable_reasons is not empty")
    if not entry["reliable"] and not entry["unreliable_reasons"]:
        raise InputError("reliable: false needs at least one entry in unreliable_reasons (say why)")
    if board is not None:
        _check_board(entry, board)
    return entry


def _walk(obj, parts):
    for p in parts:
        obj = obj[p]
    return obj


def _check_board(entry: dict, board) -> None:
    if entry["board"] != board.id:
        raise InputError(f"board: the entry is for {entry['board']!r}, not {board.id!r}")
    ra = entry["robust_accuracy"]
    if not _same_eps(ra["eps"], board.eps):
        raise InputError(f"robust_accuracy.eps: {ra['eps_label']} is not board {board.id}'s headline budget "
                         f"{board.eps_label}")
    if ra["n_points"] != board.n_points:
        raise InputError(f"robust_accuracy.n_points: {ra['n_points']} points, but board {board.id} attacks "
                         f"{board.n_points}")
    if ra["attack"] != board.attack:
        raise InputError(f"robust_accuracy.attack: {ra['attack']!r}, but board {board.id} uses {board.attack!r}")
    grid = [row["eps"] for row in entry["pgd_curve"]]
    if len(grid) != len(board.curve_eps) or not all(map(_same_eps, grid, board.curve_eps)):
        raise InputError(f"pgd_curve: eps {[eps_label(e) for e in grid]}, but board {board.id}'s curve is "
                         f"{list(board.curve_eps_labels)}")
    ext = entry["external"]
    if ext is not None and not _same_eps(ext["eps"], board.eps):
        raise InputError(f"external.eps: {eps_label(ext['eps'])} is not board {board.id}'s headline budget "
                         f"{board.eps_label}")
