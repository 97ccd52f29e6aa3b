"""Secrets are masked whatever they contain: a proxy (or base URL) password holding an unencoded
``/ # ? @ :`` (common in ``HTTPS_PROXY``) never appears in a message, a log line, a repr, a
traceback or a pickle, whether the URL parses or not. Everything between ``scheme://`` and the
last ``@`` is masked (a user name before ``:`` may stay).

Every password is built from distinctive pieces joined by the awkward characters; the tests
assert that no piece shows anywhere. Real sockets: requests go to a dead loopback port (the
proxy refuses), to a live mock server, or through the CLI as a subprocess.
"""

from __future__ import annotations

import logging
import pickle
import socket
import traceback

import _zygote
import pytest
from _helpers import client_env

from tinker_sync import Client, TinkerError
from tinker_sync._exceptions import APIConnectionError, InvalidRequestError, mask_credentials
from tinker_sync._observe import mask_url

API_KEY = "tml-test-key"
PIECES = ["Zq9xK", "Kw7vQ", "Jm3pL", "Hb2nW", "Ty5cD", "Rg8dF"]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _password(joiners: str) -> str:
    out = PIECES[0]
    for i, joiner in enumerate(joiners):
        out += joiner + PIECES[i + 1]
    return out


JOINERS = {
    "slash": "/",
    "hash": "#",
    "question": "?",
    "at": "@",
    "colon": ":",
    "slash_at": "/@",
    "hash_question": "#?",
    "at_at": "@@",
    "all": "/#?@:",
    "colon_slash_colon": ":/:",
    "pct_encoded_slash": "%2F",
    "pct_encoded_at": "%40",
    "space_free_mix": "?/#",
    "backslash": "\\",
    "semicolon_equals": ";=",
}
USERS = {"user": "alice", "token_only": None, "empty_user": ""}


def _proxy_url(user: str | None, joiners: str, port: int, scheme: str = "http") -> str:
    password = _password(joiners)
    if user is None:
        return f"{scheme}://{password}@127.0.0.1:{port}"
    return f"{scheme}://{user}:{password}@127.0.0.1:{port}"


def assert_clean(text: str, where: str, user_piece: bool = False) -> None:
    """No piece of the password shows (``user_piece``: the first is a user name, as a URL with a
    plain name before its first ``:`` reads, and may show)."""
    for piece in PIECES[1:] if user_piece else PIECES:
        assert piece not in text, f"{where}: {piece!r} shown in {text!r}"


def _everything_about(exc: BaseException) -> dict[str, str]:
    """Each way an error is seen: str, repr, message, its traceback, and its pickle."""
    shown = {
        "str": str(exc),
        "repr": repr(exc),
        "message": str(getattr(exc, "message", "")),
        "traceback": "".join(traceback.format_exception(exc)),
        "pickle": pickle.dumps(exc).decode("latin-1"),
    }
    restored = pickle.loads(pickle.dumps(exc))
    shown["unpickled"] = f"{restored!s} {restored!r}"
    return shown


@pytest.mark.parametrize("user", USERS.values(), ids=USERS.keys())
@pytest.mark.parametrize("joiners", JOINERS.values(), ids=JOINERS.keys())
def test_a_proxy_password_never_shows_in_an_error_or_a_log(tinker_server, caplog, user, joiners):
    proxy = _proxy_url(user, joiners, _dead_port())
    named = user is None and joiners.startswith(":")  # "Zq9xK:Kw7vQ@": a user name, to any reader
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TinkerError) as caught:
        with Client(
            api_key=API_KEY, base_url=tinker_server.url, proxy=proxy, max_retries=1, sleep=lambda s: None
        ) as c:
            assert_clean(repr(c), "client repr", named)
            assert_clean(repr(c._transport.proxies), "proxy rules repr", named)
            c.health.check()
    assert isinstance(caught.value, (InvalidRequestError, APIConnectionError))
    for where, text in _everything_about(caught.value).items():
        assert_clean(text, where, named)
    assert_clean(caplog.text, "log", named)
    assert_clean("\n".join(r.getMessage() for r in caplog.records), "log records", named)


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"])
@pytest.mark.parametrize("joiners", ["/", "#", "?", "@", ":", "/#?@:"])
def test_a_proxy_from_the_environment_never_shows_in_the_command_lines_output(
    tinker_server, variable, joiners
):
    base = (
        tinker_server.url.replace("http://", "https://") if "HTTPS" in variable.upper() else tinker_server.url
    )
    env = client_env(API_KEY, base, TINKER_MAX_RETRIES="0")
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    env[variable] = _proxy_url("alice", joiners, _dead_port())
    env["TINKER_LOG"] = "debug"
    result = _zygote.run(["run", "list"], env, None, 120)
    assert result.returncode != 0
    assert_clean(result.stdout + result.stderr, "cli output")


@pytest.mark.parametrize("user", USERS.values(), ids=USERS.keys())
@pytest.mark.parametrize("joiners", JOINERS.values(), ids=JOINERS.keys())
@pytest.mark.parametrize("scheme", ["http", "https", "socks5", "HTTP"])
def test_mask_url_and_mask_credentials(user, joiners, scheme):
    url = _proxy_url(user, joiners, 3128, scheme) + "/path?x=1"
    named = user is None and joiners.startswith(":")
    for masked in (mask_url(url), mask_credentials(url), mask_credentials(f"proxy is {url}, said the env")):
        assert_clean(masked, "masked", named)
        assert "127.0.0.1:3128" in masked and "***" in masked
    if user:
        assert mask_credentials(url).startswith(f"{scheme}://{user}:***@127.0.0.1:3128")


@pytest.mark.parametrize(
    "text",
    [
        "no url here",
        "an email a@b.c is not a url",
        "http://host/path",
        "https://h/a?sig=x",
        "path /x@y with no scheme",
        "",
    ],
)
def test_text_without_credentials_is_unchanged(text):
    assert mask_credentials(text) == text


@pytest.mark.parametrize("joiners", ["/", "#", "?", "@", ":", "/#?@:"])
def test_every_error_class_masks_its_message(joiners):
    import tinker_sync._exceptions as module

    text = f"failed at {_proxy_url('alice', joiners, 3128)}"
    for name in module.__all__:
        cls = getattr(module, name)
        if not (isinstance(cls, type) and issubclass(cls, TinkerError)):
            continue
        try:
            exc = cls(text)
        except TypeError:
            try:
                exc = cls(text, None)
            except TypeError:
                exc = cls(text, "req-1", "user")
        for where, shown in _everything_about(exc).items():
            assert_clean(shown, f"{name} {where}")


@pytest.mark.parametrize("joiners", ["/", "#", "?", "@", "/#?@:"])
def test_a_base_url_with_credentials_is_masked_in_the_clients_repr(joiners):
    base = f"http://alice:{_password(joiners)}@127.0.0.1:{_dead_port()}"
    try:
        with Client(api_key=API_KEY, base_url=base) as client:
            assert_clean(repr(client), "client repr")
    except TinkerError as exc:  # refused at once: also clean
        for where, shown in _everything_about(exc).items():
            assert_clean(shown, where)
