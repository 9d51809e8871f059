"""`p2pindex config show`: the settings a node would run with, and where each came from."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from p2pindex.cli.common import EXIT_OK, add_format_option
from p2pindex.cli.serve import add_node_options, settings_from
from p2pindex.config_file import node_config, render


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show a node's effective settings",
        description="Work with node configuration files (TOML, `serve --config FILE`).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print the effective settings of `serve` with the same file and flags",
        description=(
            "Print every setting a node started with the same --config file and flags would "
            "use, as TOML, each marked with its source (default, the file, or a flag). An "
            "unknown key or a bad value is reported as `serve` would, naming it. Relative "
            "paths in the file are resolved against the file's directory and shown resolved."
        ),
    )
    add_node_options(show)
    add_format_option(show)
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    values, sources = settings_from(args)
    # Exactly the checks `serve` makes (the same config objects are built), so a file
    # `config show` accepts is one `serve` starts with; only data_dir may be left to a flag.
    node_config(values, sources, need_data_dir=False)
    if args.format == "json":
        document = {
            name: {"value": _jsonable(value), "source": sources[name]}
            for name, value in values.items()
        }
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(render(values, sources.__getitem__), end="")
    if values["data_dir"] is None:
        print("note: data_dir is not set; `serve` needs --data-dir or data_dir", file=sys.stderr)
    return EXIT_OK


def _jsonable(value: object) -> object:
    """Settings as JSON: paths and addresses as the text a file would hold."""
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value) if not isinstance(value, Path) else value.as_posix()
