"""Passwords, API tokens, session cookies, CSRF tokens and the login throttle; stdlib hmac plus argon2."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

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


def new_session(key: str) -> tuple[str, str]:
    """A fresh login: (the cookie value, the hash the store keeps in models.UserSession).

    The cookie is a random token plus its signature: the row makes the login revocable server-side, the
    signature turns away forged cookies without a query and ends every login when SECRET_KEY changes.
    """
    token = secrets.token_urlsafe(32)
    return f"{token}.{_sign(key, 'session:' + token)}", hash_api_token(token)


def session_token_hash(key: str, cookie: str | None) -> str | None:
    """The stored hash a validly signed session cookie names, else None (the row decides if it still counts)."""
    token, _, signature = (cookie or "").rpartition(".")
    if not token or not hmac.compare_digest(signature, _sign(key, "session:" + token)):
        return None
    return hash_api_token(token)


@dataclass(frozen=True)
class Throttle:
    """How failed logins under one kind of key slow further tries.

    The first `free` failures cost nothing (typos); each one after refuses logins under the key for a
    window that doubles from a second up to `max_wait_s`, so a guesser gets a few tries a minute while the
    real user waits at most `max_wait_s`. A success clears the account's count; any count is forgotten
    `forget_after_s` after its last failure.
    """

    scope: str
    free: int
    max_wait_s: int
    forget_after_s: int = 15 * 60

    def key(self, value: str) -> str:
        return f"{self.scope}:{value}"

    def wait_after(self, failures: int) -> int:
        """Seconds logins are refused after the `failures`-th failure in a row."""
        return 0 if failures < self.free else min(2 ** (failures - self.free), self.max_wait_s)


ACCOUNT_THROTTLE = Throttle("account", free=5, max_wait_s=60)
"""Per login name, existing or not (so the answer never tells which names exist)."""
CLIENT_THROTTLE = Throttle("client", free=20, max_wait_s=60)
"""Per client address: catches one source trying many names; looser, as several people may share a NAT."""


def new_csrf_seed() -> str:
    return secrets.token_urlsafe(16)


def csrf_token(key: str, seed: str) -> str:
    """The token forms carry: bound to the browser's seed cookie, which a cross-site page cannot read."""
    return _sign(key, "csrf:" + seed)


def csrf_valid(key: str, seed: str | None, token: str | None) -> bool:
    if not seed or not token:
        return False
    return hmac.compare_digest(csrf_token(key, seed), token)
