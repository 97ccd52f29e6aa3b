"""Retry policy (``_retry``), unit-tested with injected rand/now, then through the client."""

from __future__ import annotations

import email.utils
import random

import pytest

from tinker_sync import (
    APIConnectionError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    RateLimitError,
)
from tinker_sync._retry import MAX_RETRY_DELAY, RetryBudget, retry_delay, should_retry_status
from tinker_sync._transport import Headers
from tinker_sync.testing import Fault

NOW = 1_700_000_000.0


def fixed(value: float):
    return lambda: value


# -- should_retry_status -------------------------------------------------------------------------

STATUS_CASES = [
    (400, {}, False),
    (401, {}, False),
    (403, {}, False),
    (404, {}, False),
    (422, {}, False),
    (408, {}, True),
    (409, {}, True),
    (429, {}, True),
    (500, {}, True),
    (502, {}, True),
    (503, {}, True),
    (599, {}, True),
    (400, {"x-should-retry": "true"}, True),
    (503, {"x-should-retry": "false"}, False),
    (429, {"X-Should-Retry": "false"}, False),
    (404, {"x-should-retry": "maybe"}, False),
    (500, {"x-should-retry": "maybe"}, True),
]


@pytest.mark.parametrize("status,headers,expected", STATUS_CASES)
def test_should_retry_status(status, headers, expected):
    assert should_retry_status(status, Headers(headers)) is expected


# -- retry_delay ---------------------------------------------------------------------------------

BACKOFF = [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (6, 10.0), (50, 10.0), (10_000, 10.0)]


@pytest.mark.parametrize("n,expected", BACKOFF)
def test_backoff_without_jitter(n, expected):
    assert retry_delay(n, rand=fixed(0.0)) == expected


@pytest.mark.parametrize("n,expected", BACKOFF)
def test_jitter_only_shortens_by_up_to_a_quarter(n, expected):
    assert retry_delay(n, rand=fixed(0.999999)) == pytest.approx(expected * 0.75, rel=1e-5)
    assert retry_delay(n, rand=fixed(0.5)) == pytest.approx(expected * 0.875)
    for r in (0.0, 0.1, 0.5, 0.9, 0.99):
        assert expected * 0.75 <= retry_delay(n, rand=fixed(r)) <= expected


def test_default_rand_in_bounds():
    for n in range(8):
        assert 0 < retry_delay(n) <= min(0.5 * 2**n, MAX_RETRY_DELAY)


HTTP_DATE_IN_30 = email.utils.formatdate(NOW + 30, usegmt=True)
HTTP_DATE_PAST = email.utils.formatdate(NOW - 30, usegmt=True)
HTTP_DATE_FAR = email.utils.formatdate(NOW + 3600, usegmt=True)

HEADER_CASES = [
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),  # ms wins
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"Retry-After": "60"}, 60.0),  # the window includes 60
    ({"retry-after": HTTP_DATE_IN_30}, 30.0),
    # out of (0, 60]: the backoff (0.5 before the first retry, no jitter)
    ({"retry-after": "0"}, 0.5),
    ({"retry-after": "-3"}, 0.5),
    ({"retry-after": "61"}, 0.5),
    ({"retry-after-ms": "60001"}, 0.5),
    ({"retry-after-ms": "0"}, 0.5),
    ({"retry-after": HTTP_DATE_PAST}, 0.5),
    ({"retry-after": HTTP_DATE_FAR}, 0.5),
    ({"retry-after": "soon"}, 0.5),
    ({"retry-after-ms": "abc", "retry-after": "3"}, 3.0),
    ({}, 0.5),
]


@pytest.mark.parametrize("headers,expected", HEADER_CASES)
def test_retry_after_headers(headers, expected):
    assert retry_delay(0, Headers(headers), rand=fixed(0.0), now=fixed(NOW)) == pytest.approx(expected)


def test_retry_after_is_not_jittered():
    assert retry_delay(3, Headers({"retry-after": "2"}), rand=fixed(0.9)) == 2.0


# -- through the client --------------------------------------------------------------------------


