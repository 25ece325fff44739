"""Counters are added field by field, so that a counter added to a class is never left out of a sum."""

from dataclasses import fields

import pytest

from secmon.service.records import SAMPLES, SourceCounts
from secmon.store.writer import WriteStats
from secmon.types import add_counts


@pytest.mark.parametrize("cls", [WriteStats, SourceCounts])
def test_every_numeric_field_is_summed(cls: type) -> None:
    numbers = [f.name for f in fields(cls) if f.type == "int"]
    total, more = cls(**{name: 1 for name in numbers}), cls(**{name: i + 2 for i, name in enumerate(numbers)})
    total.add(more)
    assert {name: getattr(total, name) for name in numbers} == {name: i + 3 for i, name in enumerate(numbers)}


def test_reasons_are_summed_key_by_key() -> None:
    total, more = WriteStats(reasons={"a": 1}), WriteStats(reasons={"a": 2, "b": 5})
    total.add(more)
    assert total.reasons == {"a": 3, "b": 5}


def test_the_first_samples_are_kept() -> None:
    total = SourceCounts(samples=[("x", "r")] * (SAMPLES - 1))
    total.add(SourceCounts(samples=[("y", "r"), ("z", "r")]))
    assert len(total.samples) == SAMPLES and total.samples[-1] == ("y", "r")


def test_a_field_that_cannot_be_added_is_said() -> None:
    from dataclasses import dataclass

    @dataclass
    class Odd:
        name: str = "x"

    with pytest.raises(TypeError, match="Odd.name"):
        add_counts(Odd(), Odd())
