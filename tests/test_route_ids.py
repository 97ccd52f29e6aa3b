"""No id reaches another route: every resource method that puts an id into a path refuses, before
anything is sent, an id a URL normaliser would collapse or split (``.``, ``..``, their
percent-encoded and NFKC forms, a ``/`` or ``\\`` in any reading).

The methods are found by introspection (every public method of every resource whose first
parameter is an id or a ``tinker://`` path), in each of the three views, so a method added later is
covered without editing this file. Each call goes to a live loopback mock server, which must record
no request at all.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tinker_sync import Client, InvalidRequestError
from tinker_sync.resources._paths import check_id, parse_tinker_path
from tinker_sync.testing import MockTinkerServer

ID_PARAMS = {"run_id", "session_id", "training_run_id", "sampler_id"}
PATH_PARAMS = {"tinker_path"}
# Values for the other required parameters of the methods found.
OTHER_ARGUMENTS: dict[str, Any] = {"ttl_seconds": 3600, "project_id": "proj-x"}

BAD_IDS = {
    "dot": ".",
    "dotdot": "..",
    "pct_dot": "%2e",
    "pct_DOT": "%2E",
    "pct_dotdot": "%2e%2e",
    "pct_DOTDOT": "%2E%2E",
    "half_pct_left": "%2e.",
    "half_pct_right": ".%2E",
    "double_pct_dot": "%252e",
    "double_pct_dotdot": "%252E%252e",
    "triple_pct_dotdot": "%25252e%25252e",
    "slash": "a/b",
    "slash_dotdot": "a/..",
    "dotdot_slash": "../checkpoints",
    "backslash": "a\\b",
    "backslash_dotdot": "..\\x",
    "pct_slash": "run-1%2Fcheckpoints",
    "pct_slash_lower": "run-1%2fcheckpoints",
    "pct_backslash": "%5c..",
    "double_pct_slash": "a%252Fb",
    "fullwidth_dot": "\uff0e",
    "fullwidth_dotdot": "\uff0e\uff0e",
    "two_dot_leader": "\u2025",
    "one_dot_leader_twice": "\u2024\u2024",
    "fullwidth_solidus": "a\uff0fb",
    "empty": "",
}

GOOD_IDS = ["run-1", "...", ".x", "x.", "a..b", "%", "100%", "%2", "%zz", "a b", "s:train:0", "é", "_", "a%2"]


def _id_methods(client: Client) -> Iterator[tuple[str, str, str]]:
    """(resource, method, first parameter) for each public resource method taking an id first."""
    for resource_name in dir(client):
        if resource_name.startswith("_"):
            continue
        resource = getattr(client, resource_name, None)
        if "tinker_sync.resources" not in type(resource).__module__:
            continue
        for name in dir(resource):
            method = getattr(resource, name)
            if name.startswith(("_", "with_")) or not callable(method):
                continue
            params = list(inspect.signature(method).parameters.values())
            # positional: a keyword-only id is a filter in a body (sessions.search), not a path segment
            if (
                params
                and params[0].name in ID_PARAMS | PATH_PARAMS
                and params[0].kind != params[0].KEYWORD_ONLY
            ):
                yield resource_name, name, params[0].name


def _all_methods() -> list[str]:
    with Client(api_key="tml-" + "x" * 20, base_url="http://127.0.0.1:9") as client:
        return [f"{r}.{m}.{p}" for r, m, p in _id_methods(client)]


METHODS = _all_methods()


def test_every_id_taking_method_is_found():
    """The introspection finds the methods the issue names, so the table below covers them."""
    for expected in [
        "training_runs.get.run_id",
        "sessions.get.session_id",
        "checkpoints.list.run_id",
        "checkpoints.list_for_run.run_id",
        "checkpoints.get.tinker_path",
        "checkpoints.delete.tinker_path",
        "checkpoints.archive.tinker_path",
        "checkpoints.download.tinker_path",
        "checkpoints.sync.run_id",
        "checkpoints.copy.tinker_path",
        "sessions.assign_project.session_id",
        "sampling.get_sampler.sampler_id",
    ]:
        assert expected in METHODS


def _arguments(
    client: Client, resource: str, method: str, bad: str, where: str, tmp_path
) -> Callable[[], Any]:
    bound = getattr(getattr(client, resource), method)
    params = inspect.signature(bound).parameters
    first = next(iter(params))
    if first in PATH_PARAMS:
        value = f"tinker://{bad}/weights/final" if where == "run" else f"tinker://run-1/weights/{bad}"
    else:
        value = bad
    args: list[Any] = [value]
    for name, param in list(params.items())[1:]:
        if param.default is not param.empty or param.kind in (
            param.KEYWORD_ONLY,
            param.VAR_KEYWORD,
            param.VAR_POSITIONAL,
        ):
            break
        args.append(tmp_path / "out" if name == "output_dir" else OTHER_ARGUMENTS[name])
    return lambda: bound(*args)


def _views(client: Client) -> dict[str, Client]:
    return {"plain": client, "raw": client.with_raw_response, "streaming": client.with_streaming_response}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def quiet_server() -> Iterator[MockTinkerServer]:
    with MockTinkerServer(demo_data=True) as server:
        yield server


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
@pytest.mark.parametrize("method", METHODS)
def test_an_id_naming_another_route_is_refused_before_sending(quiet_server, tmp_path, method, bad):
    resource, name, first = method.split(".")
    quiet_server.clear()
    places = ["run", "name"] if first in PATH_PARAMS else ["id"]
    with Client(api_key="tml-test-key", base_url=quiet_server.url, max_retries=0) as client:
        for view_name, view in _views(client).items():
            for where in places:
                call = _arguments(view, resource, name, bad, where, tmp_path)
                try:
                    result = call()
                    if isinstance(result, contextlib.AbstractContextManager):
                        with result:
                            pass
                except InvalidRequestError as exc:
                    assert isinstance(exc, ValueError)
                except TypeError as exc:  # a plain-only helper (download, sync) has no other view
                    assert view_name != "plain" and "view" in str(exc), exc
                else:
                    pytest.fail(f"{view_name} {method}({where}={bad!r}) was not refused")
    assert quiet_server.requests == []
    assert not (tmp_path / "out").exists()  # nothing created for a refused download or sync


@pytest.mark.parametrize("good", GOOD_IDS)
def test_ids_that_name_one_resource_pass_unchanged(good):
    assert check_id(good) == good
    assert parse_tinker_path(f"tinker://{good}/weights/{good}").run == good


@pytest.mark.parametrize("good", ["...", ".x", "a..b", "100%", "a b", "s:train:0"])
def test_odd_but_harmless_ids_still_reach_their_own_route(client, tinker_server, good):
    """The check refuses only what another route could be read from: these go to their own."""
    tinker_server.add_checkpoint(f"tinker://{good}/weights/{good}", size=1024, n_files=1)
    assert client.training_runs.get(good).training_run_id == good
    assert [c.tinker_path for c in client.checkpoints.list(good).checkpoints] == [
        f"tinker://{good}/weights/{good}"
    ]
    assert tinker_server.violations == []


@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_the_message_names_the_id_and_why(bad):
    with pytest.raises(InvalidRequestError, match="empty" if not bad else "another route"):
        check_id(bad, "training run id")


@pytest.mark.parametrize("bad", [None, 7, b"run-1", ["run-1"]])
def test_an_id_that_is_not_a_string_is_refused(client, tinker_server, bad):
    with pytest.raises(InvalidRequestError, match="must be a string"):
        client.training_runs.get(bad)
    assert tinker_server.requests == []
