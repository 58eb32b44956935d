"""Text from a sheet or a server, made safe for where it is shown: spreadsheets and terminals.

A sheet cell (or an API's message) is data: it must never become a formula in the CSV report
nor a control sequence on a terminal or in a text log (clearing the screen, setting the
window title, forging a log line).
"""

from __future__ import annotations

import re

#: What makes a spreadsheet run a cell (or a line of it) as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_AFTER_BREAK = re.compile(r"(?<=[\r\n])(?=[=+\-@\t])")


def neutralise_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a `'` before a formula start, also after a line break.

    A line break inside a (quoted) cell is kept, but a reader that splits on it still never
    sees a line starting a formula.
    """
    if "\r" in value or "\n" in value:
        value = _FORMULA_AFTER_BREAK.sub("'", value)
    if value.startswith(FORMULA_START):
        return "'" + value
    return value


def needs_neutralising(value: str) -> bool:
    return value[:1] in _START_CHARS or "\n" in value or "\r" in value


_START_CHARS = frozenset(FORMULA_START)
