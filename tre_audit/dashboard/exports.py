"""The audit log as CSV or JSON lines, written row by row for a streaming response.

Both start with the chain verification: JSON lines with one ``{"chain": {...}}``
object, CSV with one comment row, ``# chain`` and the same object as JSON, before
the header row (docs/audit-log.md). Entries hold no record values: actions, states,
usernames, reasons people typed and hashes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator

#: The columns of a CSV export, in order: each entry's keys as the selector gives them.
CSV_COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor",
    "submission_id",
    "action",
    "what",
    "before",
    "after",
    "reason",
    "prev_hash",
    "entry_hash",
)


class _Line:
    """A file-like object whose ``write`` returns the line: csv.writer writes one row."""

    def write(self, value: str) -> str:
        return value


def csv_lines(chain: dict, entries: Iterable[dict]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(["# chain", json.dumps(chain, sort_keys=True)])
    yield writer.writerow(CSV_COLUMNS)
    for entry in entries:
        yield writer.writerow([_cell(entry[column]) for column in CSV_COLUMNS])


def jsonl_lines(chain: dict, entries: Iterable[dict]) -> Iterator[str]:
    yield json.dumps({"chain": chain}, sort_keys=True) + "\n"
    for entry in entries:
        yield json.dumps(entry, sort_keys=True) + "\n"


def _cell(value) -> str:
    """A CSV cell; one that a spreadsheet would run as a formula is quoted with ``'``."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text
