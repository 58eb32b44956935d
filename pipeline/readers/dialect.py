"""How a sheet was written: separator, text encoding, and decimal commas.

Spreadsheets exported in much of Europe separate cells with `;` and write `149,90`. These
options say so explicitly; nothing is guessed, but a likely mismatch gets a hint.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from pipeline.readers.common import RawRow

log = logging.getLogger("corrections")

#: A number written with a decimal comma, optionally with `.` thousands: 149,90 · 1.234,5
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:\.\d{3})+),\d+")
_NAMED_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
SET_PREFIX = "set."


@dataclass(frozen=True)
class Dialect:
    """CSV separator and encoding (UTF-8 tolerates a BOM); decimal commas in set.* cells."""

    delimiter: str = ","
    encoding: str = "utf-8"
    decimal_comma: bool = False

    @staticmethod
    def of(delimiter: str | None = None, encoding: str | None = None,
           decimal_comma: bool = False) -> Dialect:
        """A checked dialect; `ValueError` with a sentence a user can act on otherwise."""
        sep = delimiter if delimiter is not None else ","
        sep = _NAMED_DELIMITERS.get(sep.lower(), sep)
        if len(sep) != 1 or sep in "\"\r\n":
            raise ValueError(f"{delimiter!r} is not a single separator character; use e.g. "
                             "',', ';', '|' or 'tab'")
        enc = (encoding or "utf-8").strip()
        try:
            name = codecs.lookup(enc).name
        except LookupError:
            raise ValueError(f"unknown text encoding {encoding!r}; use e.g. utf-8, cp1252, "
                             "latin-1 or utf-16") from None
        return Dialect(sep, name, decimal_comma)

    @property
    def python_encoding(self) -> str:
        """UTF-8 reads a leading BOM as nothing, the way Excel writes `CSV UTF-8`."""
        return "utf-8-sig" if self.encoding in ("utf-8", "utf_8") else self.encoding

    def describe(self) -> dict[str, object]:
        return {"delimiter": self.delimiter, "encoding": self.encoding,
                "decimal_comma": self.decimal_comma}


def decimal_number(text: str) -> float | int | None:
    """`149,90` → 149.9, `1.234,5` → 1234.5; None when the text is not such a number."""
    stripped = text.strip()
    if not _DECIMAL_COMMA.fullmatch(stripped):
        return None
    return float(stripped.replace(".", "").replace(",", "."))


def numbers_with_commas(rows: Iterator[RawRow], dialect: Dialect) -> Iterator[RawRow]:
    """With --decimal-comma, set.* text cells like `149,90` become numbers; without it, the
    first such cell gets a warning (it is sent as the text it is)."""
    warned = False
    for row in rows:
        if row.problem is None:
            changed = None
            for col, value in row.cells.items():
                if not (isinstance(value, str) and col.startswith(SET_PREFIX)
                        and "," in value):
                    continue
                number = decimal_number(value)
                if number is None:
                    continue
                if dialect.decimal_comma:
                    changed = changed or dict(row.cells)
                    changed[col] = number
                elif not warned:
                    warned = True
                    log.warning("row %s, %s: %r looks like a number with a decimal comma; it "
                                "is sent as that text. Pass --decimal-comma to send such values "
                                "as numbers", row.row_number, col, value,
                                extra={"event": "decimal_comma_hint", "row_number":
                                       row.row_number, "column": col})
            if changed is not None:
                row = replace(row, cells=changed)
        yield row


#: Comma-separated UTF-8 with decimal points: what the tool assumes unless told otherwise.
PLAIN = Dialect()
