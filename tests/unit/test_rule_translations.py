"""Every rule in rules/ speaks Vietnamese too: `secmon: {vi: {title, description}}`.

Alert emails to Vietnamese-speaking agencies use these texts (Finding.title_in / description_in),
so a rule without them would reach an analyst in English only, and a copied English title would
pass for a translation. Building blocks of correlations are checked too: an analyst sees their
titles when investigating a correlation, and translating them is cheap.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

from secmon.detect.sigma.load import load_rules
from tests.unit.test_rule_library import FILES, ROOT, RULES, documents

LANGUAGES = ("vi",)
MAX_TITLE = 120  # an e-mail subject line still readable on a phone, with the severity and agency around it


def hidden(text: str, allowed: str = "") -> list[str]:
    """Control and format characters (CR, ESC, zero-width, bidi overrides) except those allowed."""
    return [f"U+{ord(c):04X}" for c in text if c not in allowed and unicodedata.category(c) in ("Cc", "Cf")]


def text_problems(doc: dict[str, Any], language: str) -> list[str]:
    english_title = str(doc.get("title"))
    english_description = str(doc.get("description") or "").strip()
    section = doc.get("secmon") or {}
    text = section.get(language)
    if not isinstance(text, dict):
        return [f"{english_title!r} lacks secmon.{language} (a mapping with title and description)"]
    problems = []
    if next(iter(section)) != language:
        problems.append(f"{english_title!r}: secmon.{language} should be the first key of the secmon section")
    title, description = text.get("title"), text.get("description")
    if not isinstance(title, str) or not title.strip():
        return problems + [f"{english_title!r} lacks secmon.{language}.title"]
    if not isinstance(description, str) or not description.strip():
        problems.append(f"{english_title!r} lacks secmon.{language}.description")
        description = ""
    title, description = title.strip(), description.strip()
    if len(title) > MAX_TITLE:
        problems.append(f"{english_title!r}: {language} title is {len(title)} characters (at most {MAX_TITLE})")
    if bad := hidden(title):
        problems.append(f"{english_title!r}: {language} title holds control characters {bad}")
    if bad := hidden(description, allowed="\n"):
        problems.append(f"{english_title!r}: {language} description holds control characters {bad}")
    if title.casefold() == english_title.casefold():
        problems.append(f"{english_title!r}: {language} title is the English one (copied, not translated)")
    if description and description.casefold() == english_description.casefold():
        problems.append(f"{english_title!r}: {language} description is the English one (copied, not translated)")
    for name, value in (("title", title), ("description", description)):
        if value and not any(unicodedata.category(c).startswith("L") and not c.isascii() for c in value):
            problems.append(f"{english_title!r}: {language} {name} has no Vietnamese letter (no diacritics)")
        if unicodedata.normalize("NFC", value) != value:  # NFD input methods: looks the same, compares unequal
            problems.append(f"{english_title!r}: {language} {name} is not NFC-normalized")
    return problems


def test_every_rule_document_has_vietnamese_text() -> None:
    problems: list[str] = []
    titles: dict[tuple[str, str], str] = {}
    for path in FILES:
        where = str(path.relative_to(ROOT))
        for doc in documents(path):
            english = str(doc.get("title"))
            if len(english) > MAX_TITLE or hidden(english):
                problems.append(f"{where}: English title {english!r} is over {MAX_TITLE} characters "
                                "or holds control characters")
            for language in LANGUAGES:
                problems += [f"{where}: {p}" for p in text_problems(doc, language)]
                title = str(((doc.get("secmon") or {}).get(language) or {}).get("title", "")).strip()
                if title and (language, title) in titles:
                    problems.append(f"{where}: {language} title {title!r} also in {titles[language, title]}")
                titles.setdefault((language, title), where)
    assert not problems, "\n".join(problems)


def test_every_alerting_rule_carries_its_translations() -> None:
    """What the loader hands to findings: each rule that raises incidents, in every language."""
    ruleset = load_rules([RULES])
    assert ruleset.rules
    missing = [f"{Path(rule.path).relative_to(ROOT)}: {rule.title!r} in {language}"
               for rule in ruleset.rules for language in LANGUAGES
               if not any(lang == language and title and text for lang, title, text in rule.translations)]
    assert not missing, "rules without a title and description in:\n" + "\n".join(missing)
