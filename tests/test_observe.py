"""Observability: event hooks, header dumps, URL masking, TINKER_LOG."""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
from collections import defaultdict

import pytest

import tinker_sync
from tinker_sync import (
    APIConnectionError,
    Client,
    ErrorInfo,
    InternalServerError,
    NotFoundError,
    RequestInfo,
    ResponseInfo,
    RetryInfo,
    StreamEndInfo,
)
from tinker_sync._observe import HOOK_NAMES, mask_headers, mask_url
from tinker_sync.testing import Fault

# Tests that reach the SSE decoder run once per twin (py, cython): they ask for ``sse_implementation``.

API_KEY = "tml-test-key"


def no_sleep(seconds: float) -> None:
    pass


ROOT = pathlib.Path(tinker_sync.__file__).parent.parent


class Recorder:
    def __init__(self) -> None:
        self.records: dict[str, list[object]] = defaultdict(list)

    def hooks(self) -> dict[str, list]:
        return {name: [lambda record, name=name: self.records[name].append(record)] for name in HOOK_NAMES}

    def counts(self) -> dict[str, int]:
        return {name: len(self.records[name]) for name in HOOK_NAMES if self.records[name]}


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def hooked(tinker_server, recorder):
    sleep = recorder.records["sleep"].append
    with Client(api_key=API_KEY, base_url=tinker_server.url, event_hooks=recorder.hooks(), sleep=sleep) as c:
        yield c


# -- hooks ---------------------------------------------------------------------------------------


def test_plain_call_hooks(hooked, recorder, tinker_server):
    assert hooked.get("/api/v1/healthz") == {"status": "ok"}
    assert recorder.counts() == {"request": 1, "response": 1, "stream_end": 1}
    request = recorder.records["request"][0]
    assert request == RequestInfo("GET", tinker_server.url + "/api/v1/healthz")
    response = recorder.records["response"][0]
    assert isinstance(response, ResponseInfo)
    assert (response.status_code, response.attempts) == (200, 1)
    assert response.elapsed >= 0
    end = recorder.records["stream_end"][0]
    assert isinstance(end, StreamEndInfo)
    assert (end.status_code, end.attempts, end.bytes, end.events, end.error) == (200, 1, 15, 0, None)


def test_plain_call_retry_hooks(hooked, recorder, tinker_server):
    tinker_server.script("/test/echo", Fault(status=503), Fault(status=429, retry_after=3))
    hooked.post("/test/echo", json={"a": 1})
    assert recorder.counts() == {"request": 1, "response": 1, "stream_end": 1, "retry": 2}
    assert len(recorder.records["sleep"]) == 2
    retries = recorder.records["retry"]
    assert all(isinstance(r, RetryInfo) for r in retries)
    assert [r.attempt for r in retries] == [1, 2]
    assert [r.reason for r in retries] == ["HTTP 503", "HTTP 429"]
    assert [r.wait for r in retries] == recorder.records["sleep"]
    assert retries[1].wait == 3.0
    assert recorder.records["response"][0].attempts == 3
    assert recorder.records["stream_end"][0].attempts == 3


def test_connection_error_retry_reason(hooked, recorder, tinker_server):
    tinker_server.script("/test/echo", Fault(reset_after=0))
    hooked.get("/test/echo")
    [retry] = recorder.records["retry"]
    assert retry.reason  # the connection error's text
    assert recorder.counts()["response"] == 1


def test_final_failure_fires_error_once(hooked, recorder):
    with pytest.raises(InternalServerError):
        hooked.get("/test/status/500", max_retries=2)
    counts = recorder.counts()
    assert counts["request"] == 1 and counts["retry"] == 2 and counts["error"] == 1
    assert "response" not in counts
    error = recorder.records["error"][0]
    assert isinstance(error, ErrorInfo)
    assert error.attempts == 3
    assert isinstance(error.error, InternalServerError)


def test_non_retryable_failure_fires_error(hooked, recorder):
    with pytest.raises(NotFoundError):
        hooked.get("/test/status/404")
    assert recorder.counts() == {"request": 1, "error": 1, "stream_end": 1}
    assert "NotFoundError" in recorder.records["stream_end"][0].error


def test_connection_failure_fires_error(recorder):
    with Client(
        api_key=API_KEY,
        base_url="http://127.0.0.1:1",
        max_retries=1,
        event_hooks=recorder.hooks(),
        sleep=no_sleep,
    ) as c:
        with pytest.raises(APIConnectionError):
            c.get("/x")
    assert recorder.counts() == {"request": 1, "retry": 1, "error": 1, "stream_end": 1}
    assert recorder.records["error"][0].attempts == 2
    assert recorder.records["stream_end"][0].error.startswith("APIConnectionError(")  # refused is no timeout


