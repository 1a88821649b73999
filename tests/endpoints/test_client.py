"""The chat client against a real loopback HTTP server: retries, backoff, timeouts, bounded concurrency."""

from __future__ import annotations

import threading
import time

import pytest

from factory.endpoints.client import ChatClient, EndpointError, bounded_map
from factory.endpoints.server import BackendError, ChatServer, Completion

pytestmark = pytest.mark.timeout(30)
MESSAGES = [{"role": "user", "content": "こんにちは"}]


class Scripted:
    """Answers each request with the next scripted step: an HTTP status to fail with, 'slow', or 'ok'."""

    def __init__(self, steps: list[int | str], slow_s: float = 1.0):
        self.steps, self.slow_s, self.calls = list(steps), slow_s, 0

    def complete(self, messages, max_tokens, temperature, seed) -> Completion:
        step = self.steps[self.calls] if self.calls < len(self.steps) else "ok"
        self.calls += 1
        if step == "slow":
            time.sleep(self.slow_s)
        elif step != "ok":
            raise BackendError(step, f"injected {step}")
        return Completion(f"答え{self.calls}: {messages[-1]['content']}", 3, 2, "stop")


def client(url: str, **kw) -> tuple[ChatClient, list[float]]:
    slept: list[float] = []
    kw = {"max_retries": 4, "backoff": 0.5, "backoff_max": 3.0, "timeout": 5.0, **kw}
    return ChatClient(url, sleep=slept.append, **kw), slept


def test_retries_429_and_5xx_with_exponential_backoff():
    backend = Scripted([503, 429, 500, 502])
    with ChatServer(backend).running() as url:
        c, slept = client(url)
        text = c.complete("m", MESSAGES, 0.7, 8)
    assert text == "答え5: こんにちは"
    assert backend.calls == 5
    # Jittered doubling: attempt k waits within [0.5, 1] x min(0.5 * 2**k, 3.0).
    for k, delay in enumerate(slept):
        cap = min(0.5 * 2 ** k, 3.0)
        assert cap / 2 <= delay <= cap


def test_timeout_is_retried():
    backend = Scripted(["slow"], slow_s=1.0)
    with ChatServer(backend).running() as url:
        c, slept = client(url, timeout=0.3)
        assert c.complete("m", MESSAGES, 0.0, 8).startswith("答え2")
    assert len(slept) == 1


def test_gives_up_after_max_retries_with_one_line():
    backend = Scripted([503] * 10)
    with ChatServer(backend).running() as url:
        c, slept = client(url, max_retries=2)
        with pytest.raises(EndpointError) as e:
            c.complete("m", MESSAGES, 0.0, 8)
    assert backend.calls == 3 and len(slept) == 2
    assert "failed after 3 attempts" in str(e.value) and "HTTP 503" in str(e.value)
    assert len(e.value.lines()) == 1


def test_client_errors_are_not_retried():
    backend = Scripted([400])
    with ChatServer(backend).running() as url:
        c, slept = client(url)
        with pytest.raises(EndpointError, match="HTTP 400 .not retried"):
            c.complete("m", MESSAGES, 0.0, 8)
    assert backend.calls == 1 and slept == []


def test_connection_refused_is_retried_then_reported():
    server = ChatServer(Scripted([]))
    url = server.base_url
    server.server_close()  # nothing listens on this port any more
    c, slept = client(url, max_retries=1)
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        c.complete("m", MESSAGES, 0.0, 8)
    assert len(slept) == 1


def test_bounded_map_caps_in_flight_calls_and_keeps_results():
    lock, live, peak = threading.Lock(), [0], [0]

    def work(i: int) -> int:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        return i * i

    got = dict(bounded_map(work, range(40), concurrency=3))
    assert got == {i: i * i for i in range(40)}
    assert peak[0] == 3


def test_bounded_map_finishes_in_flight_work_then_raises():
    def work(i: int) -> int:
        if i == 2:
            raise EndpointError("down")
        time.sleep(0.2 if i == 1 else 0)
        return i

    got = []
    with pytest.raises(EndpointError, match="down"):
        for item, _ in bounded_map(work, range(100), concurrency=2):
            got.append(item)
    # 1 was still in flight when 2 failed: it is handed back; nothing after 2 was started.
    assert got == [0, 1]


class NullContent:
    """An endpoint whose first `nulls` answers carry `"content": null` (vLLM does when a reasoning parser took
    every token)."""

    def __init__(self, nulls: int):
        self.nulls, self.calls = nulls, 0

    def complete(self, messages, max_tokens, temperature, seed) -> Completion:
        self.calls += 1
        return Completion(None if self.calls <= self.nulls else "答え", 3, 2, "length")


def test_a_null_content_is_a_failed_attempt_retried_then_one_line():
    with ChatServer(NullContent(nulls=1)).running() as url:
        c, slept = client(url)
        assert c.complete("m", MESSAGES, 0.0, 8) == "答え" and len(slept) == 1
    with ChatServer(NullContent(nulls=99)).running() as url:
        c, _ = client(url, max_retries=2)
        with pytest.raises(EndpointError, match=r"failed after 3 attempts; last: response content is null, "
                                                r"expected a string"):
            c.complete("m", MESSAGES, 0.0, 8)
