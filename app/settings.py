"""Application settings from the environment (prefix-free DATABASE_URL) or explicit arguments."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the store lives and how the web app runs; build one with `Settings()` where needed."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = "sqlite:///saescope.db"
    """SQLAlchemy URL: a SQLite file by default, or postgresql://user@host/db."""
