"""Sigma `|cidr` on a field that holds addresses as text: the exact textual forms, as Lucene regexps.

An address in a keyword field is text, and one address has many texts: `fe80::1`,
`FE80:0:0:0:0:0:0:1`, `fe80:0000::0001`, and an IPv4 address may also be written
IPv4-mapped (`::ffff:10.0.0.1`, `::ffff:a00:1`). Prefixes of the text cannot express
a network (`fe80::/10` is `fe80` to `febf` in the first group, in any of those
spellings), so the network becomes regular expressions that accept exactly the texts
Python's `ipaddress` (and Elasticsearch's ip parser) read as an address inside it:

- IPv4: dotted quad, decimal octets without leading zeros;
- IPv6: eight groups of 1-4 hex digits (either case), `::` standing for one or more
  zero groups once, the last two groups optionally as a dotted quad;
- no zone ids (`fe80::1%eth0`) and no surrounding brackets or ports.

Membership follows Elasticsearch's `ip` type, so that a keyword field and an ip field
answer alike: an IPv4 address is the IPv4-mapped IPv6 address `::ffff:a.b.c.d`
(`10.0.0.0/8` also matches `::ffff:10.1.2.3`, and `::/0` matches `10.1.2.3`).

Elasticsearch refuses regexps longer than `index.max_regex_length` (1,000 characters by
default), so the forms are packed into as few regexps of at most MAX_REGEX characters as
needed; the field matches when any of them does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_REGEX = 1000
MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HEX = "0123456789abcdef"
ANY_GROUP = "[0-9a-fA-F]{1,4}"


def as_ipv6(network: Network) -> ipaddress.IPv6Network:
    """The network in Elasticsearch's 128-bit space (IPv4 as IPv4-mapped IPv6)."""
    if isinstance(network, ipaddress.IPv6Network):
        return network
    return ipaddress.IPv6Network((int(MAPPED.network_address) | int(network.network_address), 96 + network.prefixlen))


def as_ip_term(network: Network) -> str:
    """The network as an ip-field term Elasticsearch accepts: it refuses CIDR on IPv4-mapped
    addresses (`::ffff:0:0/96`), so those are written as the IPv4 network they are."""
    wide = as_ipv6(network)
    if wide.prefixlen >= 96 and wide.subnet_of(MAPPED):
        return str(ipaddress.IPv4Network((int(wide.network_address) & 0xFFFFFFFF, wide.prefixlen - 96)))
    return str(network)


def _ipv4_part(network: Network) -> ipaddress.IPv4Network | None:
    """The IPv4 addresses inside the network (through their mapped form), as one network, or None."""
    wide = as_ipv6(network)
    if wide.prefixlen >= 96:
        if not wide.subnet_of(MAPPED):
            return None
        return ipaddress.IPv4Network((int(wide.network_address) & 0xFFFFFFFF, wide.prefixlen - 96))
    return ipaddress.IPv4Network("0.0.0.0/0") if MAPPED.subnet_of(wide) else None


# --- numbers written in text ---------------------------------------------------------------

@dataclass(frozen=True)
class _Block:
    """Values lo..hi of a `bits`-wide number whose first `fixed` bits are those of lo."""

    lo: int
    fixed: int
    bits: int

    @property
    def hi(self) -> int:
        return self.lo | ((1 << (self.bits - self.fixed)) - 1)

    @property
    def free(self) -> bool:
        return self.fixed == 0

    @property
    def zero(self) -> bool:
        return self.lo == 0


def _block(value: int, bits: int, fixed: int) -> _Block:
    fixed = max(0, min(bits, fixed))
    mask = ((1 << bits) - 1) ^ ((1 << (bits - fixed)) - 1)
    return _Block(value & mask, fixed, bits)


def _hex_class(digits: range) -> str:
    chars = []
    for d in digits:
        chars.append(_HEX[d])
        if d >= 10:
            chars.append(_HEX[d].upper())
    if len(chars) == 1:
        return chars[0]
    if len(digits) == 16:
        return "[0-9a-fA-F]"
    return "[" + "".join(chars) + "]"


def _group(block: _Block) -> str:
    """A 16-bit group in 1-4 hex digits (leading zeros optional)."""
    if block.free:
        return ANY_GROUP
    if block.fixed == 16 and block.lo == 0:
        return "0{1,4}"
    sets = []
    for i in range(4):
        fixed = max(0, min(4, block.fixed - 4 * i))
        first = (block.lo >> (12 - 4 * i)) & 0xF
        sets.append(range(first, first + (1 << (4 - fixed))))
    # Leading digits that may be 0 may be left out: `((d0)?d1)?d2 d3` keeps what remains a suffix.
    optional = 0
    while optional < 3 and 0 in sets[optional]:
        optional += 1
    out = ""
    for i in range(optional):
        out = f"({out}{_hex_class(sets[i])})?"
    return out + "".join(_hex_class(s) for s in sets[optional:])


