"""What `scan --input` names: files, folders (read recursively) and glob patterns, as a list of files.

A file named on the command line is always read. In a folder or a glob, without `--source`,
only the kinds the offline scan can read by itself are taken (EVTX files, and JSON by its
extension); every other file is listed as passed over, with why, so that a README or a
capture beside the logs is said, not silently read as events or silently ignored.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from secmon.errors import InputError

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Inputs:
    files: tuple[Path, ...]  # to read, in order, each once
    passed_over: tuple[tuple[str, str], ...] = ()  # (file, why) found in a folder or glob but not read


def _readable_kind(path: Path) -> bool:
    if path.suffix.lower() in (".evtx", *JSON_SUFFIXES):
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(8) == b"ElfFile\0"  # an EVTX file without its extension
    except OSError:
        return False


def expand(specs: list[str], any_file: bool = False) -> Inputs:
    """The files `specs` name. `any_file` (a pipeline was given with --source): every file of a
    folder or glob is read, not only EVTX and JSON. A spec that names nothing is an error."""
    files: list[Path] = []
    passed: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, named: bool) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        if named or any_file or _readable_kind(path):
            files.append(path)
        else:
            passed.append((str(path), "neither EVTX nor JSON (.json, .jsonl, .ndjson); name it, or give --source"))

    for spec in specs:
        path = Path(spec)
        if path.is_file():
            add(path, named=True)
        elif path.is_dir():
            every = [p for p in path.rglob("*") if p.is_file()]
            found = sorted(p for p in every if not _hidden(p.relative_to(path)))
            if len(found) < len(every):
                passed.append((f"{path}: {len(every) - len(found)} hidden files", "a dot-file or in a dot-folder"))
            if not found:
                raise InputError(f"--input {spec}: the folder holds no file" + (" but hidden ones" if every else ""))
            for item in found:
                add(item, named=False)
        elif GLOB_CHARACTERS & set(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"--input {spec}: the pattern matches no file")
            for item in found:
                add(item, named=False)
        else:
            raise InputError(f"--input {spec}: no such file or folder")
    return Inputs(tuple(files), tuple(passed))


def _hidden(relative: Path) -> bool:
    """A dot-file or a file in a dot-folder (.git, an editor's swap file) is not a log of the folder."""
    return any(part.startswith(".") for part in relative.parts)
