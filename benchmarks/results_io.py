"""Results written as they come: after every row, the JSON rows and their Markdown table, so a run
cut short still leaves valid files."""
from __future__ import annotations

import json
from pathlib import Path


def save_rows(out: Path, stem: str, rows: list[dict], markdown: str) -> None:
    """Print the last row and (re)write ``out/stem.json`` and ``out/stem.md``."""
    print(json.dumps(rows[-1]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown)
