"""`|cidr` on keyword and ip fields, in-process, against Python's `ipaddress`.

The oracle: a text is inside the network when `ipaddress.ip_address` reads it and the address is
in the network, where, as Elasticsearch's ip type stores them, an IPv4 address is the IPv4-mapped
IPv6 address (`::ffff:a.b.c.d`). Texts are written as logs write them: IPv4 dotted quads, IPv6 in
any spelling (leading zeros or not, either case, `::` for any run of zero groups, a dotted-quad
tail), IPv4 also as IPv4-mapped IPv6; plus near-miss garbage (a character inserted, dropped or
changed). tests/integration/test_sigma_cidr_cluster.py puts the same texts on the node.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigma.types import SigmaCIDRExpression

from secmon.detect.sigma.cidr import MAPPED, address_regexps, as_ipv6
from secmon.detect.sigma.compile import Compiler
from secmon.detect.sigma.load import load_rule_file
from secmon.detect.inprocess.match import matches

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KEYWORD, IP = "source.address", "source.ip"  # a keyword field and an ip field of the events template


def oracle(text: str, network: Network) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if "%" in text:
        return False  # zone ids are not address texts here (and the ip type refuses them)
    return as_ipv6(ipaddress.ip_network(address)).network_address in as_ipv6(network)


def spell_ipv6(value: int, rnd: random.Random) -> str:
    """One of the many texts of a 128-bit address, chosen at random."""
    groups = [(value >> (112 - 16 * k)) & 0xFFFF for k in range(8)]
    dotted = rnd.random() < 0.3
    count = 6 if dotted else 8

    def group(number: int) -> str:
        digits = format(number, "x")
        digits = "0" * rnd.randint(0, 4 - len(digits)) + digits
        return "".join(c.upper() if rnd.random() < 0.5 else c for c in digits)

    texts = [group(g) for g in groups[:count]]
    tail = [".".join(str((value >> (24 - 8 * i)) & 0xFF) for i in range(4))] if dotted else []
    runs = [(s, e) for s in range(count) for e in range(s + 1, count + 1) if not any(groups[s:e])]
    if runs and rnd.random() < 0.7:
        start, end = rnd.choice(runs)
        return ":".join(texts[:start]) + "::" + ":".join(texts[end:] + tail)
    return ":".join(texts + tail)


def spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address, rnd: random.Random) -> list[str]:
    wide = as_ipv6(ipaddress.ip_network(address)).network_address
    texts = [str(address), spell_ipv6(int(wide), rnd)]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        texts.append(str(address.ipv4_mapped))
    return texts


def mutate(text: str, rnd: random.Random) -> str:
    at = rnd.randint(0, len(text))
    ch = rnd.choice(":.0123456789aAfFgx ")
    kind = rnd.randrange(3)
    if kind == 0:
        return text[:at] + ch + text[at:]
    if kind == 1 and text:
        return text[:at] + text[at + 1:]
    return text[:at] + ch + text[at + 1:]


@st.composite
def networks(draw: st.DrawFn) -> Network:
    if draw(st.booleans()):
        prefix = draw(st.integers(0, 32))
        base = draw(st.integers(0, 2 ** 32 - 1))
        return ipaddress.IPv4Network((base >> (32 - prefix) << (32 - prefix) if prefix else 0, prefix))
    prefix = draw(st.integers(0, 128))
    base = draw(st.one_of(st.integers(0, 2 ** 128 - 1),  # anywhere
                          st.integers(0, 2 ** 32 - 1).map(lambda v: int(MAPPED.network_address) | v),  # mapped
                          st.integers(0, 2 ** 16 - 1).map(lambda v: v << 112),  # one leading group
                          st.integers(0, 2 ** 16 - 1)))  # near ::
    return ipaddress.IPv6Network((base >> (128 - prefix) << (128 - prefix) if prefix else 0, prefix))


def sample_texts(network: Network, seed: int, count: int = 12) -> list[str]:
    """Addresses inside (random host bits), just outside (one bit flipped), anywhere, in random
    spellings, and mutations of them."""
    rnd = random.Random(seed)
    wide = as_ipv6(network)
    texts: list[str] = []
    for n in range(count):
        host = rnd.getrandbits(128 - wide.prefixlen) if wide.prefixlen < 128 else 0
        inside = int(wide.network_address) | host
        choice = [inside, inside ^ (1 << rnd.randint(0, 127)), rnd.getrandbits(128),
                  int(MAPPED.network_address) | rnd.getrandbits(32)][n % 4]
        address = ipaddress.IPv6Address(choice)
        plain = address.ipv4_mapped or address
        texts += spellings(plain, rnd)
    texts += [mutate(t, rnd) for t in texts[:count]]
    return texts


def cidr_query(field: str, network: Network) -> dict[str, Any]:
    """What the compiler emits for `field|cidr: network`."""
    return Compiler().value(field, SigmaCIDRExpression(str(network)), False, True)


def doc(field: str, text: str) -> dict[str, Any]:
    return {field: text}


@settings(max_examples=80, deadline=None)
@given(networks(), st.integers(0, 2 ** 32))
def test_cidr_on_a_keyword_field_is_exact(network: Network, seed: int) -> None:
    query = cidr_query(KEYWORD, network)
    for text in sample_texts(network, seed):
        assert matches(query, doc(KEYWORD, text)) == oracle(text, network), (str(network), text)


@settings(max_examples=80, deadline=None)
@given(networks(), st.integers(0, 2 ** 32))
def test_cidr_on_an_ip_field_is_exact(network: Network, seed: int) -> None:
    query = cidr_query(IP, network)
    for text in sample_texts(network, seed):
        if oracle(text, ipaddress.ip_network("::/0")):  # the ip type only holds addresses
            assert matches(query, doc(IP, text)) == oracle(text, network), (str(network), text)


def test_a_rule_with_cidr_on_both_kinds_of_field(tmp_path: Path) -> None:
    path = tmp_path / "cidr.yml"
    path.write_text("title: cidr\nlogsource: {product: zeek, service: conn}\ndetection:\n"
                    f"  sel:\n    - {KEYWORD}|cidr: 'fe80::/10'\n    - {IP}|cidr: 'fe80::/10'\n  condition: sel\n",
                    encoding="utf-8")
    ruleset = load_rule_file(path)
    assert not ruleset.problems, ruleset.problems
    query = ruleset.rules[0].query
    zeek = {"event": {"module": "zeek", "dataset": "zeek.conn"}}
    assert matches(query, {**zeek, KEYWORD: "FE80::1"}) and matches(query, {**zeek, IP: "fe80:0::2"})
    assert not matches(query, {**zeek, KEYWORD: "fe8?::1"}) and not matches(query, {**zeek, IP: "fec0::1"})


def test_every_prefix_length_v4_and_v6() -> None:
    rnd = random.Random(7)
    base4, base6 = rnd.getrandbits(32), rnd.getrandbits(128)
    for network in [*(ipaddress.IPv4Network((base4 >> (32 - p) << (32 - p) if p else 0, p)) for p in range(33)),
                    *(ipaddress.IPv6Network((base6 >> (128 - p) << (128 - p) if p else 0, p)) for p in range(129))]:
        patterns = address_regexps(network)
        assert all(len(p) <= 1000 for p in patterns)  # Elasticsearch's index.max_regex_length
        query = {"bool": {"should": [{"regexp": {KEYWORD: {"value": p, "flags": "NONE"}}} for p in patterns]}}
        for text in sample_texts(network, seed=network.prefixlen, count=8):
            assert matches(query, doc(KEYWORD, text)) == oracle(text, network), (str(network), text)


@pytest.mark.parametrize("network,inside,outside", [
    ("fe80::/10", ["fe80::1", "FE80::1", "febf:ffff::", "fe80:0:0:0:0:0:0:1", "FE80:0000::0001"],
     ["fec0::1", "fe8::1", "fe80::1%eth0", "::1", "fe80:::1"]),
    ("10.0.0.0/8", ["10.1.2.3", "::ffff:10.1.2.3", "::ffff:a01:203", "0:0:0:0:0:ffff:10.0.0.1"],
     ["11.0.0.1", "010.1.2.3", "10.1.2", "10.1.2.3.4", "::10.1.2.3"]),
    ("::1/128", ["::1", "0:0:0:0:0:0:0:1", "0000::0001"], ["::2", "1::", "127.0.0.1"]),
])
def test_textual_forms(network: str, inside: list[str], outside: list[str]) -> None:
    net = ipaddress.ip_network(network)
    query = {"bool": {"should": [{"regexp": {KEYWORD: {"value": p, "flags": "NONE"}}} for p in address_regexps(net)]}}
    assert [matches(query, doc(KEYWORD, t)) for t in inside] == [True] * len(inside)
    assert [matches(query, doc(KEYWORD, t)) for t in outside] == [False] * len(outside)