def test_503_then_200_is_retried_with_recorded_waits(client, tinker_server, waits):
    tinker_server.script("/test/echo", Fault(status=503), Fault(status=503, retry_after=2), Fault(status=503))
    assert client.get("/test/echo")["method"] == "GET"
    assert len(tinker_server.requests) == 4
    assert [r.headers["x-stainless-retry-count"] for r in tinker_server.requests] == ["0", "1", "2", "3"]
    assert len(waits) == 3
    assert 0.375 <= waits[0] <= 0.5
    assert waits[1] == 2.0  # Retry-After honoured
    assert 1.5 <= waits[2] <= 2.0


def test_retry_after_ms_through_client(client, tinker_server, waits):
    with pytest.raises(RateLimitError):
        client.get("/test/status/429?retry_after_ms=1234", max_retries=2)
    assert waits == [1.234, 1.234]


def test_max_retries_per_client_per_call_and_with_options(tinker_server):
    with Client(api_key="tml-k", base_url=tinker_server.url, max_retries=2, sleep=lambda s: None) as c:
        with pytest.raises(InternalServerError):
            c.get("/test/status/500")
        assert len(tinker_server.requests) == 3
        tinker_server.clear()
        with pytest.raises(InternalServerError):
            c.get("/test/status/500", max_retries=5)
        assert len(tinker_server.requests) == 6
        tinker_server.clear()
        other = c.with_options(max_retries=0)
        with pytest.raises(InternalServerError):
            other.get("/test/status/500")
        assert len(tinker_server.requests) == 1
        tinker_server.clear()
        with pytest.raises(InternalServerError):
            list(other.stream_get("/test/status/500", max_retries=1))
        assert len(tinker_server.requests) == 2
        tinker_server.clear()
        with pytest.raises(InternalServerError):
            with c.stream("GET", "/test/status/500", max_retries=3):
                pass
        assert len(tinker_server.requests) == 4


def test_default_max_retries_is_ten(client, tinker_server, waits):
    with pytest.raises(ConflictError):
        client.post("/test/status/409", json={})
    assert len(tinker_server.requests) == 11
    assert len(waits) == 10


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_not_retried(client, tinker_server, waits, status):
    with pytest.raises(Exception) as info:
        client.get(f"/test/status/{status}")
    assert info.value.status_code == status
    assert len(tinker_server.requests) == 1
    assert waits == []


def test_should_retry_header_overrides(client, tinker_server, waits):
    with pytest.raises(BadRequestError):
        client.get("/test/status/400?should_retry=true", max_retries=2)
    assert len(tinker_server.requests) == 3
    tinker_server.clear()
    with pytest.raises(InternalServerError):
        client.get("/test/status/503?should_retry=false")
    assert len(tinker_server.requests) == 1


def test_connection_errors_retried(client, tinker_server, waits):
    # a reset before any body byte (plain call: the body is read as part of the attempt)
    tinker_server.script("/test/echo", Fault(reset_after=0), Fault(reset_after=5))
    assert client.get("/test/echo")["method"] == "GET"
    assert len(tinker_server.requests) == 3
    assert len(waits) == 2


def test_connection_refused_retried_then_raises():
    waits: list[float] = []
    with Client(api_key="tml-k", base_url="http://127.0.0.1:1", max_retries=3, sleep=waits.append) as c:
        with pytest.raises(APIConnectionError):
            c.get("/x")
        assert len(waits) == 3


def test_event_stream_retried_before_first_event(client, tinker_server, waits):
    tinker_server.script("/test/sse", Fault(status=503), Fault(status=429, retry_after=1))
    assert len(list(client.stream_get("/test/sse?count=3"))) == 3
    assert len(tinker_server.requests) == 3
    assert waits[1] == 1.0


def test_pool_of_one_survives_rate_limit_storm(tinker_server):
    with Client(
        api_key="tml-test-key",
        base_url=tinker_server.url,
        pool_maxsize=1,
        max_retries=2,
        sleep=lambda s: None,
    ) as c:
        for _ in range(50):
            with pytest.raises(RateLimitError) as info:
                list(c.stream_get("/test/status/429"))
            assert info.value.body == {"error": {"message": "status 429"}}
        assert len(tinker_server.requests) == 150
        # every error body was read, so the one connection was reused throughout
        assert tinker_server.connections == 1
        assert c._transport.pool_stats(tinker_server.url)["idle"] == 1
        assert len(list(c.stream_get("/test/sse?count=3"))) == 3
        assert c.get("/api/v1/healthz") == {"status": "ok"}
        assert tinker_server.connections == 1


