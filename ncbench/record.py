"""Result records: typed shape, validation and migration of older schema versions (docs/records.md).

(Placeholder while the v2 record lands: ``upgrade_record`` returns v2 records unchanged.)
"""

from __future__ import annotations

from ._errors import InputError

SCHEMA_VERSION = 2


def upgrade_record(record: dict) -> dict:
    """Return ``record`` in the current schema (v1 records are upgraded); refuse unknown versions."""
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version == SCHEMA_VERSION:
        return record
    raise InputError(f"unsupported record schema_version {version!r}")
