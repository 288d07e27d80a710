"""`demo`: three simulated nodes behind the provider on 127.0.0.1, no GPU needed.

The nodes speak the dialect of the server type this project was generated for
(or OpenAI's, for `openai_compatible` and `custom`), so the demo exercises the
same client the project will use in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
import signal
import sys

import uvloop

from {{ cookiecutter.package_name }}_sim import SimConfig, SimHandle
from {{ cookiecutter.package_name }}_sim.config import Dialect

from .api.app import create_app
from .api.server import serving
from .config import DEFAULT_MODEL, DEFAULT_NODE_TYPE, Settings

NODES = 3
# The simulator's dialect for each node type; the others get OpenAI's dialect.
DIALECTS: dict[str, Dialect] = {
    "ollama": "ollama",
    "vllm": "vllm",
    "llamacpp": "llamacpp",
    "tgi": "tgi",
}


def run_demo(*, port: int) -> int:
    """Serve until interrupted (Ctrl-C)."""
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_demo(port))
    return 0


async def _demo(port: int) -> None:
    dialect = DIALECTS.get(DEFAULT_NODE_TYPE, "openai")
    node_type = DEFAULT_NODE_TYPE if dialect != "openai" else "openai_compatible"
    sims = [
        SimHandle(
            SimConfig(
                dialect=dialect,
                models=[DEFAULT_MODEL],
                ttft_s=0.05 * (index + 1),  # three speeds, so the balancer has a choice
                tokens_per_s=40,
                output_tokens=24,
                seed=index,
            )
        )
        for index in range(NODES)
    ]
    for sim in sims:
        await sim.start()
    key = "sk-demo-" + secrets.token_urlsafe(18)
    settings = Settings.model_validate(
        {
            "api": {"host": "127.0.0.1", "port": port, "api_keys": [key]},
            "nodes": [
                {
                    "name": f"sim-{i + 1}",
                    "url": sim.url,
                    "type": node_type,
                    "models": [DEFAULT_MODEL],
                }
                for i, sim in enumerate(sims)
            ],
            "models": [{"id": DEFAULT_MODEL, "max_output_length": 256}],
        }
    )
    try:
        async with serving(create_app(settings), settings.api, "127.0.0.1", port) as url:
            _announce(f"{url}/v1", key, dialect)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        for sim in sims:
            await sim.stop()


def _announce(base_url: str, key: str, dialect: str) -> None:
    body = json.dumps({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hello!"}]})
    curl = " ".join(
        [
            "curl -s",
            shlex.quote(f"{base_url}/chat/completions"),
            "-H",
            shlex.quote(f"Authorization: Bearer {key}"),
            "-H 'Content-Type: application/json'",
            "-d",
            shlex.quote(body),
        ]
    )
    print(f"{NODES} simulated {dialect} nodes serving {DEFAULT_MODEL!r}, behind the provider.")
    print(f"Base URL: {base_url}")
    print(f"API key:  {key}")
    print(f"Model:    {DEFAULT_MODEL}")
    print(f"Try:      {curl}")
    print("Press Ctrl-C to stop.", flush=True)
    sys.stdout.flush()
