"""Escaping per output format for strings a suite or a results database chose (labels, names).

Those strings travel between people, so each writer neutralises what its format would interpret:
a spreadsheet runs a cell starting with `=`, Markdown renders raw HTML and splits a table row at a
newline or a pipe, a terminal obeys escape sequences, matplotlib parses `$...$` as math. LaTeX
has its own escape (benchsuite.reporting.latex) and HTML its own (benchsuite.reporting.html_page).
"""

from __future__ import annotations

import html
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets treat as a formula


def _control(character: str) -> bool:
    return not character.isprintable() and character != " "


def terminal_text(text: Any) -> str:
    """Control characters (ESC, newline, carriage return, ...) shown as visible escapes like
    `\\x1b`, so a name can neither restyle nor rewrite what a terminal shows."""
    return "".join(
        repr(ch)[1:-1] if _control(ch) else ch for ch in str(text)
    )


def one_line(text: Any) -> str:
    """Every run of control characters (newlines included) as one space."""
    out, previous_space = [], False
    for ch in str(text):
        if _control(ch):
            if not previous_space:
                out.append(" ")
            previous_space = True
        else:
            out.append(ch)
            previous_space = False
    return "".join(out)


def markdown_text(text: Any) -> str:
    """A name in Markdown prose or a heading: one line, HTML shown as text."""
    return html.escape(one_line(text), quote=False)


def markdown_cell(text: Any) -> str:
    """A Markdown table cell: one line, HTML shown as text, pipes escaped."""
    return markdown_text(text).replace("|", "\\|")


def markdown_prose(text: Any) -> str:
    """A paragraph written by a suite's author: its lines and Markdown kept, raw HTML shown as text."""
    lines = str(text).splitlines()
    return "\n".join(html.escape("".join(ch for ch in line if not _control(ch)), quote=False) for line in lines)


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe (OWASP's
    advice); numbers stay numbers, so negative gains are untouched."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def plot_text(text: Any) -> str:
    """Text for matplotlib shown as it is: dollar signs escaped, so no math parsing of user strings."""
    return str(text).replace("$", r"\$")
