"""The journal of work in flight: small JSON files under <workspace>/.archer/journal/, outside git.

Each entry is written atomically (temporary file, fsync, rename, fsync of the folder), so a kill -9
leaves either the old entry or the new one. Tested by tests/test_journal.py.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from agent.errors import WorkspaceError

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Keyed JSON payloads of work that has started and not finished (e.g. a proposal being evaluated)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise WorkspaceError(f"journal key {key!r}: use letters, digits, '_', '.', '-' only")
        return self.folder / f"{key}.json"

    def put(self, key: str, payload: dict) -> None:
        path = self._path(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(payload, ensure_ascii=False, indent=1))

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as e:
            raise WorkspaceError(f"{path}: journal entry is not valid JSON ({e})") from None

    def pending(self) -> dict[str, dict]:
        """Every unfinished entry, oldest first (by the time it was last written)."""
        if not self.folder.is_dir():
            return {}
        paths = [p for p in self.folder.glob("*.json") if not p.name.startswith(".")]
        paths.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return {p.stem: entry for p in paths if (entry := self.get(p.stem)) is not None}

    def done(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
