"""What every sheet reader shares: the row record, the limits, header checks, safe text."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import SheetError
from pipeline.readers.limits import MAX_COLUMNS, too_wide

#: Largest cell accepted, in characters (about 1 MB).
MAX_CELL_CHARS = 1 << 20
#: The csv module's own limit: beyond this the parser stops (a runaway unbalanced quote).
CSV_FIELD_LIMIT = 8 << 20

_UNREADABLE_ROW_HINT = "fix this row in the file"


@dataclass(frozen=True)
class RawRow:
    """One data row as read: its spreadsheet row number and its non-empty cells.

    `problem` is set when the row itself could not be read properly (`column` then names the
    cell at fault, when there is one); the row is reported invalid and never sent.
    """

    row_number: int
    cells: dict[str, Any]
    problem: str | None = None
    column: str | None = None


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    return dups


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _check_header(header: list[str], path: Path) -> None:
    if len(header) > MAX_COLUMNS:
        raise too_wide(path, len(header))
    if not any(header):
        raise SheetError(f"{path}: the header row has no column names; the first row must name "
                         "the columns (e.g. event_id,timestamp,set.final_price)")
    dups = _duplicates([h for h in header if h])
    if dups:
        raise SheetError(f"{path}: duplicate column name(s) {_quoted(dups)}: each column may "
                         "appear once; rename or remove the copies")


def _sanitize(text: str) -> str:
    """Text safe to print and store: undecodable bytes become U+FFFD, huge cells a digest."""
    if len(text) > 200:
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        text = f"{text[:100]}… <{len(text)} characters, sha256 {digest}>"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _bad_bytes(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw[exc.start:exc.start + 4].hex(" ")
    return ""  # pragma: no cover


