"""The record's keys: an Ed25519 signing key (generated on first use into a configured path, or
supplied), and a chain key derived from it that makes each event's hash a keyed MAC, so that someone
with write access to the database but not to the key cannot recompute a consistent chain."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings


def signing_key_path() -> Path:
    return Path(settings.COMPLIANCE["SIGNING_KEY"])


@lru_cache(maxsize=4)
def _load_private(path: str) -> Ed25519PrivateKey:
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
    key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{p} does not hold an Ed25519 private key")
    return key


def private_key() -> Ed25519PrivateKey:
    return _load_private(str(signing_key_path()))


def public_key() -> Ed25519PublicKey:
    return private_key().public_key()


def public_pem(key: Ed25519PublicKey | None = None) -> str:
    return (key or public_key()).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_pem(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey | None = None) -> str:
    raw = (key or public_key()).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@lru_cache(maxsize=4)
def _chain_key(path: str) -> bytes:
    raw = _load_private(path).private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return hashlib.sha256(b"aicache-healing audit chain v1\x00" + raw).digest()


def chain_key() -> bytes:
    return _chain_key(str(signing_key_path()))


def mac(key: bytes, data: bytes) -> str:
    """Keyed BLAKE2b: a real MAC, and several times cheaper per call than HMAC-SHA256."""
    return hashlib.blake2b(data, key=key, digest_size=32).hexdigest()


def sign(data: bytes) -> str:
    return private_key().sign(data).hex()


def signature_valid(key: Ed25519PublicKey, data: bytes, signature_hex: str) -> bool:
    try:
        key.verify(bytes.fromhex(signature_hex), data)
        return True
    except (InvalidSignature, ValueError):
        return False
