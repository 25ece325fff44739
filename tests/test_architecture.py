"""Imports flow one way (edge -> service -> stages -> core): the contract in setup.cfg, checked by import-linter."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports")
    assert lint is not None, "import-linter is not installed: pip install -e .[test] (scripts/bootstrap does it)"
    result = subprocess.run([lint, str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_code_never_prints_or_exits() -> None:
    offenders = []
    for path in (ROOT / "secmon").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "secmon").parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("print(", "sys.exit(", "exit(")) or "click." in stripped:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert not offenders, "\n".join(offenders)
