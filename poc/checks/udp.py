"""Read-only UDP checks: SNMP community `public`, memcached UDP stats, NTP mode 6 version.

Each sends one small request that only reads (a GET of sysDescr.0, `stats`, a READVAR of
the system variables) and calls the port vulnerable only when the answer proves the read
worked. Silence proves nothing (CheckError: no verdict), as everywhere in Portmon's UDP.
"""

import os
import struct

from poc.checks.base import Check, CheckError, Target, Verdict
from poc.checks.registry import check

SYSDESCR_OID = bytes([0x2B, 6, 1, 2, 1, 1, 1, 0])  # 1.3.6.1.2.1.1.1.0


# --- BER, just enough for one SNMP GetRequest and its GetResponse ---------------------------
def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(body)]) + body
    return bytes([tag]) + length + value


def _read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    if pos + 2 > len(data):
        raise CheckError("SNMP answer cut short")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise CheckError("SNMP answer with a bad length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise CheckError("SNMP answer cut short")
    return tag, data[pos : pos + length], pos + length


def snmp_get_request(community: bytes, request_id: int, *, version: int = 1) -> bytes:
    """An SNMP GetRequest of sysDescr.0 (version 1 is v2c, 0 is v1)."""
    binding = _tlv(0x30, _tlv(0x06, SYSDESCR_OID) + _tlv(0x05, b""))
    pdu = _tlv(
        0xA0,
        _tlv(0x02, request_id.to_bytes(4, "big"))
        + _tlv(0x02, b"\x00")
        + _tlv(0x02, b"\x00")
        + _tlv(0x30, binding),
    )
    return _tlv(0x30, _tlv(0x02, bytes([version])) + _tlv(0x04, community) + pdu)


def snmp_sysdescr(answer: bytes, request_id: int) -> str:
    """The sysDescr value of a GetResponse to our request; CheckError for anything else."""
    tag, message, _ = _read(answer, 0)
    if tag != 0x30:
        raise CheckError("not an SNMP answer")
    _, _version, pos = _read(message, 0)
    _, _community, pos = _read(message, pos)
    tag, pdu, _ = _read(message, pos)
    if tag != 0xA2:
        raise CheckError("SNMP answer is not a GetResponse")
    _, rid, pos = _read(pdu, 0)
    if int.from_bytes(rid, "big") != request_id:
        raise CheckError("SNMP answer to another request")
    _, status, pos = _read(pdu, pos)
    _, _index, pos = _read(pdu, pos)
    if status.strip(b"\x00"):
        raise CheckError(f"SNMP error-status {int.from_bytes(status, 'big')}")
    _, bindings, _ = _read(pdu, pos)
    _, first, _ = _read(bindings, 0)
    _, oid, pos = _read(first, 0)
    tag, value, _ = _read(first, pos)
    if oid != SYSDESCR_OID or tag != 0x04:
        raise CheckError("SNMP answer without sysDescr")
    return value.decode("utf-8", "replace")


@check(
    name="snmp_public",
    title="SNMP answers the community string 'public'",
    severity="high",
    services=("snmp",),
    ports=(161,),
    proto="udp",
)
def snmp_public(spec: Check, target: Target) -> Verdict:
    request_id = int.from_bytes(os.urandom(3), "big")
    answer = target.udp_exchange(snmp_get_request(b"public", request_id))
    descr = snmp_sysdescr(answer, request_id)
    return spec.verdict(True, f"GET sysDescr.0 with community public:\n{descr}")


@check(
    name="memcached_udp_stats",
    title="Memcached answers stats over UDP (amplifier, no authentication)",
    severity="high",
    services=("memcache", "memcached"),
    ports=(11211,),
    proto="udp",
)
def memcached_udp_stats(spec: Check, target: Target) -> Verdict:
    request_id = int.from_bytes(os.urandom(2), "big")
    frame = struct.pack(">HHHH", request_id, 0, 1, 0)
    answer = target.udp_exchange(frame + b"stats\r\n")
    if len(answer) < 8 or struct.unpack(">H", answer[:2])[0] != request_id:
        raise CheckError("not a memcached UDP answer")
    body = answer[8:].decode("utf-8", "replace")
    stats = {}
    for line in body.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    if "version" not in stats and "pid" not in stats:
        return spec.verdict(False, body.splitlines()[0] if body else "")
    shown = "\n".join(f"STAT {k} {stats[k]}" for k in ("version", "uptime") if k in stats)
    return spec.verdict(True, f"stats over UDP without authentication:\n{shown}")


@check(
    name="ntp_mode6_readvar",
    title="NTP answers mode 6 control queries (READVAR)",
    severity="medium",
    services=("ntp",),
    ports=(123,),
    proto="udp",
)
def ntp_mode6_readvar(spec: Check, target: Target) -> Verdict:
    sequence = int.from_bytes(os.urandom(2), "big")
    # NTP v2 control message: mode 6, opcode 2 (READVAR), association 0 (the system).
    request = bytes([0x16, 0x02]) + struct.pack(">HHHHH", sequence, 0, 0, 0, 0)
    answer = target.udp_exchange(request)
    if len(answer) < 12 or answer[0] & 0x07 != 6 or not answer[1] & 0x80:
        raise CheckError("not an NTP control answer")
    if struct.unpack(">H", answer[2:4])[0] != sequence:
        raise CheckError("NTP answer to another request")
    if answer[1] & 0x40:
        return spec.verdict(False, "mode 6 refused (error bit set)")
    count = struct.unpack(">H", answer[10:12])[0]
    text = answer[12 : 12 + count].decode("latin-1")
    version = next((v for v in text.split(", ") if v.startswith("version=")), "")
    return spec.verdict(True, f"READVAR answered:\n{version or text[:200]}")
