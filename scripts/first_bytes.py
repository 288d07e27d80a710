"""Time to first byte and to a 429, through `serve` over one `sim` node of a bake.

usage: python scripts/first_bytes.py BAKE/openrouter-provider [package_name]
The node answers after 3 s and holds 500 tokens at 50 a second; the provider gives it one
slot.  Prints a Markdown table of medians over 5 runs (time to headers, to the first body
byte, to the first token, and to the 429 of a request made while the slot is held).
"""

import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import httpx

BAKE = sys.argv[1]
PY = sys.executable
PACKAGE = sys.argv[2] if len(sys.argv) > 2 else "openrouter_provider"
ENV = {**os.environ, "PYTHONPATH": f"{BAKE}/src"}
TTFT = 3.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        PY,
        "-m",
        PACKAGE,
        *args,
        env=ENV,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def wait_up(url: str) -> None:
    async with httpx.AsyncClient() as c:
        for _ in range(300):
            try:
                await c.get(url)
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise RuntimeError(url)


async def main() -> None:
    sim_port, api_port = free_port(), free_port()
    sim = await start(
        "sim",
        "--dialect",
        "openai",
        "--port",
        str(sim_port),
        "--model",
        "m",
        "--ttft",
        str(TTFT),
        "--tps",
        "50",
        "--output-tokens",
        "500",
    )
    cfg = {
        "api": {"api_keys": ["k"], "port": api_port},
        "load_balancer": {"max_retries": 0},
        "nodes": [
            {
                "name": "n",
                "url": f"http://127.0.0.1:{sim_port}",
                "type": "openai_compatible",
                "max_concurrency": 1,
                "models": ["m"],
            }
        ],
        "models": [{"id": "m"}],
    }
    path = tempfile.mktemp(suffix=".json")
    open(path, "w").write(json.dumps(cfg))
    api = await start("serve", "--config", path, "--port", str(api_port))
    base = f"http://127.0.0.1:{api_port}"
    try:
        await wait_up(f"http://127.0.0.1:{sim_port}/v1/models")
        await wait_up(base + "/health")
        await asyncio.sleep(1)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        h = {"authorization": "Bearer k"}
        rows = {"headers": [], "first byte": [], "first token": [], "429 (node busy)": []}
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            for _ in range(5):
                t0 = time.perf_counter()
                async with c.stream("POST", "/v1/chat/completions", json=body, headers=h) as r:
                    rows["headers"].append(time.perf_counter() - t0)
                    first = None
                    async for chunk in r.aiter_raw():
                        if first is None:
                            first = time.perf_counter() - t0
                            rows["first byte"].append(first)
                        if b"data: {" in chunk:
                            rows["first token"].append(time.perf_counter() - t0)
                            break
                # saturate the one slot, then time the refusal
                for _ in range(100):  # the stream closed above frees its slot asynchronously
                    busy_cm = c.stream("POST", "/v1/chat/completions", json=body, headers=h)
                    busy = await busy_cm.__aenter__()
                    if busy.status_code == 200:
                        break
                    await busy_cm.__aexit__(None, None, None)
                    await asyncio.sleep(0.2)
                try:
                    await asyncio.sleep(0.3)
                    t0 = time.perf_counter()
                    r2 = await c.post(
                        "/v1/chat/completions", json={**body, "stream": False}, headers=h
                    )
                    rows["429 (node busy)"].append(time.perf_counter() - t0)
                    assert r2.status_code == 429, (
                        r2.status_code,
                        busy.status_code,
                        time.perf_counter() - t0,
                        r2.text[:300],
                    )
                finally:
                    await busy_cm.__aexit__(None, None, None)
                await asyncio.sleep(0.2)
        print(f"| through serve, node TTFT {TTFT:g} s | median of 5 (s) |\n|---|---:|")
        for k, v in rows.items():
            print(f"| {k} | {statistics.median(v):.3f} |")
    finally:
        for p in (api, sim):
            p.terminate()
            await p.wait()


asyncio.run(main())
