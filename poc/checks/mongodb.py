"""MongoDB without authentication: listDatabases over the wire protocol (OP_MSG).

A small BSON codec (the types listDatabases uses) instead of a driver: the check needs one
command and its answer, and a driver would add reconnects and server discovery we must
not do against someone's database.
"""

import itertools
import struct

from poc.checks.base import Check, CheckError, Target, Verdict
from poc.checks.registry import check

OP_MSG = 2013
MAX_MESSAGE = 48 * 1024 * 1024  # MongoDB's own maxMessageSizeBytes
DATABASES_SHOWN = 20
_ids = itertools.count(1)


def bson_encode(doc: dict) -> bytes:
    out = b""
    for key, value in doc.items():
        name = key.encode() + b"\x00"
        if isinstance(value, bool):
            out += b"\x08" + name + (b"\x01" if value else b"\x00")
        elif isinstance(value, int):
            out += b"\x10" + name + struct.pack("<i", value)
        elif isinstance(value, float):
            out += b"\x01" + name + struct.pack("<d", value)
        elif isinstance(value, str):
            data = value.encode() + b"\x00"
            out += b"\x02" + name + struct.pack("<i", len(data)) + data
        elif isinstance(value, dict):
            out += b"\x03" + name + bson_encode(value)
        elif isinstance(value, list):
            out += b"\x04" + name + bson_encode({str(i): v for i, v in enumerate(value)})
        else:
            raise TypeError(f"cannot encode {type(value).__name__}")
    return struct.pack("<i", len(out) + 5) + out + b"\x00"


_FIXED = {0x07: 12, 0x09: 8, 0x11: 8, 0x12: 8, 0x13: 16, 0x0A: 0, 0xFF: 0, 0x7F: 0}


def bson_decode(data: bytes) -> dict:
    """Decode one document; types without a use here (ObjectId, dates...) become None."""
    try:
        (size,) = struct.unpack_from("<i", data)
        if size > len(data) or size < 5:
            raise CheckError("truncated BSON document")
        doc, pos = {}, 4
        while data[pos] != 0:
            kind = data[pos]
            end = data.index(b"\x00", pos + 1)
            key = data[pos + 1 : end].decode("utf-8", "replace")
            pos = end + 1
            if kind == 0x01:
                doc[key] = struct.unpack_from("<d", data, pos)[0]
                pos += 8
            elif kind in (0x02, 0x0D, 0x0E):
                (length,) = struct.unpack_from("<i", data, pos)
                doc[key] = data[pos + 4 : pos + 3 + length].decode("utf-8", "replace")
                pos += 4 + length
            elif kind in (0x03, 0x04):
                (length,) = struct.unpack_from("<i", data, pos)
                sub = bson_decode(data[pos : pos + length])
                doc[key] = list(sub.values()) if kind == 0x04 else sub
                pos += length
            elif kind == 0x05:
                (length,) = struct.unpack_from("<i", data, pos)
                doc[key] = None
                pos += 5 + length
            elif kind == 0x08:
                doc[key] = data[pos] == 1
                pos += 1
            elif kind == 0x10:
                doc[key] = struct.unpack_from("<i", data, pos)[0]
                pos += 4
            elif kind in _FIXED:
                doc[key] = struct.unpack_from("<q", data, pos)[0] if kind == 0x12 else None
                pos += _FIXED[kind]
            else:
                raise CheckError(f"unsupported BSON type 0x{kind:02x}")
        return doc
    except (struct.error, IndexError, ValueError) as exc:
        raise CheckError(f"malformed BSON: {exc}") from None


def op_msg(command: dict, request_id: int) -> bytes:
    body = struct.pack("<I", 0) + b"\x00" + bson_encode(command)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG) + body


def op_msg_reply(data: bytes) -> dict:
    """The body document of an OP_MSG reply (header already checked)."""
    if len(data) < 21 or data[20] != 0:
        raise CheckError("OP_MSG reply without a body section")
    return bson_decode(data[21:])


@check(
    name="mongodb_noauth",
    title="MongoDB lists its databases without authentication",
    severity="high",
    services=("mongodb", "mongod"),
    ports=(27017,),
)
def mongodb_noauth(spec: Check, target: Target) -> Verdict:
    request_id = next(_ids)
    command = {"listDatabases": 1, "nameOnly": True, "$db": "admin"}
    with target.connect() as conn:
        conn.send(op_msg(command, request_id))
        header = conn.read_exactly(16)
        length, _, response_to, opcode = struct.unpack("<iiii", header)
        if opcode != OP_MSG or response_to != request_id or not 21 <= length <= MAX_MESSAGE:
            raise CheckError("not a MongoDB OP_MSG answer")
        reply = op_msg_reply(header + conn.read_exactly(length - 16))
    if reply.get("ok") in (1, 1.0) and isinstance(reply.get("databases"), list):
        names = [str(d.get("name")) for d in reply["databases"] if isinstance(d, dict)]
        shown = ", ".join(names[:DATABASES_SHOWN])
        return spec.verdict(True, f"listDatabases -> ok, {len(names)} databases: {shown}")
    message = f"listDatabases -> {reply.get('codeName') or ''} {reply.get('errmsg') or ''}"
    return spec.verdict(False, message.strip())
