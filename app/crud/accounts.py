"""User accounts and their API tokens."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import ApiToken, User
from .base import add_unique


def create_user(session: Session, *, name: str, password_hash: str, role: str = "viewer") -> User:
    return add_unique(session, User(name=name, password_hash=password_hash, role=role),
                      f"a user named {name!r} already exists")


def find_user(session: Session, *, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def add_api_token(session: Session, *, user_id: int, name: str, token_hash: str) -> ApiToken:
    token = ApiToken(user_id=user_id, name=name, token_hash=token_hash)
    session.add(token)
    session.commit()
    return token


def user_for_token(session: Session, *, token_hash: str) -> User | None:
    return session.scalar(select(User).join(ApiToken).where(ApiToken.token_hash == token_hash))
