"""The results store: every result record of a results folder in one SQLite file, keyed on its job id.

One file (default ``ncbench-results/results.sqlite``, stdlib :mod:`sqlite3` in WAL mode) holds every job
(done, with its record, or failed, with its error), which sweeps each job belongs to (with its grid cell), and
each sweep's axes. Several processes may write at once; a job is stored once, whoever computed it.

The package, one job per file:

``_db``
    the SQLite layout (tables, layout version), opening a connection, one transaction per write.
``_jobs``
    job bookkeeping: :class:`ResultsStore` (write done and failed jobs and sweep membership; ask what is
    stored).
``_frame``
    :func:`load_frame`: one row per finished job, numbers as numbers.
``_formats``
    import and export: :func:`import_records` (record files and jsonl exports), :func:`export_results`
    (csv, jsonl, parquet), :func:`write_export` (``.gz`` compressed).

>>> store = ResultsStore("ncbench-results/results.sqlite")      # doctest: +SKIP
>>> frame = load_frame(store, sweep="mnist1d-capacity")         # doctest: +SKIP
>>> frame.attrs["axes"]                                         # doctest: +SKIP
['model_args.channels', 'train.weight_decay', 'dataset_args.label_noise', 'seed']
"""

from ._db import BUSY_TIMEOUT_S, DEFAULT_STORE, STATUSES, STORE_VERSION
from ._formats import (EXPORT_DIGITS, EXPORT_FORMATS, IMPORT_SUFFIXES, ImportReport, denoise, export_results,
                       format_of, frame_csv, frame_table, gzip_bytes, import_records, records_jsonl, write_export)
from ._frame import load_frame
from ._jobs import ResultsStore, _as_store

__all__ = ["BUSY_TIMEOUT_S", "DEFAULT_STORE", "EXPORT_DIGITS", "EXPORT_FORMATS", "IMPORT_SUFFIXES", "STATUSES",
           "STORE_VERSION", "ImportReport", "ResultsStore", "denoise", "export_results", "format_of", "frame_csv",
           "frame_table", "gzip_bytes", "import_records", "load_frame", "records_jsonl", "write_export"]
