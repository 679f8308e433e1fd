"""Small network probes run inside a container's namespace by the overlay tests and the bench:
`python -m tests.overlay.probe COMMAND ARGS...`. Exit status 0 means success."""
from __future__ import annotations

import collections
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(ip: str, count: str = "1", timeout: str = "2", size: str = "56") -> int:
    """ICMP echo; the payload size lets a test send a packet exactly as large as the MTU."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setsockopt(socket.IPPROTO_IP, 10, 2)   # IP_MTU_DISCOVER = IP_PMTUDISC_DO: no fragmenting
    s.settimeout(float(timeout))
    ident = os.getpid() & 0xFFFF
    got = 0
    for seq in range(int(count)):
        payload = bytes(int(size))
        head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, _csum(head + payload), ident, seq) + payload
        try:
            s.sendto(pkt, (ip, 0))
        except OSError as exc:
            print(f"send: {exc}")
            return 1
        deadline = time.monotonic() + float(timeout)
        while time.monotonic() < deadline:
            try:
                data, addr = s.recvfrom(65535)
            except socket.timeout:
                break
            ihl = (data[0] & 0xF) * 4
            typ, _code, _c, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and rseq == seq and addr[0] == ip:
                got += 1
                break
    print(f"{got}/{count}")
    return 0 if got == int(count) else 1


def serve_name(name: str, port: str, host: str = "0.0.0.0") -> int:
    """Answer every TCP connection with name, then echo what it sends until it closes."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(128)
    print("listening", flush=True)
    while True:
        c, _ = srv.accept()
        with c:
            try:
                c.sendall(name.encode() + b"\n")
                c.settimeout(5)
                while data := c.recv(65536):
                    c.sendall(data)
            except OSError:
                pass


def connect(ip: str, port: str, timeout: str = "3", send: str = "") -> int:
    try:
        with socket.create_connection((ip, int(port)), timeout=float(timeout)) as c:
            f = c.makefile("rb")
            line = f.readline().decode().strip()
            if send:
                c.sendall(send.encode())
                c.shutdown(socket.SHUT_WR)
                echoed = f.read().decode()
                line += "|" + echoed
            print(line)
            return 0
    except OSError as exc:
        print(f"error: {exc}")
        return 1


def spread(ip: str, port: str, n: str, timeout: str = "3") -> int:
    """Open n connections in turn; print how many each backend name answered."""
    counts: collections.Counter = collections.Counter()
    for _ in range(int(n)):
        try:
            with socket.create_connection((ip, int(port)), timeout=float(timeout)) as c:
                counts[c.makefile("rb").readline().decode().strip()] += 1
        except OSError as exc:
            counts[f"error: {exc.__class__.__name__}"] += 1
    print(json.dumps(counts))
    return 0


def dns(server: str, name: str, qtype: str = "1", transport: str = "udp") -> int:
    from overlay import dnsmsg
    q = dnsmsg.build_query(name, int(qtype), qid=os.getpid() & 0xFFFF)
    if transport == "tcp":
        with socket.create_connection((server, 53), timeout=3) as c:
            c.sendall(struct.pack("!H", len(q)) + q)
            f = c.makefile("rb")
            (n,) = struct.unpack("!H", f.read(2))
            data = f.read(n)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, 53))
        data = s.recvfrom(65535)[0]
    rcode, addrs = dnsmsg.parse_a_answers(data)
    print(json.dumps({"rcode": rcode, "addrs": sorted(addrs)}))
    return 0


COMMANDS = {"ping": ping, "serve-name": serve_name, "connect": connect, "spread": spread, "dns": dns}

if __name__ == "__main__":
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
