"""User accounts, their login sessions and API tokens, and the failed-login counters."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import ApiToken, LoginFailures, User, UserSession, as_utc, now
from ..security import Throttle
from .base import NotFound, add_unique

LAST_USED_STEP = timedelta(minutes=1)
"""A token's last_used_at is rewritten only when older than this: a script's burst costs one write, not one each."""


class TokenRefused(LookupError):
    """An API token that is unknown, revoked or expired; the message says which (the API answers 401)."""


def create_user(session: Session, *, name: str, password_hash: str, role: str = "viewer") -> User:
    return add_unique(session, User(name=name, password_hash=password_hash, role=role),
                      f"a user named {name!r} already exists")


def find_user(session: Session, *, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def get_user(session: Session, *, name: str) -> User:
    """The user called `name`; NotFound names the command that adds one."""
    user = find_user(session, name=name)
    if user is None:
        raise NotFound(f"no user {name!r}: saescope user add {name} first")
    return user


def set_password(session: Session, *, user: User, password_hash: str) -> None:
    """A new password ends every login of the user: whoever had a copied cookie is out."""
    user.password_hash = password_hash
    _end_all_sessions(session, user)


def set_role(session: Session, *, user: User, role: str) -> None:
    """A new role ends every login of the user, so no browser keeps a page rendered for the old one."""
    user.role = role
    _end_all_sessions(session, user)


def _end_all_sessions(session: Session, user: User) -> None:
    session.execute(delete(UserSession).where(UserSession.user_id == user.id))
    session.commit()


# Login sessions: the cookie carries a random token, the store its hash (security.new_session).


def start_session(session: Session, *, user_id: int, token_hash: str, max_age: int) -> None:
    """Record a login; the user's logins older than `max_age` go, so the table holds only live ones."""
    session.execute(delete(UserSession).where(UserSession.user_id == user_id,
                                              UserSession.created_at < now() - timedelta(seconds=max_age)))
    session.add(UserSession(user_id=user_id, token_hash=token_hash))
    session.commit()


def session_user(session: Session, *, token_hash: str, max_age: int) -> User | None:
    """The user of a live login (one query), or None once it was ended or is older than `max_age` seconds."""
    return session.scalar(select(User).join(UserSession).where(
        UserSession.token_hash == token_hash, UserSession.created_at >= now() - timedelta(seconds=max_age)))


def end_session(session: Session, *, token_hash: str) -> None:
    """Log out one browser: its cookie, wherever copied, stops working; the user's other logins stay."""
    session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))
    session.commit()


# API tokens.


def add_api_token(session: Session, *, user_id: int, name: str, token_hash: str,
                  expires_at: datetime | None = None) -> ApiToken:
    token = ApiToken(user_id=user_id, name=name, token_hash=token_hash, expires_at=expires_at)
    session.add(token)
    session.commit()
    return token


def api_tokens(session: Session, *, user_id: int) -> list[ApiToken]:
    """A user's tokens, oldest first, revoked and expired ones included."""
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))


def revoke_api_token(session: Session, *, token_id: int) -> ApiToken:
    """Mark a token revoked (it stays listed); revoking it again keeps the first time."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no API token with id {token_id}: saescope user tokens NAME lists them")
    if token.revoked_at is None:
        token.revoked_at = now()
        session.commit()
    return token


def user_for_token(session: Session, *, token_hash: str) -> User:
    """The user an active token acts as, noting its use; TokenRefused says why a token does not count."""
    found = session.execute(select(ApiToken, User).join(ApiToken.user).where(ApiToken.token_hash == token_hash)).first()
    if found is None:
        raise TokenRefused("invalid API token")
    token, user = found
    moment = now()
    state = token.state(moment)
    if state != "active":
        raise TokenRefused(f"API token {token.name!r} is {state}")
    if token.last_used_at is None or as_utc(token.last_used_at) < moment - LAST_USED_STEP:
        session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=moment))
        session.commit()
    return user


# Failed logins, counted in the store so that every worker process sees the same counts.


def login_wait(session: Session, *, keys: list[str], moment: datetime) -> int:
    """Seconds until a login under any of `keys` may be tried again; 0 when none is held back."""
    until = session.scalar(select(func.max(LoginFailures.blocked_until)).where(LoginFailures.key.in_(keys)))
    return 0 if until is None else max(0, math.ceil((as_utc(until) - moment).total_seconds()))


def record_login_failure(session: Session, *, key: str, throttle: Throttle, moment: datetime) -> None:
    """Count a failure under `key` and hold its logins back as `throttle` says."""
    try:
        _record_failure(session, key=key, throttle=throttle, moment=moment)
    except IntegrityError:  # another worker inserted the key's first row just now: count on that row
        session.rollback()
        _record_failure(session, key=key, throttle=throttle, moment=moment)


def _record_failure(session: Session, *, key: str, throttle: Throttle, moment: datetime) -> None:
    """Raise the count by one UPDATE and read it back in the same transaction, which holds the row (the
    whole file on SQLite) until commit: two workers failing at once count two, never one."""
    forgotten = moment - timedelta(seconds=throttle.forget_after_s)
    session.execute(delete(LoginFailures).where(LoginFailures.last_failed_at < forgotten))
    failures = session.scalar(update(LoginFailures).where(LoginFailures.key == key)
                              .values(failures=LoginFailures.failures + 1, last_failed_at=moment)
                              .returning(LoginFailures.failures))
    if failures is None:
        failures = 1
        session.add(LoginFailures(key=key, failures=1, last_failed_at=moment, blocked_until=moment))
        session.flush()
    session.execute(update(LoginFailures).where(LoginFailures.key == key).values(
        blocked_until=moment + timedelta(seconds=throttle.wait_after(failures))))
    session.commit()


def clear_login_failures(session: Session, *, key: str) -> None:
    """A successful login forgets the account's failures."""
    session.execute(delete(LoginFailures).where(LoginFailures.key == key))
    session.commit()
