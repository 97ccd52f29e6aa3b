"""Errors in the user's terms: every command's --help lists its exit codes, the environment it
reads and an example (found by walking the parser, so a command added later is covered); a
malformed option exits 2 with one line saying why; ``download tinker://...`` points to
``checkpoint download``; JSON error bodies are shown as their message; a refused redirect says
why (a backslash, credentials) rather than "non-HTTP URL". Real sockets and subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest
from _front import CLIENT_CONFIG, Front, older_server
from _helpers import run_cli
from _sockets import raw_server

from tinker_sync import APIConnectionError, Client
from tinker_sync.cli import build_parser, main

API_KEY = "tml-test-key"


def _leaves(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [
                leaf
                for name, sub in action.choices.items()
                for leaf in _leaves(sub, f"{prefix} {name}".strip())
            ]
    return [(prefix, parser)]


LEAVES = _leaves(build_parser())


@pytest.mark.parametrize(("name", "parser"), LEAVES, ids=[n for n, _ in LEAVES])
def test_every_commands_help_has_exit_codes_environment_and_an_example(name, parser):
    text = parser.format_help()
    assert re.search(r"exit (status|codes?)", text) and "2" in text
    assert "environment:" in text
    if name != "demo":
        assert "TINKER_API_KEY" in text and "TINKER_MAX_RETRIES" in text
    assert f"example: tinker-sync {name}" in text.replace("\n", " ")
    assert "--max-retries" in text


def test_help_as_a_user_runs_it():
    result = subprocess.run(
        [sys.executable, "-m", "tinker_sync", "checkpoint", "download", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "exit status:" in result.stdout and "example:" in result.stdout


MALFORMED = {
    "download_tinker": ["download", "tinker://r/weights/x", "-o", "out"],
    "bad_sha256": ["download", "/f", "-o", "out", "--sha256", "xyz"],
    "bad_max_retries": ["run", "list", "--max-retries", "-1"],
    "bad_connections": ["download", "/f", "-o", "out", "--connections", "0"],
    "bad_limit": ["run", "list", "--limit", "many"],
    "no_command": [],
}


@pytest.mark.parametrize("argv", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_argument_exits_2_with_one_line(argv, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINKER_API_KEY", API_KEY)
    monkeypatch.setenv("TINKER_BASE_URL", "http://127.0.0.1:9")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_tinker_path_points_to_checkpoint_download(capsys):
    assert main(["download", "tinker://run-1/weights/final", "-o", "x"]) == 2
    assert "tinker-sync checkpoint download tinker://run-1/weights/final" in capsys.readouterr().err


BODIES = {
    "error_message": ({"error": {"message": "the run is gone", "type": "not_found"}}, "the run is gone"),
    "error_string": ({"error": "the run is gone"}, "the run is gone"),
    "detail_string": ({"detail": "Not authenticated"}, "Not authenticated"),
    "detail_list": ({"detail": [{"loc": ["q"], "msg": "field required"}]}, "field required"),
    "message": ({"message": "slow down"}, "slow down"),
}


@pytest.mark.parametrize("status", [400, 404, 422, 500])
@pytest.mark.parametrize(("body", "said"), BODIES.values(), ids=BODIES.keys())
def test_a_json_error_body_is_shown_as_its_message(capsys, monkeypatch, status, body, said):
    data = json.dumps(body).encode()
    with Front(
        "http://127.0.0.1:9",
        {CLIENT_CONFIG: older_server, "/api/v1/training_runs": lambda q, up: (status, data)},
    ) as front:
        monkeypatch.setenv("TINKER_API_KEY", API_KEY)
        monkeypatch.setenv("TINKER_BASE_URL", front.url)
        assert main(["run", "list", "--max-retries", "0", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"tinker-sync: error: Error code: {status} - {said}"
    assert "{" not in err


PYTHON_WORDING = ("Client(", "force=True", "with_options(", "=...)", "expected_sha256", "api_key=")


def _cli(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(None, *argv, **env)


def test_no_python_wording_without_an_api_key():
    result = _cli(["run", "list", "--max-retries", "0"], TINKER_BASE_URL="http://127.0.0.1:9")
    assert result.returncode == 1 and "TINKER_API_KEY" in result.stderr
    assert not [w for w in PYTHON_WORDING if w in result.stderr], result.stderr


def test_no_python_wording_for_an_existing_target(tinker_server, tmp_path):
    path = "tinker://run-1/weights/final"
    tinker_server.add_checkpoint(path, size=4096, seed=1, n_files=1)
    env = {"TINKER_API_KEY": API_KEY, "TINKER_BASE_URL": tinker_server.url}
    assert _cli(["checkpoint", "download", path, "-o", str(tmp_path), "-q"], **env).returncode == 0
    again = _cli(["checkpoint", "download", path, "-o", str(tmp_path), "-q"], **env)
    assert again.returncode == 1 and "--force" in again.stderr
    assert not [w for w in PYTHON_WORDING if w in again.stderr], again.stderr


def test_no_python_wording_for_a_listing_too_large(monkeypatch, capsys):
    """The bound's message names the Python option; the command line says what it means."""
    huge = b'{"training_runs": [], "pad": "' + b"x" * (70 << 20) + b'"}'
    with Front(
        "http://127.0.0.1:9",
        {CLIENT_CONFIG: older_server, "/api/v1/training_runs": lambda q, up: (200, huge)},
    ) as front:
        monkeypatch.setenv("TINKER_API_KEY", API_KEY)
        monkeypatch.setenv("TINKER_BASE_URL", front.url)
        assert main(["run", "list", "--max-retries", "0"]) == 1
    err = capsys.readouterr().err
    assert "too large" in err and not [w for w in PYTHON_WORDING if w in err], err


REDIRECTS = {
    "backslash": (b"http://127.0.0.1:1\\@evil.example/x", "backslash"),
    "backslash_host": (b"http://evil.example\\x/y", "backslash"),
    "userinfo": (b"http://user:pw@127.0.0.1:1/x", "credentials"),
    "user_only": (b"http://token@127.0.0.1:1/x", "credentials"),
    "ftp": (b"ftp://127.0.0.1/x", "non-HTTP URL"),
    "file": (b"file:///etc/passwd", "non-HTTP URL"),
}


@pytest.mark.parametrize(("location", "said"), REDIRECTS.values(), ids=REDIRECTS.keys())
def test_a_refused_redirect_says_why(location, said):
    def script(conn, head, stop):
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")

    with raw_server(script) as url, Client(api_key=API_KEY, base_url=url, max_retries=0) as client:
        with pytest.raises(APIConnectionError) as caught:
            client.download("/f", os.devnull + "-unused", connections=1)
    message = str(caught.value)
    assert said in message and ("non-HTTP" not in message or said == "non-HTTP URL")
    assert "pw@" not in message