def _decimal(lo: int, hi: int) -> str:
    """Decimal numbers lo..hi without leading zeros."""
    parts = []
    for digits in range(len(str(lo)), len(str(hi)) + 1):
        low, high = max(lo, 0 if digits == 1 else 10 ** (digits - 1)), min(hi, 10 ** digits - 1)
        if low <= high:
            parts += _same_length(str(low), str(high))
    return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"


def _same_length(low: str, high: str) -> list[str]:
    if len(low) == 1:
        return [low if low == high else f"[{low}-{high}]"]
    if low[0] == high[0]:
        return [low[0] + _join(_same_length(low[1:], high[1:]))]
    out = []
    top = "9" * (len(low) - 1)
    bottom = "0" * (len(low) - 1)
    first, last = int(low[0]), int(high[0])
    if low[1:] != bottom:
        out.append(low[0] + _join(_same_length(low[1:], top)))
        first += 1
    if high[1:] != top:
        tail = high[0] + _join(_same_length(bottom, high[1:]))
        last -= 1
    else:
        tail = ""
    if first <= last:
        head = str(first) if first == last else f"[{first}-{last}]"
        out.append(head + "[0-9]" * (len(low) - 1))
    if tail:
        out.append(tail)
    return out


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"


def _octet(block: _Block) -> str:
    return _decimal(block.lo, block.hi)


def _quad(value: int, fixed: int) -> str:
    """A dotted quad for the 32-bit values whose first `fixed` bits are those of `value`."""
    octets = [_octet(_block((value >> (24 - 8 * i)) & 0xFF, 8, fixed - 8 * i)) for i in range(4)]
    return "\\.".join(octets)


# --- IPv6 text -----------------------------------------------------------------------------

def _ipv6_forms(network: ipaddress.IPv6Network) -> list[str]:
    """Regexps (alternatives) for every text of every address in the network."""
    value, prefix = int(network.network_address), network.prefixlen
    groups = [_block((value >> (112 - 16 * k)) & 0xFFFF, 16, prefix - 16 * k) for k in range(8)]
    texts = [_group(g) for g in groups]
    quad = _quad(value & 0xFFFFFFFF, prefix - 96)

    def run(first: int, last: int) -> str:  # groups first..last-1 joined by ':'
        return ":".join(texts[first:last])

    def suffixes(low: int, high: int, end: int, tail: str) -> str:
        """Union over q in low..high of groups q..end-1 (':'-joined) followed by `tail`."""
        optional = ""
        if high > low and all(t == ANY_GROUP for t in texts[low:high]):
            optional = f"({ANY_GROUP}:){{0,{high - low}}}"  # the same, shorter
        else:
            for k in range(low, high):
                optional = f"({optional}{texts[k]}:)?"
        return optional + run(high, end) + (":" if high < end and tail else "") + tail

    forms = [run(0, 8), run(0, 6) + ":" + quad]
    for start in range(8):  # `::` replaces groups start..q-1 (at least one, all zero)
        zeros = start
        while zeros < 8 and groups[zeros].zero:
            zeros += 1
        if zeros == start:
            continue
        head = run(0, start) + "::"
        tails = []
        # plain groups after the `::`: q in start+1..zeros (q == 8: nothing after)
        if zeros == 8:
            tails.append("" if start == 7 else f"({suffixes(start + 1, 7, 8, '')})?")
        else:
            tails.append(suffixes(start + 1, zeros, 8, ""))
        if start < 6:  # a dotted quad for groups 6 and 7 after the `::`
            high = min(zeros, 6)
            tails.append(suffixes(start + 1, high, 6, quad))
        forms.append(head + (tails[0] if len(tails) == 1 else "(" + "|".join(tails) + ")"))
    return forms


def _pack(forms: list[str]) -> list[str]:
    """Alternatives -> as few regexps of at most MAX_REGEX characters as a greedy packing gives."""
    out: list[str] = []
    current: list[str] = []
    for form in sorted(set(forms), key=len, reverse=True):
        if len(form) > MAX_REGEX:
            raise ValueError(f"an address form needs {len(form)} characters of regexp (more than {MAX_REGEX})")
        candidate = current + [form]
        if current and len("|".join(candidate)) > MAX_REGEX:
            out.append("|".join(current))
            candidate = [form]
        current = candidate
    if current:
        out.append("|".join(current))
    return out


def address_regexps(network: Network) -> list[str]:
    """Lucene regexps (flags NONE, case-sensitive) whose union accepts exactly the texts of the
    addresses inside `network` (see the module docstring for the forms)."""
    forms = _ipv6_forms(as_ipv6(network))
    ipv4 = _ipv4_part(network)
    if ipv4 is not None:
        forms.append(_quad(int(ipv4.network_address), ipv4.prefixlen))
    return _pack(forms)
