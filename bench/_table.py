"""Output shared by the benchmark scripts: rows of results printed as an aligned table.

print_table([{"bench": "detector", "ratio": 1.02}, {"bench": "phase", "ratio": 1.01}])
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def print_table(rows: list[Row]) -> None:
    """Print ``rows`` as left-aligned columns (the union of their keys, in first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
