"""The exception tree: classes, the status table, messages from real responses, pickling."""

from __future__ import annotations

import json
import logging
import pickle
from urllib.parse import quote, unquote, unquote_plus

import msgspec
import pytest
from _sockets import raw_server

import tinker_sync
import tinker_sync._exceptions as exceptions_module
from tinker_sync import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    Client,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestFailedError,
    SSEDecodeError,
    StreamAlreadyConsumed,
    TinkerError,
    UnprocessableEntityError,
)
from tinker_sync._exceptions import status_error_class

STATUS_TABLE = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (402, BillingError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
    (504, InternalServerError),
    (418, APIStatusError),
    (405, APIStatusError),
]


@pytest.mark.parametrize("status,cls", STATUS_TABLE)
def test_status_error_class(status, cls):
    assert status_error_class(status) is cls


def test_tree():
    assert issubclass(APIError, TinkerError)
    assert issubclass(APIStatusError, APIError)
    assert issubclass(APIConnectionError, APIError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIResponseValidationError, APIError)
    assert issubclass(RequestFailedError, TinkerError) and not issubclass(RequestFailedError, APIError)
    assert issubclass(StreamAlreadyConsumed, TinkerError)
    assert issubclass(SSEDecodeError, TinkerError) and issubclass(SSEDecodeError, ValueError)
    for _status, cls in STATUS_TABLE:
        assert issubclass(cls, APIStatusError)


