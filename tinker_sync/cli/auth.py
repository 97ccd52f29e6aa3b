"""``tinker-sync auth login|logout|status|whoami``: the official CLI's commands over the credentials
file (``~/.tinker/credentials.json``, 0600 in a 0700 directory) and the JWT's claims.

``login`` reads the key from stdin (masked on a terminal), checks it with ``GET auth/apikey/me``
and stores it as the default; ``logout`` removes it (and revokes it on the server only when the
CLI minted it, as the official one does); ``whoami`` reads the claims of the JWT locally.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import PROG, AddCommand, client_from, emit

EXAMPLES = """examples:
  printf '%s\\n' "$KEY" | tinker-sync auth login
  tinker-sync auth status
  tinker-sync -f json auth whoami
  tinker-sync auth logout
"""


def _read_key() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Paste your API key: ")
    return sys.stdin.readline()


def _cmd_login(args: argparse.Namespace) -> int:
    from .._client import Client
    from .._config import check_api_key
    from .._credentials import default_credentials_path, load_credentials, save_credentials
    from .._exceptions import TinkerError

    path = default_credentials_path()
    data = load_credentials(path)
    if data.get("default") in data["keys"]:
        raise TinkerError(f"Already logged in: run '{PROG} auth logout' first")
    key = check_api_key(_read_key().strip(), "the pasted key")
    with Client(api_key=key) as client:
        me = client.get("/api/v1/auth/apikey/me", headers={"X-API-Key": key})
    key_id = str(me["key_id"])
    data["keys"][key_id] = {
        "type": "manual",
        "key": key,
        "name": me.get("name", key_id),
        "note": me.get("note"),
        "details": me.get("details"),
    }
    data["default"] = key_id
    save_credentials(path, data)
    details = me.get("details") or {}
    email = (details.get("user_details") or {}).get("email", "?")
    org = (details.get("org_details") or {}).get("name", "?")
    result = {
        "key_id": key_id,
        "name": me.get("name"),
        "email": email,
        "organization": org,
        "path": str(path),
    }
    emit(
        args,
        result,
        f"Logged in as {email} ({org}). Stored API key '{me.get('name')}' as the default.",
        [],
        [],
    )
    return 0


def _cmd_logout(args: argparse.Namespace) -> int:
    from .._client import Client
    from .._credentials import default_credentials_path, load_credentials, save_credentials
    from .._exceptions import TinkerError

    path = default_credentials_path()
    data = load_credentials(path)
    key_id = data.get("default")
    record: Any = data["keys"].get(key_id) if key_id is not None else None
    if not isinstance(record, dict):
        raise TinkerError(f"No default credential is stored: nothing to log out from ({path})")
    revoked = False
    if record.get("type") == "generated":  # minted for this machine: no one else has it
        with Client(api_key=record["key"]) as client:
            client.delete("/api/v1/auth/apikey/me", headers={"X-API-Key": record["key"]})
        revoked = True
    del data["keys"][key_id]
    data["default"] = None
    save_credentials(path, data)
    note = "and deleted its API key on the server" if revoked else "The API key is still active"
    emit(
        args,
        {"removed": record.get("name"), "revoked": revoked},
        f"Removed credential '{record.get('name')}'. {note}.",
        [],
        [],
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .._exceptions import TinkerError

    try:
        client = client_from(args)
    except TinkerError as exc:
        emit(
            args,
            {"credentials": False, "accessible": False, "error": str(exc)},
            f"Credentials available: no ({exc})",
            [],
            [],
        )
        return 1
    with client:
        source = client._auth.source.origin
        try:
            client.server.capabilities()
        except TinkerError as exc:
            data = {"credentials": True, "source": source, "accessible": False, "error": str(exc)}
            emit(args, data, f"Credentials available: yes ({source})\nTinker accessible: no ({exc})", [], [])
            return 1
    data = {"credentials": True, "source": source, "accessible": True}
    emit(args, data, f"Credentials available: yes ({source})\nTinker accessible: yes", [], [])
    return 0


def _cmd_whoami(args: argparse.Namespace) -> int:
    from .._auth import jwt_claims
    from .._exceptions import TinkerError

    with client_from(args) as client:
        token = client._auth.jwt(client._exchange())
        if token is None and (client.api_key or "").startswith("eyJ"):
            token = client.api_key
    if token is None:
        raise TinkerError("whoami needs JWT auth, but the server has it off and the credential is an API key")
    claims = jwt_claims(token)
    identity = {
        "user_urn": claims.get("sub"),
        "org_urn": f"tml:organization:{claims.get('org_id')}",
        "email": claims.get("email") or None,
    }
    rows = [
        ["Email", str(identity["email"] or "N/A")],
        ["User", str(identity["user_urn"])],
        ["Organization", str(identity["org_urn"])],
    ]
    emit(args, identity, "Identity", ["Property", "Value"], rows)
    return 0


def register(commands: Any, command: AddCommand) -> None:
    """Add the ``auth`` group to the commands."""
    auth = commands.add_parser(
        "auth",
        help="credentials (login, logout, status, whoami)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = auth.add_subparsers(dest="auth_command", metavar="COMMAND")
    group.required = True
    for name, func, text in (
        ("login", _cmd_login, "store an API key (read from stdin) as the default credential"),
        ("logout", _cmd_logout, "remove the stored default credential"),
        ("status", _cmd_status, "check the credential and that Tinker answers (exit 1 if not)"),
        ("whoami", _cmd_whoami, "the user and organization of the credential (from its JWT)"),
    ):
        sub = command(
            group,
            name,
            func,
            help=text,
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name in ("status", "whoami"):
            sub.set_defaults(max_retries=None)
