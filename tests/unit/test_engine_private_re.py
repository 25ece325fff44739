"""engine.py reads `re`'s private parser only for a shortcut (`required_text`); a Python without it must
still import the engine and normalize the same, with every search run (no literal shortcut)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from secmon.normalize.engine import required_text
from tests.conftest import ROOT


def test_required_text_finds_the_literal_every_match_needs() -> None:
    import re

    assert required_text(re.compile(r"^Failed (?P<m>\S+) for (?P<u>\S*) from")) == "Failed "
    assert required_text(re.compile(r"(?i)failed password")) == ""


def test_the_engine_imports_and_normalizes_without_the_private_parser() -> None:
    script = textwrap.dedent("""
        import re, sys
        del re._parser, re._constants  # as on a Python whose `re` has no such modules
        sys.modules["re._parser"] = None  # an import of it fails: ImportError
        sys.modules["re._constants"] = None
        from datetime import datetime, timezone
        from pathlib import Path
        from secmon.model import Event
        from secmon.normalize import engine
        from secmon.normalize.pipeline import load_pipelines
        assert engine.re_parser is None
        assert engine.required_text(re.compile("^Failed password for")) == ""
        pipeline = load_pipelines([Path(sys.argv[1])])["linux-auth"]
        normalizer = engine.Normalizer(pipeline, agency="a", timezone="UTC", source="-",
                                       now=datetime(2026, 1, 1, tzinfo=timezone.utc), year=2025)
        line = "Jun  9 06:06:20 combo sshd[1]: Failed password for root from 1.2.3.4 port 22 ssh2"
        event = normalizer.normalize(line, 0, "r")
        assert isinstance(event, Event), event
        assert event.doc["event"]["action"] == "ssh-login-failed", event.doc
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "pipelines")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
