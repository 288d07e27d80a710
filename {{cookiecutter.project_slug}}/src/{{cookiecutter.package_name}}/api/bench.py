"""`bench overhead`: what the provider adds over a node, beside nginx and LiteLLM's proxy.

The same load goes straight to a simulated node and through each proxy, on
this machine, in one run.  The node, each proxy and the load generator are
separate processes; proxies are pinned to CPU 0, the node and the load
generator to CPU 1 (when there are two), so the proxy under test never
competes with the load for a core.  The load generator is aiohttp on uvloop.

Rows whose software is missing are skipped with a note: nginx comes from the
`nginx` package (`apt-get install -y nginx`), LiteLLM from `pip install
'litellm[proxy]'`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

PACKAGE = __name__.split(".")[0]
UPSTREAM = "bench-model"
LISTED = "bench/model"
KEY = "sk-bench"
SMALL_TOKENS = 16  # a small non-streamed answer
STREAM_TOKENS = 100  # one chunk per token
LATENCY_C = (1, 64)
STREAM_C = 16


@dataclass
class Target:
    name: str
    url: str
    model: str
    headers: dict[str, str]


# --- the load generator (runs in its own process) ------------------------------


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _drive(
    session: aiohttp.ClientSession,
    target: dict[str, Any],
    *,
    stream: bool,
    concurrency: int,
    duration: float,
) -> tuple[list[float], dict[str, int], float]:
    """Latencies (s), failures by reason and elapsed time: `concurrency` loops for `duration`."""
    body = json.dumps(
        {
            "model": target["model"],
            "messages": [{"role": "user", "content": "Say something short."}],
            "max_tokens": STREAM_TOKENS if stream else SMALL_TOKENS,
            "stream": stream,
        }
    ).encode()
    headers = {"content-type": "application/json", **target["headers"]}
    url = target["url"] + "/v1/chat/completions"
    latencies: list[float] = []
    failures: dict[str, int] = {}
    start = time.perf_counter()
    stop = start + duration

    async def loop() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    tail = b""
                    async for data in response.content.iter_any():
                        tail = (tail + data)[-64:]
                    ok = response.status == 200 and (not stream or b"[DONE]" in tail)
                    why = f"HTTP {response.status}" if response.status != 200 else "no [DONE]"
            except aiohttp.ClientError as error:
                ok, why = False, type(error).__name__
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                failures[why] = failures.get(why, 0) + 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - start


async def _load(target: dict[str, Any], duration: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=connector) as session:
        await _drive(session, target, stream=False, concurrency=8, duration=0.5)  # warm-up
        for concurrency in LATENCY_C:
            latencies, failures, elapsed = await _drive(
                session, target, stream=False, concurrency=concurrency, duration=duration
            )
            result[f"c{concurrency}"] = {
                "p50": _percentile(latencies, 0.5) if latencies else None,
                "p99": _percentile(latencies, 0.99) if latencies else None,
                "rps": len(latencies) / elapsed,
                "failures": failures,
            }
        latencies, failures, elapsed = await _drive(
            session, target, stream=True, concurrency=STREAM_C, duration=duration
        )
        result["streams"] = {"per_s": len(latencies) / elapsed, "failures": failures}
    return result


def _load_main(spec: str) -> int:
    options = json.loads(spec)
    result = uvloop.run(_load(options["target"], options["duration"]))
    print(json.dumps(result))
    return 0


# --- processes --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pinned(cpu: int) -> Callable[[], None]:
    cpus = os.sched_getaffinity(0)

    def pin() -> None:
        if len(cpus) > 1 and cpu in cpus:
            os.sched_setaffinity(0, {cpu})

    return pin


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not up after {timeout:.0f} s")


@contextlib.contextmanager
def _process(
    argv: list[str], *, cpu: int, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(  # noqa: S603 - our own argv
        argv,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pinned(cpu),
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _sim(port: int) -> list[str]:
    """The simulated node on uvicorn's own socket and loop, like any server process."""
    config = {
        "dialect": "openai",
        "models": [UPSTREAM],
        "max_concurrency": 4096,
        "output_tokens": STREAM_TOKENS,
        "context_length": 8192,
    }
    script = (
        "import sys, json, uvicorn\n"
        f"from {PACKAGE}.sim import SimConfig, create_app\n"
        "app = create_app(SimConfig(**json.loads(sys.argv[1])))\n"
        "uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), log_level='warning',"
        " access_log=False)\n"
    )
    return [sys.executable, "-c", script, json.dumps(config), str(port)]


