"""Passwords, API tokens, signed session cookies and CSRF tokens; stdlib hmac plus argon2 for passwords."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("viewer", "labeller", "admin")
"""What an account may be; `saescope user add --role` takes one."""
WRITERS = ("labeller", "admin")
"""The roles that may write (labels, tags, imports, bookmarks, steering): models.User.can_write asks this."""

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_api_token() -> str:
    """A fresh bearer token; shown once, only its hash is stored."""
    return "sae_" + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    """Tokens are long and random, so a fast unsalted hash is enough (unlike passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def session_cookie(key: str, user_id: int) -> str:
    """`user.issued.signature`: the server keeps no session table, the signature vouches for the user id."""
    body = f"{user_id}.{int(time.time())}"
    return f"{body}.{_sign(key, 'session:' + body)}"


def session_user_id(key: str, cookie: str | None, max_age: int) -> int | None:
    """The user id in a valid, unexpired session cookie, else None."""
    parts = (cookie or "").split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(parts[2], _sign(key, "session:" + body)):
        return None
    if time.time() - int(parts[1]) > max_age:
        return None
    return int(parts[0])


def new_csrf_seed() -> str:
    return secrets.token_urlsafe(16)


def csrf_token(key: str, seed: str) -> str:
    """The token forms carry: bound to the browser's seed cookie, which a cross-site page cannot read."""
    return _sign(key, "csrf:" + seed)


def csrf_valid(key: str, seed: str | None, token: str | None) -> bool:
    if not seed or not token:
        return False
    return hmac.compare_digest(csrf_token(key, seed), token)
