"""One record of an input becomes an event, a dead letter or a skip, and is counted.

The same step for every road a record takes: `collect` in this process, `collect --workers`
in worker processes (collect_workers.py) and `collect --follow` (follow.py), so that their
counts mean the same and a count added to one is added to all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secmon.collect.files import Record
from secmon.model import DeadLetter, Event
from secmon.normalize.engine import Normalizer, Result
from secmon.normalize.urls import URL_PROBLEM_TAG
from secmon.types import add_counts

SAMPLES = 20  # dead-lettered lines kept per input, to guess the source they belong to


@dataclass
class SourceCounts:
    events: int = 0
    dead_letters: int = 0
    skipped: int = 0
    lost: int = 0  # events known lost in unreadable data (damaged EVTX)
    unreadable: int = 0  # stretches of unreadable data (each a dead letter)
    url_undecodable: int = 0  # events stored whose URL could not be decoded exactly (tagged url_undecodable)
    samples: list[tuple[str, str]] = field(default_factory=list)  # (line, reason) of the first dead letters

    def add(self, other: SourceCounts) -> None:
        add_counts(self, other)
        del self.samples[SAMPLES:]  # the first ones are kept


def normalize_record(normalizer: Normalizer, record: Record, counts: SourceCounts) -> Result:
    """The event, dead letter or skip a record becomes, counted."""
    problem = record[5]  # record.problem, read once (a field by position: this runs once a line)
    if problem:  # the reader could not take it whole: its reason, and what there is of it
        item: Result = normalizer.refuse(record.text, problem, record.offset if record.offset >= 0 else None,
                                         record.record_id, record.length or None)
        if not record.length:
            counts.unreadable += 1
            counts.lost += record.lost
    else:
        item = normalizer.normalize(record[1], record[0], record[2])  # (text, offset, record_id)
    if item.__class__ is Event:  # once a line: the exact class, as normalize makes it
        counts.events += 1
        tags = item[1].get("tags")  # item.doc
        if tags and URL_PROBLEM_TAG in tags:  # stored, but never silent: counted and said
            counts.url_undecodable += 1
    elif isinstance(item, DeadLetter):
        counts.dead_letters += 1
        if len(counts.samples) < SAMPLES and not problem:
            counts.samples.append((item.raw[:4096], item.reason))
    else:
        counts.skipped += 1
    return item
