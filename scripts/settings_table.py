"""Print README's configuration table from prunebench.config.Settings (the one source of truth).

.venv/bin/python scripts/settings_table.py --write    # refresh the block in README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from prunebench.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `PRUNEBENCH_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


def readme_with_table(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        README.write_text(readme_with_table(README.read_text()))
    else:
        print(settings_table())