# -- RetryBudget ---------------------------------------------------------------------------------


def budget(max_retries: int = 3, **kw) -> RetryBudget:
    return RetryBudget(max_retries, rand=fixed(0.0), **kw)


def test_budget_gives_up_after_max_retries_without_progress():
    b = budget(3)
    assert [b.retry(), b.retry(), b.retry(), b.retry()] == [0.5, 1.0, 2.0, None]
    assert (b.retries, b.failures) == (3, 3)


def test_budget_zero_retries_never_retries():
    assert budget(0).retry() is None


@pytest.mark.parametrize("marks", [[10, 20, 30, 40, 50], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
def test_progress_renews_the_budget_and_the_retry_goes_at_once(marks):
    b = budget(1)
    for mark in marks:
        assert b.retry(progress=mark) == 0.0  # after progress: at once, and the count starts again
    assert b.retry(progress=marks[-1]) is None  # no progress since: 1 retry was the budget
    assert b.retries == len(marks)


def test_failures_without_progress_back_off_from_the_bottom_again():
    b = budget(5)
    assert b.retry(progress=0) == 0.5  # no progress yet: the usual backoff
    assert b.retry(progress=0) == 1.0
    assert b.retry(progress=100) == 0.0  # progress: renewed, at once
    assert b.retry(progress=100) == 0.5  # then the backoff starts from the bottom
    assert b.retry(progress=100) == 1.0


def test_retry_after_is_honoured_even_after_progress():
    b = budget(3)
    assert b.retry(progress=10, headers=Headers({"retry-after": "3"})) == 3.0


def test_min_wait_is_a_floor():
    b = budget(3)
    assert b.retry(progress=10, min_wait=1.0) == 1.0  # an SSE stream's reconnection time
    assert b.retry(min_wait=0.1) == 0.5


@pytest.mark.parametrize("cause", ["tls", "url", "redirect"])
def test_causes_no_retry_can_mend_are_never_retried(cause):
    b = budget(10)
    assert b.retry(cause=cause) is None
    assert b.retry(cause=cause, progress=1000) is None
    assert b.retries == 0


def test_dns_failures_are_retried_only_briefly():
    b = budget(10)
    assert [b.retry(cause="dns") is not None for _ in range(4)] == [True, True, False, False]
    assert b.retry(cause="connect") is not None  # other causes keep their budget


def test_no_retry_past_the_deadline():
    now = [100.0]
    b = RetryBudget(10, deadline=101.0, rand=fixed(0.0), now=lambda: now[0])
    assert b.retry() == 0.5  # ends at 100.5, before the deadline
    assert b.remaining() == 1.0
    now[0] = 100.6
    assert b.retry() is None  # a 1 s wait would end past it
    now[0] = 101.0
    assert b.remaining() == 0.0
    assert b.retry() is None


def test_sent_counts_attempts_and_reports_the_retry_count():
    b = budget(3)
    assert b.sent() == 0 and b.attempts == 1
    b.retry()
    assert b.sent() == 1 and b.attempts == 2


@pytest.mark.parametrize("seed", range(20))
def test_worst_case_sends_are_bounded_as_documented(seed):
    """Sends <= (max_retries + 1) * (1 + renewals), whatever the mix of failures and progress."""
    rng = random.Random(seed)
    max_retries = rng.randrange(0, 6)
    b = budget(max_retries)
    position = renewals = 0
    b.sent()
    while True:
        if rng.random() < 0.3:
            position += rng.randrange(1, 100)  # the transfer advanced before it broke
            renewals += 1
        if b.retry(progress=position) is None:
            break
        b.sent()
        if renewals > 50:
            break
    assert b.attempts <= (max_retries + 1) * (1 + renewals)
