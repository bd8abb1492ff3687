"""Plain-text tables for terminal output; torch-free so the runtime CLI can use it too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.3f}".rstrip("0").rstrip(".")
    return "-" if value is None else str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(headers))]

    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join(format_row(values, widths, numeric) for values in lines)


def format_row(values: Sequence[str], widths: Sequence[int], numeric: Sequence[bool]) -> str:
    """One line of a table: cells padded to ``widths`` (never cut), numbers right-aligned, text left-aligned.
    Output that streams rows (``clipedge predict``) fixes the widths before the first row."""
    return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()