def test_every_exception_documented_and_exported():
    for name in exceptions_module.__all__:
        obj = getattr(exceptions_module, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert obj.__doc__, name
            assert name in exceptions_module.__doc__, f"{name} missing from the tree in the docstring"
            assert getattr(tinker_sync, name) is obj
            assert name in tinker_sync.__all__


@pytest.mark.parametrize(
    "status,cls", [s for s in STATUS_TABLE if s[0] in (400, 401, 404, 409, 422, 429, 500, 418)]
)
def test_real_status_error_message_and_pickle(client, status, cls):
    with pytest.raises(cls) as info:
        client.get(f"/test/status/{status}", max_retries=0)
    error = info.value
    assert error.status_code == status
    assert error.body == {"error": {"message": f"status {status}"}}
    assert str(error) == f'Error code: {status} - {{"error":{{"message":"status {status}"}}}}'
    assert error.message == str(error)
    assert error.response.status_code == status
    assert error.request.method == "GET"
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert str(clone) == str(error)
    assert clone.message == error.message
    assert clone.status_code == status
    assert clone.body == error.body
    assert clone.response is None and clone.request is None  # live objects are dropped


def test_empty_error_body_message(client, tinker_server):
    from tinker_sync.testing import Fault

    tinker_server.script("/test/echo", Fault(status=500))
    with pytest.raises(InternalServerError) as info:
        client.get("/test/echo", max_retries=0)
    assert str(info.value).startswith("Error code: 500 - ")
    assert info.value.body["error"]["message"] == "injected status 500"


PICKLE_CASES = [
    TinkerError("plain"),
    APIError("api", None, body={"a": 1}),
    APIConnectionError("conn"),
    APIConnectionError(),
    APITimeoutError("slow"),
    APITimeoutError(),
    APIResponseValidationError("bad $.x", None, body="b"),
    RequestFailedError("failed", "req-1", "user_error"),
    StreamAlreadyConsumed("twice"),
    SSEDecodeError("SSE line longer than max_size (10 bytes)"),
    NotFoundError("Error code: 404 - {}", None, {"x": 1}),
]


@pytest.mark.parametrize("error", PICKLE_CASES, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(error):
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert clone.args == error.args
    for attr in ("message", "body", "status_code", "request_id", "category"):
        if hasattr(error, attr):
            assert getattr(clone, attr) == getattr(error, attr), attr


def test_connection_error_pickle_from_real_failure(client):
    with pytest.raises(APIConnectionError) as info:
        with client.stream("GET", "/test/bytes?size=100000&reset_after=10", max_retries=0) as response:
            response.read()
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)
    assert isinstance(clone, APIConnectionError)


def test_status_code_default_without_response():
    assert RateLimitError("x", None).status_code == 429
    assert InternalServerError("x", None).status_code == 500


# -- messages stay small and never carry a secret -------------------------------------------------

SECRET_KEY = "tml-SECRET-KEY-0123456789"
SIGNATURE = "SIGNATURE0123456789abcdef"
CF_SECRET = "cf-SECRET-0123456789"
BEARER = "Bearer tok-SECRET-0123456789"
SECRETS = (SECRET_KEY, SIGNATURE, CF_SECRET, BEARER.split()[1])


def _echo(status: int, content_type: bytes = b"application/json"):
    """An echoing server: the request head (with every secret it carried) comes back in the body."""

    def script(conn, request, stop):
        body = b'{"error": {"message": %s}}' % json.dumps(request.decode("latin-1")).encode()
        if content_type == b"text/event-stream":
            body = b"event: error\ndata: " + body + b"\n\n"
        conn.sendall(
            b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (status, content_type, len(body))
            + body
        )

    return script


class Item(msgspec.Struct):
    index: int


# (name, server scripts, what the client does, the exception)
LEAKS = [
    ("400", [_echo(400)], lambda c, url, tmp: c.get(url), BadRequestError),
    (
        "500 after a retry",
        [_echo(500), _echo(500)],
        lambda c, url, tmp: c.get(url, max_retries=1),
        InternalServerError,
    ),
    (
        "a body that fits no type",
        [_echo(200)],
        lambda c, url, tmp: c.get(url, cast_to=Item),
        APIResponseValidationError,
    ),
    (
        "not an event stream",
        [_echo(200)],
        lambda c, url, tmp: next(iter(c.stream_get(url))),
        APIResponseValidationError,
    ),
    (
        "an error event",
        [_echo(200, b"text/event-stream")],
        lambda c, url, tmp: list(c.stream_get(url)),
        APIError,
    ),
    (
        "a download",
        [_echo(403)],
        lambda c, url, tmp: c.download(url, tmp / "f"),
        PermissionDeniedError,
    ),
]


@pytest.mark.parametrize(("name", "scripts", "call", "error"), LEAKS, ids=[leak[0] for leak in LEAKS])
def test_no_secret_in_messages_logs_hooks_or_reprs(name, scripts, call, error, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CLOUDFLARE_ACCESS_CLIENT_SECRET", CF_SECRET)
    records: list[object] = []
    hooks = {name: [records.append] for name in ("request", "response", "retry", "stream_end", "error")}
    with raw_server(*scripts) as base:
        url = f"{base}/echo?X-Amz-Signature={SIGNATURE}&expires=1"
        with caplog.at_level(logging.DEBUG, logger="tinker_sync"):
            with Client(
                api_key=SECRET_KEY, base_url=base, event_hooks=hooks, dump_headers=True, sleep=lambda s: None
            ) as client:
                with pytest.raises(error) as info:
                    call(client, url, tmp_path)
    seen = [str(info.value), repr(info.value), repr(info.value.request), *map(repr, records)]
    seen += [record.getMessage() for record in caplog.records]
    for text in seen:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {text[:200]!r}"
    assert "***" in str(info.value) or name in ("a body that fits no type", "not an event stream")


def test_the_message_quotes_at_most_1_kib_of_a_big_error_body():
    big = {"error": {"message": "x" * 100_000, "details": list(range(10_000))}}

    def script(conn, request, stop):
        body = json.dumps(big).encode()
        conn.sendall(
            b"HTTP/1.1 422 X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        conn.sendall(body)

    with raw_server(script) as base, Client(api_key="tml-test-key", base_url=base) as client:
        with pytest.raises(UnprocessableEntityError) as info:
            client.get("/big")
    assert len(str(info.value)) < 1200
    assert str(info.value).endswith(f"... ({len(json.dumps(big))} bytes)")
    assert info.value.body == big  # the parsed body is whole


# Signatures as object stores write them: base64 (``/``, ``+``, ``=``), percent-encoded in the URL.
# A server that echoes the request line sends the encoded form back; both forms are masked.
ENCODED_SIGNATURES = ["SIG/abc+def==0123", "SIG%2Fabc%2Bdef%3D%3D0123", "SIG abc+0123", "SIG%20abc%2B0123"]


@pytest.mark.parametrize("signature", ENCODED_SIGNATURES)
@pytest.mark.parametrize("how", ["download", "stream", "get"])
def test_a_percent_encoded_signature_echoed_back_is_masked(signature, how, caplog, tmp_path):
    records: list[object] = []
    hooks = {name: [records.append] for name in ("request", "response", "retry", "stream_end", "error")}
    encoded = quote(signature, safe="%")
    forms = {signature, encoded, unquote(signature), unquote_plus(encoded)} - {""}
    with raw_server(_echo(403), _echo(403, b"text/plain")) as base:
        url = f"{base}/f?X-Goog-Signature={encoded}&GoogleAccessId=me"
        with caplog.at_level(logging.DEBUG, logger="tinker_sync"):
            with Client(api_key=SECRET_KEY, base_url=base, event_hooks=hooks, max_retries=0) as client:
                for _ in range(2):
                    with pytest.raises(PermissionDeniedError) as info:
                        if how == "download":
                            client.download(url, tmp_path / "f")
                        elif how == "stream":
                            client.stream("GET", url).__enter__()
                        else:
                            client.get(url)
                    seen = [str(info.value), repr(info.value), *map(repr, records)]
                    seen += [record.getMessage() for record in caplog.records]
                    assert "***" in str(info.value)
                    for text in seen:
                        for form in forms:
                            assert form not in text, f"{form!r} leaked into {text[:200]!r}"


# -- hostile answers: always a TinkerError with a small message, never a secret --------------------

DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than any decoder recurses


def _answer(status: int, content_type: bytes, body: bytes, extra: bytes = b""):
    def script(conn, request, stop):
        conn.sendall(
            b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
            % (status, content_type, len(body), extra)
            + body
        )

    return script


def _redirect(location: bytes):
    return _answer(302, b"text/plain", b"", b"Location: " + location + b"\r\n")


HOSTILE = [
    (
        "deep JSON error body",
        _answer(400, b"application/json", DEEP),
        lambda c, t: c.get("/x"),
        BadRequestError,
    ),
    (
        "deep JSON body",
        _answer(200, b"application/json", DEEP),
        lambda c, t: c.get("/x"),
        APIResponseValidationError,
    ),
    (
        "deep JSON into a type",
        _answer(200, b"application/json", DEEP),
        lambda c, t: c.get("/x", cast_to=dict),
        APIResponseValidationError,
    ),
    (
        "deep JSON event",
        _answer(200, b"text/event-stream", b"data: " + DEEP + b"\n\n"),
        lambda c, t: list(c.stream_get("/x", cast_to=dict)),
        APIResponseValidationError,
    ),
    (
        "deep JSON error event",
        _answer(200, b"text/event-stream", b"event: error\ndata: " + DEEP + b"\n\n"),
        lambda c, t: list(c.stream_get("/x")),
        APIError,
    ),
    (
        "a 60 KB Location",
        _redirect(b"ftp://" + b"l" * 60_000),
        lambda c, t: c.download("/x", t / "f"),
        APIConnectionError,
    ),
    (
        "a Location with a bad port and a signature",
        _redirect(b"http://127.0.0.1:99999/f?X-Amz-Signature=" + SIGNATURE.encode()),
        lambda c, t: c.download("/x", t / "f"),
        APIConnectionError,
    ),
    (
        "a Location with a bad host and a signature",
        _redirect(b"http://[::1/f?sig=" + SIGNATURE.encode()),
        lambda c, t: c.download("/x", t / "f"),
        APIConnectionError,
    ),
]


@pytest.mark.parametrize(("name", "script", "call", "error"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_answer_raises_a_small_tinker_error(name, script, call, error, tmp_path):
    with raw_server(script) as base:
        with Client(api_key=SECRET_KEY, base_url=base, max_retries=0) as client:
            with pytest.raises(error) as info:
                call(client, tmp_path)
    assert len(str(info.value)) < 1200 and len(repr(info.value)) < 1300
    assert SIGNATURE not in str(info.value) and SECRET_KEY not in str(info.value)
