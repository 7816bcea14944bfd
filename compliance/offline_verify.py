"""Verify an exported report offline, with only the public key: no database, no product settings.

    python -m compliance.offline_verify REPORT_FILE --public-key KEY.pem [--signature REPORT_FILE.sig.json]

Exit 0: the file is exactly what was signed, by the holder of that key. 1: it is not. 2: bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verify(report: Path, signature: Path, public_key_pem: bytes) -> tuple[bool, str]:
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        return False, "the public key is not an Ed25519 key"
    sig = json.loads(signature.read_text())
    data = report.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sig.get("sha256"):
        return False, f"the file's sha256 {digest[:16]}… differs from the signed {str(sig.get('sha256'))[:16]}…: it was changed"
    try:
        key.verify(bytes.fromhex(sig["signature"]), data)
    except (InvalidSignature, ValueError, KeyError):
        return False, "the signature does not verify with this public key"
    return True, f"valid: {report.name} (sha256 {digest}) was signed by key {sig.get('key_id')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--public-key", type=Path, required=True)
    parser.add_argument("--signature", type=Path)
    args = parser.parse_args(argv)
    signature = args.signature or args.report.with_name(args.report.name + ".sig.json")
    try:
        ok, message = verify(args.report, signature, args.public_key.read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
