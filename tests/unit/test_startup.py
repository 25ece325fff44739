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


def test_reading_the_config_imports_pydantic_core_not_pydantic(tmp_path: Path) -> None:
    """The config's shape is checked by pydantic-core from secmon's own schema (secmon/validation.py): pydantic's
    import and schema generator were a fifth of every command's start-up (issue 12). (The config `_imported`
    writes has an agency without a name: the shape problem is found, and the command ends there.)"""
    assert _imported(tmp_path, "collect", "--agency", "so-tttt", "--source", "linux-auth", "-",
                     extra=("pydantic", "pydantic_core")) == ["pydantic_core"]


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


def _type_checking_names(tree: ast.Module) -> tuple[set[str], set[int]]:
    """Names imported under a top-level `if TYPE_CHECKING:` and the ids of that block's nodes."""
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    names = {(alias.asname or alias.name).split(".")[0] for block in blocks for node in ast.walk(block)
             if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    return names, {id(node) for block in blocks for node in ast.walk(block)}


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """Ids of every node inside an annotation, and of names a function imports for itself."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        annotations: list[ast.expr] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations = [a.annotation for a in every if a is not None and a.annotation is not None]
            annotations += [node.returns] if node.returns else []
            local = {alias.asname or alias.name for inner in ast.walk(node)
                     if isinstance(inner, (ast.Import, ast.ImportFrom)) for alias in inner.names}
            inside |= {id(n) for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in local}
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        inside |= {id(n) for annotation in annotations for n in ast.walk(annotation)}
    return inside


def test_names_imported_for_type_checking_only_are_used_in_annotations_only() -> None:
    """Heavy modules (the Elasticsearch client, pydantic) are imported under TYPE_CHECKING where only
    annotations name them; a use at run time (an `except`, a type alias) would be a NameError that only
    the code path reaching it shows."""
    misused = []
    for path in sorted((ROOT / "secmon").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names, block = _type_checking_names(tree)
        if not names:
            continue
        allowed = block | _annotation_nodes(tree)
        misused += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.id}" for node in ast.walk(tree)
                    if isinstance(node, ast.Name) and node.id in names and id(node) not in allowed]
    assert misused == []


def test_the_client_is_imported_without_requests_which_stays_importable() -> None:
    """`connect` keeps `requests` out of the client's import (secmon uses its urllib3 node); afterwards
    `requests` imports as usual."""
    code = ("import sys\nfrom secmon.config import ElasticsearchSettings\nfrom secmon.store.client import connect\n"
            "es = connect(ElasticsearchSettings())\n"
            "before = 'requests' in sys.modules\nimport requests\n"
            "print(before, type(es.transport.node_pool.get()).__name__, requests.__name__, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.stderr.strip().splitlines()[-1:] == ["False Urllib3HttpNode requests"], done.stderr[-2000:]