def test_event_stream_hooks(hooked, recorder, tinker_server, sse_implementation):
    tinker_server.script("/test/sse", Fault(status=503))
    events = list(hooked.stream_get("/test/sse?count=7&size=100"))
    assert len(events) == 7
    assert recorder.counts() == {"request": 1, "response": 1, "retry": 1, "stream_end": 1}
    assert len(recorder.records["sleep"]) == 1
    end = recorder.records["stream_end"][0]
    assert (end.status_code, end.attempts, end.events, end.error) == (200, 2, 7, None)
    assert end.bytes == 7 * len(b"data: " + b"x" * 100 + b"\n\n")  # size= is the data length


def test_event_stream_break_fires_stream_end_once(hooked, recorder, sse_implementation):
    stream = hooked.stream_get("/test/sse?count=1000&delay=0.001")
    for _ in stream:
        break
    stream.close()
    stream.close()
    assert recorder.counts() == {"request": 1, "response": 1, "stream_end": 1}
    end = recorder.records["stream_end"][0]
    assert end.events == 1 and end.error is None


def test_event_stream_broken_reports_error_in_stream_end(hooked, recorder, sse_implementation):
    with pytest.raises(APIConnectionError):
        list(hooked.stream_get("/test/sse?count=10&cut_after=2"))
    [end] = recorder.records["stream_end"]
    assert end.events == 2
    assert "APIConnectionError" in end.error


def test_event_stream_entered_but_not_iterated_fires_stream_end(hooked, recorder, sse_implementation):
    with hooked.stream_get("/test/sse?count=2") as stream:
        assert stream.response.status_code == 200
    stream.close()
    assert recorder.counts() == {"request": 1, "response": 1, "stream_end": 1}
    end = recorder.records["stream_end"][0]
    assert (end.status_code, end.events, end.error) == (200, 0, None)


@pytest.mark.parametrize("enter", [True, False])
def test_event_stream_open_failure_fires_stream_end_alike(hooked, recorder, enter, sse_implementation):
    stream = hooked.stream_get("/test/sse?count=2&content_type=text/plain")
    with pytest.raises(tinker_sync.APIResponseValidationError):
        if enter:
            with stream:
                pass
        else:
            next(stream)
    counts = recorder.counts()
    assert counts == {"request": 1, "response": 1, "stream_end": 1}
    assert "APIResponseValidationError" in recorder.records["stream_end"][0].error


def test_raw_stream_hooks_count_bytes(hooked, recorder):
    with hooked.stream("GET", "/test/bytes?size=300000") as response:
        for _ in response.iter_bytes():
            pass
    assert recorder.counts() == {"request": 1, "response": 1, "stream_end": 1}
    end = recorder.records["stream_end"][0]
    assert (end.bytes, end.events, end.error) == (300_000, 0, None)


def test_raising_hook_is_logged_and_ignored(tinker_server, caplog, sse_implementation):
    def bad(record):
        raise RuntimeError("hook bug")

    hooks = {name: [bad] for name in HOOK_NAMES}
    with Client(api_key=API_KEY, base_url=tinker_server.url, event_hooks=hooks) as c:
        with caplog.at_level(logging.ERROR, logger="tinker_sync"):
            assert c.get("/api/v1/healthz") == {"status": "ok"}
            assert len(list(c.stream_get("/test/sse?count=2"))) == 2
    messages = [r for r in caplog.records if r.name == "tinker_sync"]
    assert len(messages) == 6  # request, response, stream_end for each call
    assert all("hook bug" in (r.exc_text or "") or r.exc_info for r in messages)


def test_unknown_hook_name_rejected(tinker_server):
    with pytest.raises(ValueError, match="Unknown event hook"):
        Client(api_key=API_KEY, base_url=tinker_server.url, event_hooks={"on_request": [print]})


# -- dumps ---------------------------------------------------------------------------------------


def _dump_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "tinker_sync")


def test_dump_headers_masks_secrets(tinker_server, caplog, monkeypatch, sse_implementation):
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-id")
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-very-secret")
    with Client(api_key=API_KEY, base_url=tinker_server.url, dump_headers=True) as c:
        with caplog.at_level(logging.INFO, logger="tinker_sync"):
            c.post(
                "/test/echo?sig=signature-value&x=1", json={"a": 1}, headers={"Authorization": "Bearer tok"}
            )
            list(c.stream_get("/test/sse?count=1"))
    text = _dump_text(caplog)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "tinker_sync")
    assert "> POST " in text and "(attempt 1)" in text
    assert "< 200 " in text
    assert "> GET " in text
    assert API_KEY not in text
    assert "cf-very-secret" not in text
    assert "Bearer tok" not in text
    assert "signature-value" not in text
    assert "X-API-Key: ***" in text
    assert "cf-id" in text  # not a secret
    assert "x=1" in text


