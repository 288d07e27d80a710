"""`serve` and `demo` as real processes: start-up checks, key rotation on SIGHUP, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

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


async def listening(
    proc: asyncio.subprocess.Process, scheme: str = "http", verify: ssl.SSLContext | bool = True
) -> str:
    """The URL `serve` announces, once its workers answer there."""
    port = (await read_until(proc.stderr, rf"running on {scheme}://127.0.0.1:(\d+)")).group(1)
    url = f"{scheme}://127.0.0.1:{port}"
    async with httpx.AsyncClient(verify=verify) as http:
        for _ in range(500):
            with contextlib.suppress(httpx.TransportError):
                await http.get(f"{url}/health")
                return url
            await asyncio.sleep(0.02)
    raise AssertionError(f"serve announced {url} but does not answer there")


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
        async with httpx.AsyncClient(base_url=await listening(proc)) as http:

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
            reloaded = await json_line(proc.stderr, r"SIGHUP: reloading the configuration")
            assert reloaded["level"] == "INFO" and reloaded["request_id"] == "-"


async def test_sighup_reloads_the_fleet_from_the_config_option(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, ["key"])
    async with process("serve", "--config", str(config), "--port", "0", env=clean_env()) as proc:
        url = await listening(proc)
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer key"}) as http:

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


async def test_every_scrape_counts_every_worker_s_answers(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, ["k"])
    env = clean_env(OPENROUTER_CONFIG=str(config))
    health = re.compile(r'^api_requests_total\{route="/health",status="200"\} (\S+)$', re.M)
    async with process("serve", "--port", "0", "--workers", "2", env=env) as proc:
        url = await listening(proc)
        # A connection per request: the kernel spreads them over both workers.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=fresh) as http:

            async def scrape() -> float:
                text = (await http.get("/metrics", headers={"authorization": "Bearer k"})).text
                match = health.search(text)
                return float(match.group(1)) if match else 0.0

            before = await scrape()
            for _ in range(40):
                assert (await http.get("/health")).status_code == 200
            after = [await scrape() for _ in range(6)]
    # Before: each scrape showed one worker's counters (about half, and never the same twice).
    assert after == [before + 40] * 6


async def test_workers_go_when_serve_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, ["k"])
    env = clean_env(OPENROUTER_CONFIG=str(config))
    async with process("serve", "--port", "0", "--workers", "2", env=env) as proc:
        url = await listening(proc)
        proc.kill()  # no chance to stop its workers
        await proc.wait()
        port = int(url.rsplit(":", 1)[1])
        for _ in range(250):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
            except OSError:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the workers still answer after serve was killed")


SAN = "subjectAltName=IP:127.0.0.1"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", *curve, *files, "-subj", "/CN=127.0.0.1", "-addext", SAN],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_serve_terminates_tls_for_the_openai_client(
    tmp_path: Path, sim_server: Callable[..., Any]
) -> None:
    node = await sim_server(dialect="openai", models=[MODEL])
    cert, key = self_signed(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[api]\napi_keys = ["k"]\ntls_certfile = "{cert}"\ntls_keyfile = "{key}"\n\n'
        f'[[nodes]]\nname = "n1"\nurl = "{node.url}"\ntype = "openai_compatible"\n'
        f'models = ["{MODEL}"]\n\n[[models]]\nid = "{MODEL}"\n'
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    async with process(
        "serve", "--port", "0", "--workers", "2", env=clean_env(OPENROUTER_CONFIG=str(config))
    ) as proc:
        url = await listening(proc, "https", trusted)
        async with (
            httpx.AsyncClient(verify=trusted) as http,
            openai.AsyncOpenAI(
                base_url=f"{url}/v1", api_key="k", max_retries=0, http_client=http
            ) as client,
        ):
            answer = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hello!"}]
            )
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(url.replace("https:", "http:") + "/health")
        async with httpx.AsyncClient() as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"{url}/health")
    assert answer.choices[0].message.content


CADDYFILE = Path(__file__).resolve().parents[2] / "Caddyfile"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_caddy_edge_serves_the_openai_client_over_https(
    tmp_path: Path, sim_server: Callable[..., Any]
) -> None:
    caddy = shutil.which("caddy")
    assert caddy, "caddy is not installed (apt-get install caddy)"
    node = await sim_server(dialect="openai", models=[MODEL])
    config = tmp_path / "config.toml"
    write_config(config, ["k"])
    config.write_text(config.read_text().replace("http://127.0.0.1:9", node.url))
    env = clean_env(OPENROUTER_CONFIG=str(config))
    async with process("serve", "--port", "0", env=env) as api:
        upstream = (await listening(api)).removeprefix("http://")
        edge = f"127.0.0.1:{free_port()}"
        edge_env = {
            **clean_env(),
            "PROVIDER_DOMAIN": edge,  # an IP address: Caddy's own CA signs it (tls internal)
            "PROVIDER_UPSTREAM": upstream,
            "CADDY_ADMIN": "off",
            "CADDY_HTTP_PORT": str(free_port()),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
        quiet = asyncio.subprocess.DEVNULL
        argv = [caddy, "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)]
        proxy = await asyncio.create_subprocess_exec(
            *argv, env=edge_env, stdout=quiet, stderr=quiet
        )
        try:
            root = tmp_path / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
            for _ in range(500):
                if root.exists():
                    break
                await asyncio.sleep(0.02)
            trusted = ssl.create_default_context(cafile=str(root))
            url = f"https://{edge}"
            async with httpx.AsyncClient(verify=trusted, timeout=10) as http:
                for _ in range(500):
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{url}/ready")).status_code != 502:
                            break
                    await asyncio.sleep(0.02)
                # Through the edge, an oversized body still gets the API's own 413.
                big = await http.post(
                    f"{url}/v1/chat/completions",
                    content=b"x" * (9 * 1024 * 1024),
                    headers={"authorization": "Bearer k"},
                )
                async with openai.AsyncOpenAI(
                    base_url=f"{url}/v1", api_key="k", max_retries=0, http_client=http
                ) as client:
                    answer = await client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "Hello!"}]
                    )
        finally:
            proxy.terminate()
            await proxy.wait()
    assert answer.choices[0].message.content
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"


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
    window = model["input_modalities"][0]["supported_inputs"]["max_context_length"]
    assert window["value"] == 2048  # discovered from the node, below the configured 8192
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
