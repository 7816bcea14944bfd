"""Connection passwords at rest: Fernet-encrypted in the database, never shown back in full.

The key comes from HEALING_CREDENTIALS_KEY (a Fernet key; give every web and worker machine the same
one) or, on the embedded default, from a key file created on first use with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

MASK = "****"


class VaultError(Exception):
    pass


def _fernet() -> Fernet:
    key = settings.HEALING.get("CREDENTIALS_KEY") or ""
    if not key:
        path = Path(settings.HEALING["CREDENTIALS_KEY_FILE"])
        try:
            key = path.read_text().strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = Fernet.generate_key().decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(fresh)
            key = fresh
    try:
        return Fernet(key.encode() if isinstance(key, str) else key)
    except ValueError as exc:
        raise VaultError("HEALING_CREDENTIALS_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)") from exc


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode() if secret else ""


def unseal(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise VaultError("the stored password cannot be decrypted: the credentials key changed; enter the password again") from exc


def split_url_password(url: str) -> tuple[str, str]:
    """('redis://user:****@host:6379/0', 'password'): the URL as shown and stored, and the password apart."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, ""
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(parts.password)


def join_url_password(masked_url: str, password: str) -> str:
    """Put the password back into a masked URL, for the backend only."""
    if not password:
        return masked_url
    from urllib.parse import quote

    return masked_url.replace(f":{MASK}@", f":{quote(password, safe='')}@", 1)
