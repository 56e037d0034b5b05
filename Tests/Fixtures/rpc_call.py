#!/usr/bin/env python3
"""A Clau RPC client written only from docs/rpc.md, with hand-rolled protobuf encoding.

Usage: rpc_call.py SOCKET METHOD [PAYLOAD_HEX]
Prints one JSON line: {"code": N, "message": "...", "payload_hex": "..."}.
Used by tests that must call a server from another uid (setpriv) or another language.
"""
import json
import socket
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire_type, value):
    key = varint((number << 3) | wire_type)
    if wire_type == 0:
        return key + varint(value)
    return key + varint(len(value)) + value


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def parse(buf):
    """Returns {field_number: [values]} for one message level."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = read_varint(buf, i)
        elif wire_type == 2:
            length, i = read_varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError("unexpected wire type %d" % wire_type)
        fields.setdefault(number, []).append(value)
    return fields


def main():
    path, method = sys.argv[1], sys.argv[2]
    payload = bytes.fromhex(sys.argv[3]) if len(sys.argv) > 3 else b""
    request = field(1, 2, method.encode()) + field(2, 0, 5_000_000) + field(4, 2, payload)
    frame = field(1, 0, 7) + field(2, 2, request)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(struct.pack(">I", len(frame)) + frame)
    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            raise SystemExit("connection closed")
        header += chunk
    (length,) = struct.unpack(">I", header)
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            raise SystemExit("connection closed")
        body += chunk
    frame = parse(body)
    assert frame[1][0] == 7, "call id mismatch"
    response = parse(frame[3][0])
    status = parse(response.get(1, [b""])[0])
    print(json.dumps({
        "code": status.get(1, [0])[0],
        "message": status.get(2, [b""])[0].decode(),
        "payload_hex": response.get(2, [b""])[0].hex(),
    }))


if __name__ == "__main__":
    main()
