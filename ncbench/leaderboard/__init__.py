"""Leaderboards: boards (a dataset, a threat model and a protocol), validated entries, reproducible tables.

Layout, after RobustBench's ``model_info/<dataset>/<threat>/``::

    leaderboards/
      schema/entry.schema.json        the entry schema (JSON Schema 2020-12), written from ENTRY_SCHEMA
      <dataset>/<norm>/board.yaml     the protocol: headline eps, attack, points, PGD curve, collapse
      <dataset>/<norm>/<id>.json      one entry per model
      <dataset>/<norm>/README.md, table.tex, table.csv, entries.bib   rendered from the entries
      measures/<sweep>/               measures boards (ncbench.analysis.render_measures_board)

Typical use::

    board = load_board("mnist1d/Linf")
    entry = entry_from_records(board, record, entry_id="cnn1d-s0", name="CNN-1D", source="sweep")
    write_entry(entry, board.path)
    render_board(board.path)
"""

from ._bibtex import parse_bibtex, read_bibtex
from ._boards import Board, list_boards, load_board
from ._entry import best_known, entry_from_records, load_entries, write_entry
from ._render import check_rendered, render_all, render_board, sort_entries
from ._schema import ENTRY_SCHEMA, SCHEMA_VERSION, schema_bytes, validate_entry

__all__ = [
    "ENTRY_SCHEMA", "SCHEMA_VERSION", "Board", "best_known", "check_rendered", "entry_from_records",
    "list_boards", "load_board", "load_entries", "parse_bibtex", "read_bibtex", "render_all", "render_board",
    "schema_bytes", "sort_entries", "validate_entry", "write_entry",
]
