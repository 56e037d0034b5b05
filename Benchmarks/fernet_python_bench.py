#!/usr/bin/env python3
"""Measure Python `cryptography` Fernet encrypt/decrypt throughput.

Baseline for the Swift VaultService Fernet implementation (target: Swift
decrypt >= 3x Python). Uses a 200-byte plaintext and runs each operation for
about `--seconds` seconds (default 1.0), then prints one JSON object:
{"encrypt_ops_s": ..., "decrypt_ops_s": ..., ...}
"""
import argparse
import json
import os
import sys
import time

try:
    import cryptography
    from cryptography.fernet import Fernet
except ImportError as exc:  # pragma: no cover - environment problem
    print(json.dumps({"error": f"cryptography not importable: {exc}"}))
    sys.exit(2)


def ops_per_second(operation, seconds: float) -> float:
    # Warm up so one-time costs (imports, OpenSSL init) are not measured.
    for _ in range(1000):
        operation()
    count = 0
    batch = 1000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            operation()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=200, help="plaintext bytes")
    args = parser.parse_args()

    fernet = Fernet(Fernet.generate_key())
    plaintext = os.urandom(args.size)
    token = fernet.encrypt(plaintext)
    assert fernet.decrypt(token) == plaintext

    encrypt_ops = ops_per_second(lambda: fernet.encrypt(plaintext), args.seconds)
    decrypt_ops = ops_per_second(lambda: fernet.decrypt(token), args.seconds)
    print(json.dumps({
        "encrypt_ops_s": round(encrypt_ops),
        "decrypt_ops_s": round(decrypt_ops),
        "plaintext_bytes": args.size,
        "cryptography_version": cryptography.__version__,
        "python_version": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
