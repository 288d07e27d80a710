"""The command line: one console script, one subcommand per room of the project.

Each subcommand imports its module only when it runs, so `--help` stays fast
and a project without a chain still answers `serve`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, Settings, load_settings

PROG = "{{ cookiecutter.project_slug }}"


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (TOML, YAML or JSON); default: $OPENROUTER_CONFIG",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="serve the OpenRouter-facing HTTP API")
    _add_config_option(serve)
    serve.add_argument("--host", help="listen address (default from config)")
    serve.add_argument("--port", type=int, help="listen port (default from config)")

    run = commands.add_parser("run", help="run as a Tangle blueprint (jobs and the HTTP API)")
    _add_config_option(run)
    run.add_argument("--test-mode", action="store_true", help="accepted for the blueprint manager")
    run.add_argument("--pretty", action="store_true", help="human-readable logs")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="compute answers but send nothing")

    nodes = commands.add_parser("nodes", help="each node: reachable, models, load")
    _add_config_option(nodes)
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")

    models = commands.add_parser("models", help="the model listing OpenRouter will read")
    _add_config_option(models)

    config = commands.add_parser("config", help="the effective config, secrets masked")
    _add_config_option(config)
    return parser


def _print_config(settings: Settings) -> int:
    print(json.dumps(settings.masked(), indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if args.command == "config":
        return _print_config(settings)
    print(f"{PROG}: {args.command} is not available yet", file=sys.stderr)
    return 2
