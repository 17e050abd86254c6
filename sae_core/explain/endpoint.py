"""An OpenAI-compatible chat-completions endpoint (llama.cpp's server, Ollama, vLLM, a hosted API).

Requests go out concurrently up to a bound, each with a timeout; a dropped connection, a timeout, a 429 or a
5xx is retried with exponential backoff, and whatever still fails stops the job with a message naming the
endpoint and the cause. The API key, if the endpoint needs one, is read from an environment variable so it
never sits in a command line or a stored job. The steering judge (sae_core.judge) asks through this client too.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from .base import ExplainerError
from .prompts import Messages, detection_messages, fuzzing_messages

T = TypeVar("T")

RETRIED_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to reach a chat-completions endpoint."""

    url: str
    """Base URL, e.g. http://127.0.0.1:8080/v1 (…/chat/completions is appended unless already there)."""
    model: str
    """The model name sent with each request and stored with each explanation."""
    api_key_env: str = "SAESCOPE_EXPLAINER_API_KEY"
    """Environment variable holding the bearer key; unset, or "": no Authorization header."""
    api_key: str = field(default="", repr=False)
    """The bearer key itself, for a caller that already holds it (the web app's settings); it wins over
    api_key_env. Left out of repr, so a logged config never shows it."""
    concurrency: int = 8
    """Requests in flight at once."""
    timeout_s: float = 60.0
    """Per request."""
    retries: int = 3
    """Further tries after a retriable failure."""
    backoff_s: float = 0.5
    """First wait between tries; doubled after each."""

    @property
    def completions_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also where this thread already runs an event loop (a notebook, Playwright's sync API):
    asyncio.run refuses there, so the requests then run on a loop of their own in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One verifying TLS context for the process, shared by every client. httpx builds one per client otherwise,
    loading the CA bundle each time: about 80 ms per generate call (measured), which made each judged steering
    row 160 ms slower than its two requests."""
    return httpx.create_ssl_context()


TOP_LOGPROBS = 20
"""Alternatives asked for the first answer token when a caller wants them (OpenAI's maximum)."""


@dataclass(frozen=True)
class Reply:
    """One answer, with its first token's likeliest alternatives when they were asked for."""

    text: str
    first_top: dict[str, float]
    """Token -> log-probability at the answer's first position; empty when not asked for or not reported
    (not every endpoint reports log-probabilities)."""


class EndpointChatModel:
    """Chat completions over HTTP; Yes/No judgements are read from the answer's text."""

    calibrated = True

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.name = config.model
        key = config.api_key or (os.environ.get(config.api_key_env) if config.api_key_env else None)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    def generate(self, conversations: list[Messages], max_tokens: int | None) -> list[str]:
        """Each conversation's answer; max_tokens None leaves the length to the endpoint (the judge's reasoned
        ratings)."""
        return [reply.text for reply in self.replies(conversations, max_tokens)]

    def replies(self, conversations: list[Messages], max_tokens: int | None, top_logprobs: int = 0) -> list[Reply]:
        """Each conversation's answer, with its first token's top_logprobs likeliest alternatives if > 0."""
        return run_coroutine(self._all(conversations, max_tokens, top_logprobs))

    def judge(self, explanation: str, texts: list[str], marked: bool) -> list[float]:
        """The answer to a Yes/No question per text: 1.0 for Yes, else 0.0 or 0.5 (see yes_of)."""
        ask = fuzzing_messages if marked else detection_messages
        return [yes_of(answer) for answer in self.generate([ask(explanation, t) for t in texts], max_tokens=3)]

    async def _all(self, conversations: list[Messages], max_tokens: int | None, top_logprobs: int) -> list[Reply]:
        limit = asyncio.Semaphore(self.config.concurrency)
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, headers=self._headers, verify=tls_context()) as client:
            async def one(messages: Messages) -> Reply:
                async with limit:
                    return await self._complete(client, messages, max_tokens, top_logprobs)
            return list(await asyncio.gather(*(one(m) for m in conversations)))

    async def _complete(self, client: httpx.AsyncClient, messages: Messages, max_tokens: int | None,
                        top_logprobs: int) -> Reply:
        body: dict[str, Any] = {"model": self.config.model, "messages": messages, "temperature": 0}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if top_logprobs:
            body |= {"logprobs": True, "top_logprobs": top_logprobs}
        url = self.config.completions_url
        wait = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            last = attempt == self.config.retries
            try:
                response = await client.post(url, json=body)
            except httpx.TransportError as err:
                if last:
                    raise ExplainerError(f"endpoint {url} is unreachable after {attempt + 1} tries: "
                                         f"{type(err).__name__} {err}".rstrip()) from err
            else:
                if response.status_code == 200:
                    return _answer(url, response)
                if response.status_code not in RETRIED_STATUS or last:
                    raise ExplainerError(f"endpoint {url} refused the request ({response.status_code}): "
                                         f"{_reason(response)}")
            await asyncio.sleep(wait)
            wait *= 2
        raise AssertionError("unreachable: the last try returns or raises")


def _answer(url: str, response: httpx.Response) -> Reply:
    try:
        choice = response.json()["choices"][0]
        text = str(choice["message"]["content"] or "")
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise ExplainerError(f"endpoint {url} answered without choices[0].message.content: "
                             f"{response.text[:200]!r}") from err
    return Reply(text, _first_top(choice))


def _first_top(choice: Any) -> dict[str, float]:
    """The first token's alternatives from OpenAI's `logprobs.content[0].top_logprobs`; {} when absent or odd."""
    try:
        return {str(t["token"]): float(t["logprob"]) for t in choice["logprobs"]["content"][0]["top_logprobs"]}
    except (KeyError, IndexError, TypeError, ValueError):
        return {}


def _reason(response: httpx.Response) -> str:
    """The error message an endpoint gave, or the start of its body."""
    try:
        data: Any = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:300]
    except ValueError:
        return response.text[:300] or response.reason_phrase


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def yes_of(answer: str) -> float:
    """1.0 for an answer saying Yes first, 0.0 for No, 0.5 for neither (counted as not Yes)."""
    found = _YES_NO.search(answer)
    if found is None:
        return 0.5
    return 1.0 if found.group(1).lower() == "yes" else 0.0
