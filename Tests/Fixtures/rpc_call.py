#!/usr/bin/env python3
"""A Clau RPC client written only from docs/rpc.md, with hand-rolled protobuf encoding.

Usage: rpc_call.py [--wait-close] SOCKET METHOD [PAYLOAD_HEX] [METHOD PAYLOAD_HEX ...]
Makes the calls one after another on one connection (call ids 7, 8, ...) and prints one JSON line
per call: {"code": N, "message": "...", "payload_hex": "..."}. With --wait-close it then sends
nothing and prints {"closed_by_server": true|false, "after_s": S} once the server closes the
connection (or after 30 s).
Used by tests that must call a server from another uid (setpriv) or another language.
"""
import json
import socket
import struct
import sys
import time


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


def read_exactly(s, count):
    data = b""
    while len(data) < count:
        chunk = s.recv(count - len(data))
        if not chunk:
            raise SystemExit("connection closed")
        data += chunk
    return data


def call(s, call_id, method, payload):
    request = field(1, 2, method.encode()) + field(2, 0, 5_000_000) + field(4, 2, payload)
    frame = field(1, 0, call_id) + field(2, 2, request)
    s.sendall(struct.pack(">I", len(frame)) + frame)
    (length,) = struct.unpack(">I", read_exactly(s, 4))
    frame = parse(read_exactly(s, length))
    assert frame[1][0] == call_id, "call id mismatch"
    response = parse(frame[3][0])
    status = parse(response.get(1, [b""])[0])
    print(json.dumps({
        "code": status.get(1, [0])[0],
        "message": status.get(2, [b""])[0].decode(),
        "payload_hex": response.get(2, [b""])[0].hex(),
    }), flush=True)


def main():
    args = sys.argv[1:]
    wait_close = args[:1] == ["--wait-close"]
    if wait_close:
        args = args[1:]
    path, rest = args[0], args[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    for n, i in enumerate(range(0, len(rest), 2)):
        payload = bytes.fromhex(rest[i + 1]) if i + 1 < len(rest) else b""
        call(s, 7 + n, rest[i], payload)
    if wait_close:
        started = time.monotonic()
        try:
            closed = s.recv(1) == b""
        except (socket.timeout, ConnectionResetError) as error:
            closed = isinstance(error, ConnectionResetError)
        print(json.dumps({"closed_by_server": closed, "after_s": round(time.monotonic() - started, 3)}))


if __name__ == "__main__":
    main()
