"""Whether a rule file changed: its stat signature, and the SHA-256 of its bytes when that moved.

Its own module so that a scan whose rules all come from the cache (detect/cache.py) checks its files
without importing the compiler and pySigma (sigma/load.py), which only a changed file needs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

Signature = tuple[int, ...]


def signature(path: Path) -> Signature | None:
    """What changes when the file is written (size, mtime, ctime, inode); None when it cannot be read."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def digest_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # unreadable: load_rule_file says why, every time
