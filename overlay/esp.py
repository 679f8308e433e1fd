"""IPsec ESP (RFC 4303) in transport mode with AES-GCM-128 (RFC 4106) for VXLAN datagrams:
pure packet functions and security-association bookkeeping.

Why in user space: this kernel is built without ESP (CONFIG_INET_ESP, GCM and AUTHENC are all
off, and modules cannot be loaded), so `ip xfrm state add ... proto esp` fails. The wire format
is standard ESP nonetheless: IP protocol 50, SPI, sequence number, 8-byte explicit IV, the
encrypted UDP datagram with its trailer, and a 16-byte ICV.

SPI = key id (8 bits) << 24 | sender epoch (24 bits, random at each start of the sender). Each
direction between two nodes gets its own key, HKDF(master key, SPI, source, destination), so a
new epoch or a new key (rotation) is a new SPI with a fresh key, and GCM nonces (salt || IV,
IV = a per-SA counter) never repeat under one key.
"""
from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTO_ESP = 50
PROTO_UDP = 17
ICV_LEN = 16
IV_LEN = 8
REPLAY_WINDOW = 1024
SEQ_LIMIT = 0xFFFFFFF0     # rekey (new epoch) well before the 32-bit sequence number wraps


class EspError(ValueError):
    pass


def make_spi(key_id: int, epoch: int) -> int:
    return (key_id & 0xFF) << 24 | (epoch & 0xFFFFFF)


def new_epoch() -> int:
    return int.from_bytes(os.urandom(3), "big") | 0x100   # SPIs below 256 are reserved


def derive(master: bytes, spi: int, src: bytes, dst: bytes) -> tuple[AESGCM, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=20, salt=b"shoal-overlay-esp",
               info=struct.pack("!I", spi) + src + dst).derive(master)
    return AESGCM(okm[:16]), okm[16:]


@dataclass
class OutboundSA:
    spi: int
    aead: AESGCM
    salt: bytes
    seq: int = 0

    def seal(self, udp: bytes) -> bytes:
        """ESP payload (without IP header) carrying one UDP datagram."""
        self.seq += 1
        pad = (-(len(udp) + 2)) % 4
        plain = udp + bytes(range(1, pad + 1)) + bytes((pad, PROTO_UDP))
        head = struct.pack("!II", self.spi, self.seq)
        iv = struct.pack("!Q", self.seq)
        return head + iv + self.aead.encrypt(self.salt + iv, plain, head)


@dataclass
class InboundSA:
    aead: AESGCM
    salt: bytes
    top: int = 0
    window: int = 0          # bit i set: sequence number top - i was seen

    def open(self, esp: bytes) -> bytes:
        """The UDP datagram inside, after authentication and the replay check."""
        if len(esp) < 8 + IV_LEN + ICV_LEN + 2:
            raise EspError("short ESP packet")
        seq = struct.unpack("!I", esp[4:8])[0]
        if seq == 0 or (seq <= self.top and (seq + REPLAY_WINDOW <= self.top or self.window >> (self.top - seq) & 1)):
            raise EspError(f"replayed or stale sequence number {seq}")
        iv = esp[8:8 + IV_LEN]
        try:
            plain = self.aead.decrypt(self.salt + iv, esp[8 + IV_LEN:], esp[:8])
        except Exception as exc:   # InvalidTag: forged, corrupted or wrong key
            raise EspError("authentication failed") from exc
        if seq > self.top:
            self.window = ((self.window << (seq - self.top)) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.top = seq
        else:
            self.window |= 1 << (self.top - seq)
        pad, nxt = plain[-2], plain[-1]
        if nxt != PROTO_UDP or pad + 2 > len(plain):
            raise EspError(f"unexpected inner protocol {nxt}")
        return plain[:-(pad + 2)]


def ipv4_split(packet: bytes) -> tuple[bytes, bytes, int, bytes]:
    """(source, destination, protocol, payload) of an IPv4 packet."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise EspError("not an IPv4 packet")
    ihl = (packet[0] & 0xF) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    return packet[12:16], packet[16:20], packet[9], packet[ihl:total]


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_packet(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl, proto, 0, src, dst)
    return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + payload


@dataclass
class Keyring:
    """The keys of one node and the SAs made from them."""
    local: bytes                         # this node's underlay address, packed
    keys: dict[int, bytes] = field(default_factory=dict)
    primary: int | None = None
    epoch: int = field(default_factory=new_epoch)
    outbound: dict[bytes, OutboundSA] = field(default_factory=dict)
    inbound: dict[tuple[bytes, int], InboundSA] = field(default_factory=dict)

    def set_keys(self, keys: list[tuple[int, bytes]]) -> None:
        """keys[0] encrypts from now on; SAs of keys no longer listed are dropped at once. A new
        primary starts a new epoch, hence new SPIs and keys: a sequence number or a nonce is
        never reused under a key, even when an old key becomes primary again."""
        old = self.keys
        self.keys = dict(keys)
        primary = keys[0][0] if keys else None
        if primary is None or primary != self.primary or old.get(primary) != self.keys[primary]:
            self.epoch = new_epoch()
            self.outbound.clear()
        self.primary = primary
        self.inbound = {k: sa for k, sa in self.inbound.items()
                        if old.get(k[1] >> 24) is not None and old.get(k[1] >> 24) == self.keys.get(k[1] >> 24)}

    def seal(self, dst: bytes, udp: bytes) -> bytes:
        if self.primary is None:
            raise EspError("no key: an encrypted network never sends in the clear")
        sa = self.outbound.get(dst)
        if sa is None or sa.seq >= SEQ_LIMIT:
            if sa is not None:
                self.epoch = new_epoch()
                self.outbound.clear()
            spi = make_spi(self.primary, self.epoch)
            aead, salt = derive(self.keys[self.primary], spi, self.local, dst)
            sa = self.outbound[dst] = OutboundSA(spi, aead, salt)
        return sa.seal(udp)

    def open(self, src: bytes, esp: bytes) -> bytes:
        if len(esp) < 8:
            raise EspError("short ESP packet")
        spi = struct.unpack("!I", esp[:4])[0]
        sa = self.inbound.get((src, spi))
        if sa is None:
            key = self.keys.get(spi >> 24)
            if key is None:
                raise EspError(f"unknown SPI {spi:#x} from {ipaddress.IPv4Address(src)}")
            sa = InboundSA(*derive(key, spi, src, self.local))
            udp = sa.open(esp)
            self.inbound[(src, spi)] = sa   # only once authentic: forged SPIs cost no memory
            return udp
        return sa.open(esp)
