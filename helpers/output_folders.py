"""Fresh output folders, so a new run never overwrites what an earlier one saved."""

from __future__ import annotations

import re
from pathlib import Path


def fresh_run_dir(root) -> Path:
    """Create and return root/run-001 (or the next unused number): results never overwrite."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"run-(\d+)", p.name))]
    number = max(taken, default=0) + 1
    while True:
        folder = root / f"run-{number:03d}"
        try:
            folder.mkdir()  # atomic: two runs started at once get different folders
            return folder
        except FileExistsError:
            number += 1
