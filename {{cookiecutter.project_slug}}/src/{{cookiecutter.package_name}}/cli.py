"""The command line: one console script, one subcommand per room of the project.

Each subcommand imports its module only when it runs, so `--help` stays fast
and a broken optional piece cannot stop the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, Settings, load_settings

PROG = "{{ cookiecutter.project_slug }}"

# Subcommands with options of their own: the rest of the command line is theirs.
PASS_THROUGH = {
    "sim": "run a simulated LLM server (ollama, vllm, llamacpp, tgi or openai dialect)",
    "bench": "benchmarks: transport, balancer, overhead, queue",
    "tangle": "operator tools: register, submit-job, status",
}


def _add_config_option(parser: argparse.ArgumentParser, log_json: bool = False) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (TOML, YAML or JSON); default: $OPENROUTER_CONFIG",
    )
    if log_json:
        parser.add_argument("--log-json", action="store_true", help="log JSON lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="serve the OpenRouter-facing HTTP API")
    _add_config_option(serve, log_json=True)
    serve.add_argument("--host", help="listen address (default from config)")
    serve.add_argument("--port", type=int, help="listen port (default from config)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 257),
        metavar="N",
        help="serving processes on the one port (default 1); without [cluster] redis_url "
        "each gets 1/N of every node's max_concurrency",
    )

    run = commands.add_parser("run", help="run as a Tangle blueprint (jobs and the HTTP API)")
    _add_config_option(run, log_json=True)
    run.add_argument("--test-mode", action="store_true", help="accepted for the blueprint manager")
    run.add_argument("--pretty", action="store_true", help="human-readable logs")
    run.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat)")
    run.add_argument("--dry-run", action="store_true", help="compute answers but send nothing")

    nodes = commands.add_parser("nodes", help="each node: reachable, models, load")
    _add_config_option(nodes)
    nodes.add_argument("--json", action="store_true", help="print JSON instead of a table")

    models = commands.add_parser("models", help="the model listing OpenRouter will read")
    _add_config_option(models)
    models.add_argument(
        "--check", metavar="FILE", help="validate a saved V2 listing (e.g. curl's) instead"
    )

    config = commands.add_parser("config", help="the effective config, secrets masked")
    _add_config_option(config)

    demo = commands.add_parser("demo", help="three simulated nodes behind the provider, no GPU")
    _add_config_option(demo)
    demo.add_argument("--port", type=int, help="the provider's port (default from config)")

    for name, help_text in PASS_THROUGH.items():
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    settings.log_json |= getattr(args, "log_json", False)
    if args.command == "config":
        print(json.dumps(settings.masked(), indent=2))
        return 0
    if args.command == "serve":
        with tempfile.TemporaryDirectory(prefix="openrouter-metrics-") as shared:
            if args.workers > 1:
                # Before prometheus_client is imported: every worker writes its metrics to
                # files there and each scrape sums them (its multiprocess mode).
                os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", shared)
            from .api.server import serve

            return serve(
                settings,
                host=args.host,
                port=args.port,
                config_path=args.config,
                workers=args.workers,
            )
    if args.command == "run":
        from .tangle.runner import run

        return run(
            settings,
            test_mode=args.test_mode,
            pretty=args.pretty,
            verbosity=args.verbose,
            dry_run=args.dry_run,
        )
    if args.command == "nodes":
        from .balancer.report import print_nodes

        return print_nodes(settings, as_json=args.json)
    if args.command == "models":
        from .api.listing import check_listing, print_models

        return check_listing(args.check) if args.check else print_models(settings)
    raise AssertionError(f"unhandled command {args.command}")


def _pass_through(command: str, argv: list[str]) -> int:
    if command == "tangle" and argv[:1] != ["bench"]:
        from .tangle.cli import main as tangle_main

        return tangle_main(argv)
    try:
        if command == "sim":
            from {{ cookiecutter.package_name }}_sim.cli import main as aside_main
        elif command == "tangle":  # `tangle bench` is a benchmark: it lives with the others
            from {{ cookiecutter.package_name }}_bench.tangle_jobs import main as aside_main

            argv = argv[1:]
        else:
            from {{ cookiecutter.package_name }}_bench import main as aside_main
    except ModuleNotFoundError as error:
        return _not_here(command, error)
    return aside_main(argv)


def _not_here(command: str, error: ModuleNotFoundError) -> int:
    """The simulator and the benchmarks sit beside the product in src/, outside the wheel
    and the image: a source checkout installed with `pip install -e .` has them."""
    if error.name is None or not error.name.startswith("{{ cookiecutter.package_name }}"):
        raise error
    package = error.name.split(".")[0]
    print(
        f"{PROG} {command}: {package} is not installed here; it ships in the project's "
        "source (src/), not in the package: run it from a checkout installed with "
        "pip install -e .",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # argparse's REMAINDER drops options such as --dialect, so these bypass it.
    if words and words[0] in PASS_THROUGH:
        try:
            return _pass_through(words[0], words[1:])
        except ConfigError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(words)
    try:
        settings = load_settings(args.config)
        from .backends import check_node_types

        if args.command != "demo":  # the demo brings its own nodes, only its port is read
            check_node_types(settings.nodes)
    except ConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if args.command == "demo":
        try:
            from .demo import run_demo
        except ModuleNotFoundError as error:
            return _not_here("demo", error)
        return run_demo(port=settings.api.port if args.port is None else args.port)
    return _dispatch(args, settings)
