"""Checkpoints: how far each file has been shipped, surviving a crash.

One JSON file per collector (agency + pipeline). An entry is keyed by a
fingerprint of the file's first `length` bytes (its content, not its path or
inode), so a rotated file, or a copy of it (copytruncate), is recognised under
any name and resumes where shipping stopped, naming its records with the identity
it had when first read (`ident`, see collect/files.py). The registry is written
durably (temporary file, fsync, rename, fsync of the folder): after a crash
it holds either the old or the new state, never a torn one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from secmon.collect.files import FINGERPRINT_BYTES, digest
from secmon.errors import InputError, Location

KEEP_SECONDS = 14 * 86400  # entries of files not seen for two weeks are dropped


@dataclass(frozen=True)
class Checkpoint:
    key: str  # fingerprint of the first `length` bytes
    offset: int  # every record before this byte is in Elasticsearch or in the spool
    length: int  # bytes fingerprinted
    path: str  # last path seen, for people reading the file
    updated: float
    ident: str  # what the file's records are named with (registries before version 2: the key)


Mark = tuple[int, int, str, str]  # (offset, fingerprinted length, path, ident) of one key


def write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class Registry:
    def __init__(self, path: Path):
        self.path = path
        self._entries: dict[str, Checkpoint] = {}
        self._lock = threading.Lock()

    def load(self) -> Registry:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self
        except (OSError, ValueError) as exc:
            raise InputError(f"checkpoint registry is unreadable: {exc}", location=Location(str(self.path)),
                             hint="delete it to re-ship everything (ids are deterministic: nothing duplicates)"
                             ) from None
        for key, entry in data.get("files", {}).items():
            self._entries[key] = Checkpoint(key, int(entry["offset"]), int(entry["length"]),
                                            str(entry.get("path", "")), float(entry.get("updated", 0)),
                                            str(entry.get("ident") or key))
        return self

    def get(self, key: str) -> Checkpoint | None:
        with self._lock:
            return self._entries.get(key)

    def find(self, head: bytes, size: int) -> Checkpoint | None:
        """The entry of a file whose first KiB is `head` and whose size is `size`, if it was read before."""
        for length in sorted(self.lengths() | {FINGERPRINT_BYTES}, reverse=True):
            if length > size or length > len(head):
                continue
            known = self.get(digest(head[:length]))
            if known is not None and known.offset <= size:
                return known
        return None

    def lengths(self) -> set[int]:
        with self._lock:
            return {e.length for e in self._entries.values()}

    def advance(self, marks: dict[str, Mark]) -> None:
        """marks: key -> (offset, length, path, ident); offsets only move forward."""
        now = time.time()
        with self._lock:
            for key, (offset, length, path, ident) in marks.items():
                old = self._entries.get(key)
                if old is None or offset > old.offset or path != old.path:
                    self._entries[key] = Checkpoint(key, max(offset, old.offset if old else 0), length, path, now,
                                                    old.ident if old else ident)
                else:
                    self._entries[key] = replace(old, updated=now)

    def save(self) -> None:
        cutoff = time.time() - KEEP_SECONDS
        with self._lock:
            self._entries = {k: e for k, e in self._entries.items() if e.updated >= cutoff}
            data = {"version": 2, "files": {k: {"offset": e.offset, "length": e.length, "path": e.path,
                                                "updated": e.updated, "ident": e.ident}
                                            for k, e in sorted(self._entries.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.path, json.dumps(data, indent=1).encode("utf-8"))
