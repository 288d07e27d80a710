"""`serve` and `demo` as real processes: start-up checks, key rotation on SIGHUP, the demo."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from {{ cookiecutter.package_name }}_sim import SimConfig, running_sim

PACKAGE = "{{ cookiecutter.package_name }}"
MODEL = "acme/rotating"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENROUTER_")}
    return {**env, **extra}


@asynccontextmanager
async def process(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        PACKAGE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def read_until(stream: asyncio.StreamReader | None, pattern: str) -> re.Match[str]:
    assert stream is not None
    seen = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 20)).decode()
        assert line, "the process ended early:\n" + "".join(seen)
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match


def write_config(path: Path, keys: list[str]) -> None:
    quoted = ", ".join(f'"{key}"' for key in keys)
    path.write_text(
        f"[api]\napi_keys = [{quoted}]\n\n"
        f'[[nodes]]\nname = "n1"\nurl = "http://127.0.0.1:9"\ntype = "openai_compatible"\n'
        f'models = ["{MODEL}"]\n\n'
        f'[[models]]\nid = "{MODEL}"\n'
    )


async def test_serve_refuses_auth_without_keys(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, [])
    async with process(
        "serve", "--port", "0", env=clean_env(OPENROUTER_CONFIG=str(config))
    ) as proc:
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "no API key is configured" in stderr.decode()


async def test_sighup_rotates_keys_without_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, ["key-one"])
    env = clean_env(OPENROUTER_CONFIG=str(config))
    async with process("serve", "--port", "0", env=env) as proc:
        port = (await read_until(proc.stderr, r"running on http://127.0.0.1:(\d+)")).group(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def status(key: str) -> int:
                response = await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
                return response.status_code

            assert await status("key-one") == 200
            assert await status("key-two") == 401
            write_config(config, ["key-two", "key-three"])
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                if await status("key-two") == 200:
                    break
                await asyncio.sleep(0.05)
            assert [await status(k) for k in ("key-one", "key-two", "key-three")] == [401, 200, 200]
            config.write_text("[api]\nport = 'not a port'\n")  # a broken config keeps the keys
            proc.send_signal(signal.SIGHUP)
            await read_until(proc.stderr, r"configuration not reloaded")
            assert await status("key-two") == 200
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def json_line(stream: asyncio.StreamReader | None, pattern: str) -> dict[str, Any]:
    """The first stderr line whose message matches; every line before it must be JSON too."""
    assert stream is not None
    while True:
        line = (await asyncio.wait_for(stream.readline(), 20)).decode()
        assert line, "the process ended early"
        record: dict[str, Any] = json.loads(line)
        assert {"time", "level", "logger", "request_id", "message"} <= record.keys()
        if re.search(pattern, record["message"]):
            return record


async def test_log_json_lines_carry_the_request_id_to_the_node_attempts(tmp_path: Path) -> None:
    async with running_sim(SimConfig(models=[MODEL], error_rate=1.0)) as node:
        config = tmp_path / "config.toml"
        write_config(config, ["key"])
        config.write_text(config.read_text().replace("http://127.0.0.1:9", node.url))
        env = clean_env(OPENROUTER_CONFIG=str(config))
        async with process("serve", "--port", "0", "--log-json", env=env) as proc:
            running = await json_line(proc.stderr, r"running on http://127.0.0.1:(\d+)")
            port = running["message"].rsplit(":", 1)[1].split()[0]
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"authorization": "Bearer key"}
            ) as http:
                body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
                given = {"x-request-id": "or-trace:42"}
                answer = await http.post("/v1/chat/completions", json=body, headers=given)
                assert answer.status_code >= 500
                assert answer.headers["x-request-id"] == "or-trace:42"
                attempt = await json_line(proc.stderr, r"node n1: attempt failed")
                assert attempt["request_id"] == "or-trace:42" and attempt["level"] == "INFO"
                # Too long, or not a plain token: a fresh id, the given one never echoed.
                for hostile in ("a" * 129, "<script>", "id with spaces"):
                    response = await http.get("/v1/models", headers={"x-request-id": hostile})
                    assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
                ids = {(await http.get("/health")).headers["x-request-id"] for _ in range(3)}
                assert len(ids) == 3
            proc.send_signal(signal.SIGHUP)
            reloaded = await json_line(proc.stderr, r"SIGHUP: API keys reloaded")
            assert reloaded["level"] == "INFO" and reloaded["request_id"] == "-"


async def test_sighup_reloads_the_fleet_from_the_config_option(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, ["key"])
    async with process("serve", "--config", str(config), "--port", "0", env=clean_env()) as proc:
        port = (await read_until(proc.stderr, r"running on http://127.0.0.1:(\d+)")).group(1)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": "Bearer key"}
        ) as http:

            async def listed() -> list[str]:
                response = await http.get("/v1/models")
                return [model["id"] for model in response.json()["data"]]

            assert await listed() == [MODEL]
            write_config(config, ["key"])
            with config.open("a") as extra:
                extra.write(
                    '\n[[nodes]]\nname = "n2"\nurl = "http://127.0.0.1:9"\n'
                    'type = "openai_compatible"\nmodels = ["acme/added"]\n\n'
                    '[[models]]\nid = "acme/added"\n'
                )
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                if "acme/added" in await listed():
                    break
                await asyncio.sleep(0.05)
            assert sorted(await listed()) == sorted([MODEL, "acme/added"])


async def test_models_prints_the_listing_after_discovery(
    tmp_path: Path, sim_server: Callable[..., Any]
) -> None:
    # vLLM reports max_model_len in its model list; the generic client reads it.
    node = await sim_server(dialect="vllm", models=["upstream-name"], context_length=2048)
    config = tmp_path / "config.json"
    node_settings = {
        "name": "n1",
        "url": node.url,
        "type": "openai_compatible",
        "models": [dict(id=MODEL, backend_model="upstream-name")],
    }
    config.write_text(
        json.dumps(
            {
                "api": {"api_keys": ["k"]},
                "nodes": [node_settings],
                "models": [{"id": MODEL, "context_length": 8192}],
            }
        )
    )
    async with process("models", "--config", str(config), env=clean_env()) as proc:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    (model,) = json.loads(stdout)["data"]
    assert model["id"] == MODEL
    assert model["context_length"] == 2048  # discovered from the node, below the configured 8192
    assert node.url not in stdout.decode()


async def test_demo_serves_the_openai_client() -> None:
    async with process("demo", "--port", "0", env=clean_env()) as proc:
        url = (await read_until(proc.stdout, r"Base URL: (\S+)")).group(1)
        key = (await read_until(proc.stdout, r"API key:\s+(\S+)")).group(1)
        model = (await read_until(proc.stdout, r"Model:\s+(\S+)")).group(1)
        await read_until(proc.stdout, r"curl -s")
        async with openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0) as client:
            answer = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello!"}]
            )
            listed = await client.models.list()
        assert answer.choices[0].message.content
        assert [item.id for item in listed.data] == [model]
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
