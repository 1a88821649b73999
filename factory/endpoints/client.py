"""A client for OpenAI-compatible `/v1/chat/completions`: retries with backoff, bounded concurrency."""

from __future__ import annotations

import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from factory.errors import FactoryError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(FactoryError):
    """A chat endpoint that kept failing, or refused a request outright."""


class _Retryable(Exception):
    """One failed attempt worth retrying; `delay` is the server's Retry-After, if any."""

    def __init__(self, reason: str, delay: float | None = None):
        super().__init__(reason)
        self.delay = delay


@dataclass
class ChatClient:
    """Posts chat requests; retries connection errors, timeouts, 429 and 5xx with exponential backoff."""

    base_url: str
    api_key: str | None = None
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    sleep: Callable[[float], None] = time.sleep

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def complete(self, model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int,
                 seed: int | None = None, choices: list[str] | None = None) -> str:
        """The assistant text of one completion; EndpointError after `max_retries` failed retries. `choices`
        constrains the answer to one of them (vLLM's `guided_choice`; the loopback server supports it too)."""
        body = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        if choices:
            body["guided_choice"] = choices
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(data)
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise EndpointError(f"POST {self.url}: failed after {attempt + 1} attempts; last: {e}") from None
                delay = self._delay(attempt, e.delay)
                log.warning("POST %s: %s; retry %d/%d in %.2fs", self.url, e, attempt + 1, self.max_retries, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, server_hint: float | None) -> float:
        if server_hint is not None:
            return min(server_hint, self.backoff_max)
        # Full jitter keeps many workers that failed together from retrying together.
        return min(self.backoff * 2 ** attempt, self.backoff_max) * random.uniform(0.5, 1.0)

    def _post(self, data: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            if e.code in RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code} {detail}", _retry_after(e.headers.get("Retry-After"))) from None
            raise EndpointError(f"POST {self.url}: HTTP {e.code} (not retried): {detail}") from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut short
            raise _Retryable(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
        return _content(payload)


def _content(payload: bytes) -> str:
    """The completion's text. A body that is not JSON or has no message, and a message whose content is not a
    string (vLLM answers `"content": null` when a reasoning or tool-call parser took every token), are failed
    attempts: retried, then an EndpointError, never a record."""
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        # A truncated or garbled body is a transport fault as far as the caller is concerned.
        raise _Retryable(f"malformed response: {payload[:120]!r}") from None
    if not isinstance(content, str):
        kind = "null" if content is None else type(content).__name__
        raise _Retryable(f"response content is {kind}, expected a string: {payload[:120]!r}")
    return content


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def bounded_map(fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(item)) as they finish, with at most `concurrency` calls in flight.

    If a call raises, no new calls start; those in flight are finished and yielded, then the first
    error is raised, so the caller can keep every result it was handed.
    """
    pending: dict[Future, T] = {}
    error: BaseException | None = None
    source = iter(items)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="synth") as pool:
        while True:
            while error is None and len(pending) < concurrency:
                item = next(source, _END)
                if item is _END:
                    break
                pending[pool.submit(fn, item)] = item
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                if fut.exception() is not None:
                    error = error or fut.exception()
                else:
                    yield item, fut.result()
    if error is not None:
        raise error


_END = object()
