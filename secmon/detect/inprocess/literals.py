"""The texts a regex cannot match without: read from Python's parsed form of the pattern.

Two users ask the same question with different alphabets. The prefilter (`prefilter.py`) wants
case-folded needles for its Aho-Corasick scan and drops texts too common to select anything; the
regexp predicate (`linear.py`) wants exact bytes to test before it runs the regex. Both walk the
parse tree the same way, so the walk is here once and the alphabet is theirs (`char_of`, `keep`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from re import _parser as sre  # type: ignore[attr-defined]  # Python's own regex parser
from typing import Any

REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def required_runs(sequence: Any, char_of: Callable[[Any, Any], str | None],
                  keep: Callable[[str], bool] = bool, exact_case: bool = False) -> frozenset[str] | None:
    """Runs of text one of which every match of a parsed pattern contains, or None when no such
    condition was found: the best of those found (the longest shortest run, then the fewest runs).

    `char_of(op, arg)` says which one character an item stands for (None: not one); a run ends at
    any other item. `keep(run)` drops runs not worth having. With `exact_case`, a group that ignores
    case gives nothing (its characters are not exact)."""
    options: list[frozenset[str]] = []
    run: list[str] = []

    def close() -> None:
        text = "".join(run)
        if text and keep(text):
            options.append(frozenset({text}))
        run.clear()

    for op, arg in sequence:
        ch = char_of(op, arg)
        if ch is not None:
            run.append(ch)
            continue
        if op is sre.AT or (op is sre.SUBPATTERN and not arg[-1]):
            continue  # an anchor or an empty group consumes nothing: the run goes on
        close()
        inner: frozenset[str] | None = None
        if op is sre.SUBPATTERN and not (exact_case and arg[1] & re.IGNORECASE):
            inner = required_runs(arg[-1], char_of, keep, exact_case)
        elif op in REPEATS and arg[0] >= 1:
            inner = required_runs(arg[2], char_of, keep, exact_case)
        elif op is sre.BRANCH:
            branches = [required_runs(b, char_of, keep, exact_case) for b in arg[1]]
            inner = None if any(b is None for b in branches) else frozenset().union(*branches)  # type: ignore[arg-type]
        if inner is not None:
            options.append(inner)
    close()
    if not options:
        return None
    return max(options, key=lambda o: (min(map(len, o), default=0), -len(o)))
