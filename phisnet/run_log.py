"""A run's metrics log, ``metrics.jsonl``: one JSON object per validation, appended and fsynced, cut back on resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

from phisnet.files import write_text_atomic


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    write_text_atomic(path, "".join(k + "\n" for k in keep))


def read_metrics(path: str | Path) -> list[dict]:
    """The metrics log of a run (``metrics.jsonl``) as a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
