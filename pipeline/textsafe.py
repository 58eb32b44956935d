"""Text from a sheet or a server, made safe for where it is shown: spreadsheets and terminals.

A sheet cell (or an API's message) is data: it must never become a formula in the CSV report
nor a control sequence on a terminal or in a text log (clearing the screen, setting the
window title, forging a log line).
"""

from __future__ import annotations

import re
import unicodedata

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


#: Unicode categories that can move the cursor, reorder text or break a line: controls (C0,
#: DEL, C1), format characters (bidi overrides, zero-width), surrogates, line and paragraph
#: separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` safe for a terminal or a text log: every unsafe character shown as an escape.

    `\\x1b[2J` prints as the six characters `\\x1b[2J` instead of clearing the screen, and a
    line break stays on its line as `\\n`, so a value can never forge a log line.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def _unsafe(ch: str) -> bool:
    if ch.isprintable():
        return False
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"
