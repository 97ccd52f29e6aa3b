"""``tinker-sync model list [SUBSTRING]`` and ``tinker-sync version``: the official CLI's two."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import AddCommand, client_from, emit, version

EXAMPLES = """examples:
  tinker-sync model list
  tinker-sync model list qwen        # names containing "qwen", any case
  tinker-sync -f json model list
"""


def _yes(value: bool | None) -> str:
    return "N/A" if value is None else ("Yes" if value else "No")


def _cmd_model_list(args: argparse.Namespace) -> int:
    from .._exceptions import TinkerError

    with client_from(args) as client:
        models = client.server.capabilities().supported_models
    if args.substring is not None:
        needle = args.substring.lower()
        models = [m for m in models if m.model_name is not None and needle in m.model_name.lower()]
        if not models:
            raise TinkerError(f"No model name contains {args.substring!r}: run 'model list' to see them all")
    rows = [
        [m.model_name or "N/A", str(m.max_context_length or "N/A"), _yes(m.trainable), _yes(m.sampleable)]
        for m in models
    ]
    emit(args, {"models": models}, "Models", ["Model", "Max Context", "Trainable", "Sampleable"], rows)
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    from .._version import SDK_VERSION, __version__
    from ..sse import IMPLEMENTATION

    data = {"version": __version__, "sdk_version": SDK_VERSION, "sse_decoder": IMPLEMENTATION}
    emit(args, data, f"{version()}; speaks the API of tinker {SDK_VERSION}", [], [])
    return 0


def register(commands: Any, command: AddCommand) -> None:
    """Add ``model list`` and ``version`` to the commands."""
    model = commands.add_parser("model", help="models (list)")
    group = model.add_subparsers(dest="model_command", metavar="COMMAND")
    group.required = True
    listing = command(
        group,
        "list",
        _cmd_model_list,
        help="the models your organization can train or sample",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument(
        "substring", nargs="?", metavar="SUBSTRING", help="keep names containing it (any case)"
    )
    listing.set_defaults(max_retries=None)
    command(commands, "version", _cmd_version, help="show the version (and the official API version spoken)")