def test_dump_headers_from_env(tinker_server, caplog, monkeypatch):
    monkeypatch.setenv("TINKER_SYNC_DUMP_HEADERS", "1")
    with Client(api_key=API_KEY, base_url=tinker_server.url) as c:
        with caplog.at_level(logging.INFO, logger="tinker_sync"):
            c.get("/api/v1/healthz")
    text = _dump_text(caplog)
    assert "> GET " in text and "< 200" in text and API_KEY not in text


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_dump_headers_off(tinker_server, caplog, monkeypatch, value):
    monkeypatch.setenv("TINKER_SYNC_DUMP_HEADERS", value)
    with Client(api_key=API_KEY, base_url=tinker_server.url) as c:
        with caplog.at_level(logging.DEBUG, logger="tinker_sync"):
            c.get("/api/v1/healthz")
    assert _dump_text(caplog) == ""


def test_dump_shows_each_attempt(tinker_server, caplog):
    tinker_server.script("/test/echo", Fault(status=503))
    with Client(api_key=API_KEY, base_url=tinker_server.url, dump_headers=True, sleep=no_sleep) as c:
        with caplog.at_level(logging.INFO, logger="tinker_sync"):
            c.get("/test/echo")
    text = _dump_text(caplog)
    assert "(attempt 1)" in text and "(attempt 2)" in text
    assert "< 503" in text and "< 200" in text


MASK_CASES = [
    ("https://x/y", "https://x/y"),
    ("https://x/y?a=1&b=2", "https://x/y?a=1&b=2"),
    ("https://x/y?sig=abc&a=1", "https://x/y?sig=***&a=1"),
    (
        "https://s3/o?X-Amz-Signature=abc&X-Amz-Credential=c&X-Amz-Date=d",
        "https://s3/o?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=d",
    ),
    (
        "https://g/o?X-Goog-Signature=abc&X-Goog-Expires=60",
        "https://g/o?X-Goog-Signature=***&X-Goog-Expires=60",
    ),
    ("https://x/y?token=t&api_key=k", "https://x/y?token=***&api_key=***"),
    ("https://x/y?expires=1&signature=s#frag", "https://x/y?expires=1&signature=***#frag"),
    # a proxy's (or any URL's) credentials: the password, or a lone user (often a token)
    ("http://user:secret@proxy:3128", "http://user:***@proxy:3128"),
    ("http://user:p%40ss%3Aw@proxy:3128/", "http://user:***@proxy:3128/"),
    ("http://ghp_token@proxy:3128", "http://***@proxy:3128"),
    ("https://u:pw@h/o?sig=abc", "https://u:***@h/o?sig=***"),
    ("http://u:pw@[::1/x?sig=s", "http://u:***@[::1/x?***"),  # does not parse: still masked
]


@pytest.mark.parametrize("url,expected", MASK_CASES)
def test_mask_url(url, expected):
    assert mask_url(url) == expected


def test_mask_headers():
    masked = mask_headers(
        {
            "X-API-Key": "tml-1",
            "authorization": "b",
            "Cookie": "c",
            "Accept": "a",
            "CF-Access-Client-Secret": "s",
            "CF-Access-Client-Id": "i",
        }
    )
    assert masked == {
        "X-API-Key": "***",
        "authorization": "***",
        "Cookie": "***",
        "Accept": "a",
        "CF-Access-Client-Secret": "***",
        "CF-Access-Client-Id": "i",
    }


# -- TINKER_LOG ----------------------------------------------------------------------------------

LOG_PROBE = """
import logging, sys
sys.path.insert(0, {root!r})
import tinker_sync
c = tinker_sync.Client(api_key="tml-test-key", base_url={url!r}, dump_headers=True)
c.get("/api/v1/healthz")
logging.getLogger("tinker_sync").debug("debug-probe")
c.close()
"""


@pytest.mark.parametrize(
    "level,expect_info,expect_debug", [("debug", True, True), ("info", True, False), ("", False, False)]
)
def test_tinker_log_env(tinker_server, level, expect_info, expect_debug):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINKER")}
    env["TINKER_LOG"] = level
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOG_PROBE.format(root=str(ROOT), url=tinker_server.url)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert ("> GET" in result.stderr) is expect_info
    assert ("debug-probe" in result.stderr) is expect_debug
    assert API_KEY not in result.stderr
