"""The user-space ESP engine of one node: `python -m overlay.espd TUN NODE_ADDR MTU`.

Runs in the node's underlay namespace. VXLAN datagrams of encrypted networks are routed into
the TUN device (fwmark set by nftables from the VNI); each is sealed into ESP and sent to the
peer node over a raw IP socket (protocol 50). ESP arriving from peers is opened and written
back into the TUN device as the original UDP datagram, which the kernel hands to the VXLAN
socket. Keys come as JSON lines on stdin (`{"keys": [[id, "hex"], ...]}`, first = primary) and
are never written to disk; when stdin closes (the node went away) the process exits and the
TUN device goes with it. Prints "ready" once the device exists.
"""
from __future__ import annotations

import fcntl
import json
import os
import selectors
import socket
import struct
import sys

from overlay.esp import PROTO_ESP, PROTO_UDP, EspError, Keyring, ipv4_packet, ipv4_split

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
BURST = 64


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


class Engine:
    def __init__(self, tun: str, node_addr: str, mtu: int):
        self.local = socket.inet_aton(node_addr)
        self.ring = Keyring(self.local)
        self.tun = open_tun(tun)
        self.mtu = mtu
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, PROTO_ESP)
        self.raw.bind((node_addr, 0))
        self.raw.setblocking(False)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.dropped = 0

    def outbound(self) -> None:
        for _ in range(BURST):
            try:
                pkt = os.read(self.tun, 65535)
            except BlockingIOError:
                return
            try:
                src, dst, proto, payload = ipv4_split(pkt)
                if proto != PROTO_UDP or src != self.local:
                    continue
                self.raw.sendto(self.ring.seal(dst, payload), (socket.inet_ntoa(dst), 0))
            except (EspError, OSError):
                self.dropped += 1

    def inbound(self) -> None:
        for _ in range(BURST):
            try:
                pkt = self.raw.recv(65535)
            except BlockingIOError:
                return
            try:
                src, dst, proto, esp = ipv4_split(pkt)
                if proto != PROTO_ESP or dst != self.local:
                    continue
                os.write(self.tun, ipv4_packet(src, dst, PROTO_UDP, self.ring.open(src, esp)))
            except (EspError, OSError):
                self.dropped += 1

    def control(self, line: str) -> None:
        msg = json.loads(line)
        self.ring.set_keys([(int(k), bytes.fromhex(v)) for k, v in msg.get("keys", [])])


def main(argv: list[str]) -> int:
    tun, node_addr, mtu = argv[0], argv[1], int(argv[2])
    eng = Engine(tun, node_addr, mtu)
    sel = selectors.DefaultSelector()
    sel.register(eng.tun, selectors.EVENT_READ, eng.outbound)
    sel.register(eng.raw, selectors.EVENT_READ, eng.inbound)
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    pending = b""

    def control() -> None:
        nonlocal pending
        chunk = os.read(stdin.fileno(), 65536)
        if not chunk:
            raise SystemExit(0)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                eng.control(line.decode())
                print("ok", flush=True)

    sel.register(stdin.fileno(), selectors.EVENT_READ, control)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            key.data()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
