"""The few DNS wire-format pieces the service resolver needs (RFC 1035): pure functions.

Only the question is parsed; answers for local names are A records built here, and every other
query is relayed to an upstream resolver as raw bytes, so nothing else of DNS is needed.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A = 1
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1
RCODE_OK = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3


class DnsFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str            # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes      # the question section as received, echoed in the answer

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & 0x0100)


def parse_query(data: bytes) -> Query:
    if len(data) < 12:
        raise DnsFormatError("message shorter than a DNS header")
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!6H", data[:12])
    if flags & 0x8000:
        raise DnsFormatError("a response, not a query")
    if qd != 1:
        raise DnsFormatError(f"{qd} questions (exactly one is supported)")
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            raise DnsFormatError("name runs past the message")
        n = data[pos]
        if n & 0xC0:
            raise DnsFormatError("compressed name in a question")
        pos += 1
        if n == 0:
            break
        labels.append(data[pos:pos + n].decode("ascii", "replace"))
        pos += n
        if len(labels) > 127:
            raise DnsFormatError("name too long")
    if pos + 4 > len(data):
        raise DnsFormatError("question lacks type and class")
    qtype, qclass = struct.unpack("!2H", data[pos:pos + 4])
    return Query(qid, flags, ".".join(labels).lower(), qtype, qclass, data[12:pos + 4])


def response(q: Query, addresses: list[str], rcode: int = RCODE_OK, ttl: int = 600) -> bytes:
    """An authoritative answer with one A record per address (none for NODATA/NXDOMAIN)."""
    # QR, AA, RD copied, RA: this server recurses (by relaying) for everything else.
    flags = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | (q.flags & 0x7800) | rcode
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + ipaddress.IPv4Address(a).packed
        for a in addresses)
    return struct.pack("!6H", q.id, flags, 1, len(addresses), 0, 0) + q.question + answers


def error_response(data: bytes, rcode: int) -> bytes | None:
    """A bare error for whatever query arrived; None when not even a header can be read."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack("!2H", data[:4])
    return struct.pack("!6H", qid, 0x8000 | (flags & 0x7900) | 0x0080 | rcode, 0, 0, 0, 0)


def build_query(name: str, qtype: int = TYPE_A, qid: int = 0x1234) -> bytes:
    """A query with recursion desired; used by tests and the node's own checks."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p)
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", qtype, CLASS_IN)


def parse_a_answers(data: bytes) -> tuple[int, list[str]]:
    """(rcode, A addresses) of a response; for tests and checks."""
    if len(data) < 12:
        raise DnsFormatError("message shorter than a DNS header")
    _qid, flags, qd, an, _ns, _ar = struct.unpack("!6H", data[:12])
    pos = 12

    def skip_name(p: int) -> int:
        while True:
            n = data[p]
            if n & 0xC0 == 0xC0:
                return p + 2
            p += 1 + n
            if n == 0:
                return p

    for _ in range(qd):
        pos = skip_name(pos) + 4
    out = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == TYPE_A and rdlen == 4:
            out.append(str(ipaddress.IPv4Address(data[pos:pos + 4])))
        pos += rdlen
    return flags & 0xF, out
