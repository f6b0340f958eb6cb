"""Fake UDP services for the lab: each answers the requests Portmon, masscan and nmap send.

A handler takes one datagram and returns the reply, or None to stay silent (as the real
daemon does for a request it does not accept, e.g. SNMP with a wrong community).
"""

import struct
from collections.abc import Callable

SNMP_COMMUNITY = b"public"
SNMP_SYSDESCR = b"Linux lab-router 6.1.0-28-amd64 #1 SMP Debian 6.1.119-1 x86_64"
MEMCACHED_VERSION = b"1.6.18"
NTP_VERSION = b'version="ntpd 4.2.8p15@1.3728-o Wed Sep 23 11:46:38 UTC 2020 (1)"'


# --- BER, just enough for SNMP v1/v2c get-request -> get-response ---------------------------
def _ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _ber_len(len(value)) + value


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, data[pos : pos + length], pos + length


def snmp(data: bytes) -> bytes | None:
    """Answer a v1/v2c GetRequest (or GetNext) with community public: sysDescr for every OID."""
    try:
        tag, message, _ = _read_tlv(data, 0)
        if tag != 0x30:
            return None
        _, version, pos = _read_tlv(message, 0)
        _, community, pos = _read_tlv(message, pos)
        pdu_tag, pdu, _ = _read_tlv(message, pos)
        if community != SNMP_COMMUNITY or pdu_tag not in (0xA0, 0xA1):
            return None
        _, request_id, pos = _read_tlv(pdu, 0)
        _, _, pos = _read_tlv(pdu, pos)  # error-status
        _, _, pos = _read_tlv(pdu, pos)  # error-index
        _, bindings, _ = _read_tlv(pdu, pos)
        _, first, _ = _read_tlv(bindings, 0)
        _, oid, _ = _read_tlv(first, 0)
    except (IndexError, ValueError):
        return None
    binding = _tlv(0x30, _tlv(0x06, oid) + _tlv(0x04, SNMP_SYSDESCR))
    response = _tlv(
        0xA2,
        _tlv(0x02, request_id) + _tlv(0x02, b"\x00") + _tlv(0x02, b"\x00") + _tlv(0x30, binding),
    )
    return _tlv(0x30, _tlv(0x02, version) + _tlv(0x04, community) + response)


def memcached(data: bytes) -> bytes | None:
    """memcached's UDP frame (8-byte header) with `version` or `stats`."""
    if len(data) < 8:
        return None
    header, command = data[:8], data[8:].strip().lower()
    frame = header[:2] + b"\x00\x00\x00\x01\x00\x00"
    if command == b"version":
        return frame + b"VERSION " + MEMCACHED_VERSION + b"\r\n"
    if command.startswith(b"stats"):
        stats = [
            b"STAT pid 412",
            b"STAT uptime 86400",
            b"STAT time 1796000000",
            b"STAT version " + MEMCACHED_VERSION,
            b"STAT libevent 2.1.12-stable",
            b"STAT pointer_size 64",
            b"STAT curr_connections 2",
            b"END",
        ]
        return frame + b"\r\n".join(stats) + b"\r\n"
    return frame + b"ERROR\r\n"


def dns(data: bytes) -> bytes | None:
    """Any query: the question back with REFUSED (a server that is there, not a resolver)."""
    if len(data) < 12:
        return None
    flags = 0x8000 | (data[2] & 0x79) << 8 | 0x0005  # QR, opcode and RD copied, REFUSED
    return data[:2] + struct.pack(">H", flags) + data[4:6] + b"\x00" * 6 + data[12:]


def ntp(data: bytes) -> bytes | None:
    """Mode 3 (client): a mode 4 server reply; mode 6 READVAR: ntpd's version variable."""
    if not data:
        return None
    mode = data[0] & 0x07
    if mode == 3 and len(data) >= 48:
        now = struct.pack(">II", 3_996_000_000, 0)
        return (
            bytes([0x24, 2, data[2], 0xE9])
            + b"\x00\x00\x00\x10\x00\x00\x00\x20"
            + b"\xc6\x12\x00\x01"
            + now
            + data[40:48]
            + now
            + now
        )
    if mode == 6 and len(data) >= 12 and data[1] & 0x1F == 2:  # READVAR
        body = NTP_VERSION + b', processor="x86_64", system="Linux/6.1.0", leap=00, stratum=2'
        padded = body + b"\x00" * (-len(body) % 4)
        header = bytes([0x16, 0x82]) + data[2:4] + b"\x00\x00" + data[6:8]
        return header + struct.pack(">HH", 0, len(body)) + padded
    return None


def ssdp(data: bytes) -> bytes | None:
    if not data.startswith(b"M-SEARCH"):
        return None
    return (
        b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: upnp:rootdevice\r\n"
        b"USN: uuid:5f2c-lab::upnp:rootdevice\r\nEXT:\r\n"
        b"SERVER: Linux/6.1 UPnP/1.1 MiniUPnPd/2.3.3\r\n"
        b"LOCATION: http://198.18.0.1:5000/rootDesc.xml\r\n\r\n"
    )


UDP_SERVICES: dict[str, tuple[int, Callable[[bytes], bytes | None]]] = {
    # name: (well-known port, handler); names as nmap's nmap-services calls the port.
    "snmp": (161, snmp),
    "memcached": (11211, memcached),
    "domain": (53, dns),
    "ntp": (123, ntp),
    "upnp": (1900, ssdp),
}
# Bound but never answering: silence must stay open|filtered, never open.
SILENT_PORT = 69
