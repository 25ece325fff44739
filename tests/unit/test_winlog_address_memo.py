"""The Windows flattener's address memo stays bounded whatever the events hold (hostile input)."""

from __future__ import annotations

import ipaddress

from secmon.normalize import winlog
from secmon.normalize.convert import ADDRESS_CACHE, ADDRESS_CACHED_LENGTH


def test_a_long_address_text_is_answered_but_not_kept() -> None:
    huge = "1" * 1_000_000  # an attacker-written IpAddress field
    assert winlog._address(huge) is None
    assert huge not in winlog._ADDRESSES
    padded = "10.0.0.1" + "%" + "x" * ADDRESS_CACHED_LENGTH  # a zone id past the kept length: still parsed
    assert winlog._address(padded) == "10.0.0.1"
    assert padded not in winlog._ADDRESSES


def test_a_flood_of_new_addresses_keeps_the_memo_bounded_and_the_answers_right() -> None:
    for i in range(3 * ADDRESS_CACHE):
        text = str(ipaddress.IPv4Address(0x0A000000 + i))
        assert winlog._address(text) == text
        assert len(winlog._ADDRESSES) <= ADDRESS_CACHE
    assert winlog._address("::ffff:192.0.2.1") == "192.0.2.1"  # the mapped form, as before
    assert winlog._address("LOCAL") is None
