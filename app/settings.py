"""Application settings from the environment (prefix-free: DATABASE_URL, SECRET_KEY, ...) or explicit arguments."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the store lives and how the web app runs; build one with `Settings()` where needed."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = "sqlite:///saescope.db"
    """SQLAlchemy URL: a SQLite file by default, or postgresql://user@host/db."""
    read_open: bool = True
    """Whether anonymous visitors may read pages and the API; writing always needs a labeller."""
    secret_key: str = ""
    """Signs session cookies and CSRF tokens. Empty: a random key per process (sessions end on restart;
    `saescope serve` generates one shared key for all its workers)."""
    session_max_age: int = 14 * 24 * 3600
    """Seconds a login lasts."""
    cookie_secure: bool = False
    """Send cookies over HTTPS only; turn on behind TLS."""
    inference_device: str = "cpu"
    """Torch device for the "test it" box, text search and steering."""
    preload_models: bool = False
    """Load the model of every SAE in the store on a background thread when the server starts, so the first
    "test it", text search or steering run does not wait for it (`saescope serve` turns it on)."""
    steer_max_prompt_tokens: int = 512
    """Longest steering prompt accepted, counted after the chat template."""
    steer_max_new_tokens: int = 256
    """Hard cap on the tokens one steering request may generate per row."""
    steer_retry_after: int = 5
    """Seconds a client told 429 (a steering generation is running) should wait before trying again."""
    judge_url: str = ""
    """An OpenAI-compatible API (e.g. http://127.0.0.1:8080/v1) that rates each steering row's concept and
    fluency 0-2 as AxBench does; empty: no judge."""
    judge_model: str = ""
    """The model name the judge endpoint expects."""
    judge_api_key: str = ""
    """Bearer token for the judge endpoint, if it wants one."""
    judge_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """Seconds one judge request may take. A small judge on a single-slot server (llama.cpp's) answers one
    request at a time, so under load the later rows of a sweep wait behind the earlier ones."""
    explainer_local_model: str = "smollm2"
    """The model an explain job started from the SAE page loads in the server (built-in name, directory, GGUF or
    hub id; the built-in SmolLM2 works offline); empty: that choice is not offered."""
    explainer_url: str = ""
    """An OpenAI-compatible API (e.g. http://127.0.0.1:8080/v1) that the SAE page may send explain jobs to;
    empty: none. The browser only picks this endpoint, never names a URL (see app/services/explain.py)."""
    explainer_endpoint_model: str = ""
    """The model name the explainer endpoint serves."""
    explainer_api_key_env: str = "SAESCOPE_EXPLAINER_API_KEY"
    """Environment variable holding the explainer endpoint's bearer key, as for `saescope explain`."""

    @classmethod
    def on_store(cls, database_url: str | None, default: str | None = None) -> Settings:
        """Settings whose store is `database_url` if given, else DATABASE_URL, else `default` or the SQLite file.

        The one precedence every command applies to its --db; `default` lets a command keep its own store
        (the demo's SQLite file in its output directory) below the environment's.
        """
        if database_url:
            return cls(database_url=database_url)
        settings = cls()
        if default and "database_url" not in settings.model_fields_set:
            return settings.model_copy(update={"database_url": default})
        return settings
