"""Start-up imports only what the command needs (issues 10 and 12 time whole commands, start-up included).

No timing here: each check runs a fresh interpreter and looks at which heavy modules it imported.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secmon.cli.main import LAZY, cli

ROOT = Path(__file__).resolve().parents[2]
# Modules no start-up needs: each costs tens to hundreds of milliseconds of CPU to import.
HEAVY = ("elasticsearch", "elastic_transport", "requests", "numpy", "sklearn", "sigma", "jinja2", "aiosmtpd",
         "apscheduler")


def _imported(tmp_path: Path, *argv: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The HEAVY (and `extra`) modules a run of `secmon ARGV` has imported when it ends (whatever its exit code)."""
    config = tmp_path / "secmon.yml"
    config.write_text("agencies:\n  - id: so-tttt\n    recipients: [soc@so-tttt.example.vn]\n"
                      f"rules: [{ROOT / 'rules'}]\npipelines: [{ROOT / 'pipelines'}]\n", encoding="utf-8")
    code = ("import sys\nfrom secmon.cli.main import main\n"
            "try:\n"
            f"    main({['-c', str(config), *argv]!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print(sorted(m for m in {HEAVY + extra!r} if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=120)
    assert done.stderr.strip(), f"no output; stdout: {done.stdout[-2000:]}"
    return list(ast.literal_eval(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [
    ("--help",),
    ("collect", "--help"),
    ("scan", "--help"),
    ("collect", "--agency", "nosuch", "-"),  # a usage error: found before anything connects
])
def test_a_command_that_does_not_connect_imports_no_heavy_module(tmp_path: Path, argv: tuple[str, ...]) -> None:
    assert _imported(tmp_path, *argv) == []


def test_the_short_help_listed_by_secmon_help_is_each_commands_own() -> None:
    """`secmon --help` lists the commands from LAZY without importing them: the texts must not drift."""
    commands = cli.load_all()  # type: ignore[attr-defined]
    for name, (_, short_help) in LAZY.items():
        assert commands[name].get_short_help_str(limit=1000) == short_help, name


def test_an_offline_scan_with_its_rules_cached_imports_no_heavy_module(tmp_path: Path) -> None:
    """`scan --input` is offline triage: no client, no pySigma once the rules are cached, no pydantic
    (no config file is validated), no `regex` (only for patterns RE2 refuses), no multiprocessing (one process)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    argv = ("scan", "--input", str(empty), "--rules", str(ROOT / "rules" / "windows"), "--rule-cache",
            str(tmp_path / "cache"), "--json")
    _imported(tmp_path, *argv)  # compiles the rules (pySigma) and fills the cache
    assert _imported(tmp_path, *argv, extra=("pydantic", "regex", "multiprocessing")) == []
