"""The README's examples run as a user's script against the mock server (mypy checks the same file)."""

from __future__ import annotations

import pathlib

import user_script

from tinker_sync.testing import MockTinkerServer


def test_the_user_script_runs(tmp_path: pathlib.Path) -> None:
    with MockTinkerServer(demo_data=True) as server:
        user_script.main(server.api_key, server.url, tmp_path)
        assert server.violations == []
