"""Plain aligned tables for the console (sweep summaries, the records browser, the evidence check):
text columns aligned left, numbers right, two spaces between columns."""
from __future__ import annotations

from typing import Any, Sequence


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in ("-", "nan", "inf")
    return True


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` (dicts of already formatted values; a missing value prints ``-``) as aligned lines,
    under a header of ``columns`` (default: every key, in order of first appearance)."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(cells) and all(_is_number(r[i]) for r in cells) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(list(columns))] + [line(r) for r in cells])