def _provider_config(sim_url: str) -> str:
    return f"""
[api]
api_keys = ["{KEY}"]

[load_balancer]
max_retries = 0
max_queue = 4096
health_check_interval_s = 30

[[nodes]]
name = "sim"
url = "{sim_url}"
type = "openai_compatible"
max_concurrency = 4096
models = [{{ id = "{LISTED}", backend_model = "{UPSTREAM}" }}]

[[models]]
id = "{LISTED}"
"""


def _nginx_config(prefix: Path, port: int, sim_port: int) -> str:
    return f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def _litellm_config(sim_url: str) -> str:
    return f"""
model_list:
  - model_name: {LISTED}
    litellm_params:
      model: openai/{UPSTREAM}
      api_base: {sim_url}/v1
      api_key: none
litellm_settings:
  drop_params: true
general_settings:
  master_key: {KEY}
"""


def _measure(target: Target, duration: float) -> dict[str, Any]:
    spec = json.dumps({"target": target.__dict__, "duration": duration})
    argv = [sys.executable, "-m", PACKAGE, "bench", "overhead", "--load", spec]
    done = subprocess.run(  # noqa: S603 - our own argv
        argv,
        capture_output=True,
        check=True,
        preexec_fn=_pinned(1),
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the report ------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _added(row: dict[str, Any], base: dict[str, Any], key: str, stat: str) -> float | None:
    if row[key][stat] is None or base[key][stat] is None:
        return None
    return float(row[key][stat] - base[key][stat])


def _table(results: dict[str, dict[str, Any]]) -> list[str]:
    base = results["direct to the node"]
    lines = [
        "| path | p50 c=1 (ms) | added p50 c=1 | added p99 c=1 | added p50 c=64 "
        "| added p99 c=64 | req/s c=64 | 100-chunk streams/s c=16 | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        direct = row is base
        cells = [
            name,
            _ms(row["c1"]["p50"]),
            "-" if direct else _ms(_added(row, base, "c1", "p50")),
            "-" if direct else _ms(_added(row, base, "c1", "p99")),
            "-" if direct else _ms(_added(row, base, "c64", "p50")),
            "-" if direct else _ms(_added(row, base, "c64", "p99")),
            f"{row['c64']['rps']:.0f}",
            f"{row['streams']['per_s']:.0f}",
            str(sum(sum(row[phase]["failures"].values()) for phase in ("c1", "c64", "streams"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    ours = results.get("this provider")
    if ours is None:
        return []
    base = results["direct to the node"]
    added = _added(ours, base, "c1", "p50") or 0.0
    lines = [
        f"- added p50 at c=1 under 1 ms: {'yes' if added < 0.001 else 'no'} ({added * 1000:.2f} ms)"
    ]
    nginx = results.get("nginx (1 worker)")
    if nginx is not None:
        rps = ours["c64"]["rps"] / nginx["c64"]["rps"]
        streams = ours["streams"]["per_s"] / nginx["streams"]["per_s"]
        lines.append(
            f"- req/s at least half of nginx's: {'yes' if rps >= 0.5 else 'no'} ({rps:.0%})"
        )
        lines.append(
            f"- streams/s at least 90% of nginx's: {'yes' if streams >= 0.9 else 'no'} "
            f"({streams:.0%})"
        )
    litellm = results.get("LiteLLM proxy (1 worker)")
    if litellm is not None:
        ahead = [
            _better(_added(ours, base, key, stat), _added(litellm, base, key, stat))
            for key in ("c1", "c64")
            for stat in ("p50", "p99")
        ] + [
            ours["c64"]["rps"] >= litellm["c64"]["rps"],
            ours["streams"]["per_s"] >= litellm["streams"]["per_s"],
        ]
        lines.append(f"- ahead of LiteLLM on every column: {'yes' if all(ahead) else 'no'}")
    return lines


def _better(ours: float | None, theirs: float | None) -> bool:
    """Lower added latency; a path with no successful request at all loses."""
    return ours is not None and (theirs is None or ours <= theirs)


def _litellm_binary() -> str | None:
    beside = Path(sys.executable).with_name("litellm")
    return str(beside) if beside.exists() else shutil.which("litellm")


def run(duration: float, litellm: str | None) -> int:
    notes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        sim_port = _free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim = stack.enter_context(_process(_sim(sim_port), cpu=1))
        _wait_until_up(f"{sim_url}/v1/models", sim, 30)
        targets = [Target("direct to the node", sim_url, UPSTREAM, {})]

        config = work / "provider.toml"
        config.write_text(_provider_config(sim_url))
        port = _free_port()
        provider = stack.enter_context(
            _process(
                [sys.executable, "-m", PACKAGE, "serve", "--port", str(port)],
                cpu=0,
                env={"OPENROUTER_CONFIG": str(config)},
            )
        )
        _wait_until_up(f"http://127.0.0.1:{port}/health", provider, 30)
        auth = {"authorization": f"Bearer {KEY}"}  # both proxies check a key; nginx does not
        targets.append(Target("this provider", f"http://127.0.0.1:{port}", LISTED, auth))

        nginx = shutil.which("nginx")
        if nginx is None:
            notes.append("nginx row skipped: nginx is not installed (apt-get install -y nginx)")
        else:
            port = _free_port()
            (work / "nginx.conf").write_text(_nginx_config(work, port, sim_port))
            process = stack.enter_context(
                _process(
                    [
                        nginx,
                        "-p",
                        str(work),
                        "-e",
                        str(work / "error.log"),
                        "-c",
                        str(work / "nginx.conf"),
                        "-g",
                        "daemon off;",
                    ],
                    cpu=0,
                )
            )
            _wait_until_up(f"http://127.0.0.1:{port}/v1/models", process, 15)
            targets.append(Target("nginx (1 worker)", f"http://127.0.0.1:{port}", UPSTREAM, {}))

        explicit = litellm is not None
        litellm = litellm or _litellm_binary()
        if litellm is None:
            notes.append("LiteLLM row skipped: not installed (pip install 'litellm[proxy]')")
        else:
            port = _free_port()
            (work / "litellm.yaml").write_text(_litellm_config(sim_url))
            process = stack.enter_context(
                _process(
                    [
                        litellm,
                        "--config",
                        str(work / "litellm.yaml"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--num_workers",
                        "1",
                    ],
                    cpu=0,
                    cwd=work,
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                )
            )
            try:
                _wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", process, 90)
                targets.append(
                    Target("LiteLLM proxy (1 worker)", f"http://127.0.0.1:{port}", LISTED, auth)
                )
            except RuntimeError as error:
                if explicit:
                    raise RuntimeError(f"LiteLLM ({litellm}) did not start: {error}") from None
                notes.append(
                    f"LiteLLM row skipped: it did not start ({error}); its proxy needs "
                    "pip install 'litellm[proxy]' (point --litellm at that install's litellm)"
                )

        for target in targets:
            print(f"measuring {target.name} ...", file=sys.stderr, flush=True)
            results[target.name] = _measure(target, duration)

    cpus = len(os.sched_getaffinity(0))
    print(f"Overhead on this machine ({cpus} CPUs; proxies on CPU 0, node and load on CPU 1); ")
    print(f"each phase runs {duration:g} s; non-streamed answers are {SMALL_TOKENS} tokens.\n")
    print("\n".join(_table(results)))
    print()
    for name, row in results.items():
        for phase in ("c1", "c64", "streams"):
            for why, count in row[phase]["failures"].items():
                notes.append(f"{name}: {count} failed requests ({why}) in phase {phase}")
    print("\n".join(_verdicts(results) + [f"- {note}" for note in notes]))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase (default 4)")
    parser.add_argument(
        "--litellm", metavar="PATH", help="LiteLLM's CLI (default: beside this Python, or on PATH)"
    )
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: run as the load generator
    args = parser.parse_args(argv)
    if args.load:
        return _load_main(args.load)
    if args.litellm and not os.access(args.litellm, os.X_OK):
        print(f"bench overhead: --litellm {args.litellm}: not an executable file", file=sys.stderr)
        return 2
    return run(args.duration, args.litellm)
