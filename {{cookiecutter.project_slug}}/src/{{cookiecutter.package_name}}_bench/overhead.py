"""`bench overhead`: what the provider adds over a node, beside nginx, a bare proxy and LiteLLM.

The same load goes straight to a node and through each proxy, on this
machine, in one run.  The node (`overhead_node`: canned answers on raw sockets)
is many times faster than any proxy here, so each proxy row shows that
proxy's own limit.  The node, each proxy and the load generator
(`overhead_load`, raw sockets too) are separate processes; each proxy is pinned
to CPU 0, the node and the load to CPU 1 (when there are two), so the proxy
under test never competes with the load for a core.  The "direct to the
node" row is the ceiling of the node and the load together.

Rows whose software is missing are skipped with a one-line note: nginx comes
from Debian's `nginx-light` (or `nginx`) package, LiteLLM from
`pip install 'litellm[proxy]'` (best in a virtualenv of its own: `--litellm PATH`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
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

PACKAGE = "{{ cookiecutter.package_name }}"  # the product
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies
UPSTREAM = "bench-model"
LISTED = "bench/model"
KEY = "sk-bench"
SMALL_TOKENS = 16  # a small non-streamed answer
STREAM_TOKENS = 100  # one chunk per token
LATENCY_C = (1, 64)
STREAM_C = 16
NGINX = "nginx (1 worker)"
LITELLM = "LiteLLM proxy (1 worker)"
BARE = "bare proxy (Starlette + aiohttp)"


@dataclass
class Target:
    name: str
    url: str
    model: str
    headers: dict[str, str]
    pid: int | None = None  # the proxy's process, whose CPU time is counted


# --- processes --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pinned(cpu: int) -> Callable[[], None]:
    """Run the child on `cpu`, and end it with this process: a benchmark killed from
    outside (a test's timeout, kill -9) must not leave a node or a proxy running."""
    cpus = os.sched_getaffinity(0)

    def pin() -> None:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
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


def _node(port: int, sends: int) -> list[str]:
    return [sys.executable, "-m", f"{__package__}.overhead_node", str(port), UPSTREAM, str(sends)]


def _passthrough(port: int, node_url: str) -> list[str]:
    return [sys.executable, "-m", f"{__package__}.overhead_proxy", str(port), node_url]


{% raw %}def _provider_config(node_url: str) -> str:
    return f"""
[api]
api_keys = ["{KEY}"]

[load_balancer]
max_retries = 0
max_queue = 4096
health_check_interval_s = 30

[[nodes]]
name = "node"
url = "{node_url}"
type = "openai_compatible"
max_concurrency = 4096
models = [{{ id = "{LISTED}", backend_model = "{UPSTREAM}" }}]

[[models]]
id = "{LISTED}"
"""


def _nginx_config(prefix: Path, port: int, node_port: int) -> str:
    return f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    upstream node {{
        server 127.0.0.1:{node_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def _litellm_config(node_url: str) -> str:
    return f"""
model_list:
  - model_name: {LISTED}
    litellm_params:
      model: openai/{UPSTREAM}
      api_base: {node_url}/v1
      api_key: none
litellm_settings:
  drop_params: true
general_settings:
  master_key: {KEY}
"""


{% endraw %}def _measure(target: Target, duration: float) -> dict[str, Any]:
    """Warm up, then each phase in turn, in a load process of its own on CPU 1."""
    small = {"stream": False, "max_tokens": SMALL_TOKENS}
    phases: dict[str, dict[str, Any]] = {
        "warm-up": {**small, "concurrency": 8, "duration": min(duration, 0.5)},
        **{f"c{c}": {**small, "concurrency": c, "duration": duration} for c in LATENCY_C},
        "streams": {
            "stream": True,
            "max_tokens": STREAM_TOKENS,
            "concurrency": STREAM_C,
            "duration": duration,
        },
    }
    spec = {
        "target": {"url": target.url, "model": target.model, "headers": target.headers},
        "pid": target.pid,
        "phases": phases,
    }
    argv = [sys.executable, "-m", f"{__package__}.overhead_load", json.dumps(spec)]
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
    nginx = results.get(NGINX)
    lines = [
        "| path | p50 c=1 (ms) | added p50 c=1 | added p99 c=1 | added p50 c=64 "
        "| added p99 c=64 | req/s c=64 | x nginx | CPU us/req | 100-chunk streams/s c=16 "
        "| x nginx | CPU us/stream | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        direct = row is base
        rps, streams = row["c64"]["per_s"], row["streams"]["per_s"]
        cells = [
            name,
            _ms(row["c1"]["p50"]),
            "-" if direct else _ms(_added(row, base, "c1", "p50")),
            "-" if direct else _ms(_added(row, base, "c1", "p99")),
            "-" if direct else _ms(_added(row, base, "c64", "p50")),
            "-" if direct else _ms(_added(row, base, "c64", "p99")),
            f"{rps:.0f}",
            _ratio(rps, nginx["c64"]["per_s"] if nginx else None),
            _us(row["c64"]["cpu_us"]),
            f"{streams:.0f}",
            _ratio(streams, nginx["streams"]["per_s"] if nginx else None),
            _us(row["streams"]["cpu_us"]),
            str(sum(sum(row[phase]["failures"].values()) for phase in ("c1", "c64", "streams"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float, nginx: float | None) -> str:
    return "-" if not nginx else f"{value / nginx:.2f}"


def _verdicts(results: dict[str, dict[str, Any]]) -> list[str]:
    ours = results.get("this provider")
    if ours is None:
        return []
    base = results["direct to the node"]
    added = _added(ours, base, "c1", "p50") or 0.0
    lines = [
        f"- added p50 at c=1 at most 0.5 ms: {'yes' if added <= 0.0005 else 'no'} "
        f"({added * 1000:.2f} ms)"
    ]
    nginx = results.get(NGINX)
    if nginx is not None:
        rps = ours["c64"]["per_s"] / nginx["c64"]["per_s"]
        streams = ours["streams"]["per_s"] / nginx["streams"]["per_s"]
        lines.append(
            f"- req/s at least half of nginx's: {'yes' if rps >= 0.5 else 'no'} ({rps:.0%})"
        )
        lines.append(
            f"- streams/s at least 90% of nginx's: {'yes' if streams >= 0.9 else 'no'} "
            f"({streams:.0%})"
        )
    litellm = results.get(LITELLM)
    if litellm is not None:
        ahead = [
            _better(_added(ours, base, key, stat), _added(litellm, base, key, stat))
            for key in ("c1", "c64")
            for stat in ("p50", "p99")
        ] + [
            ours["c64"]["per_s"] >= litellm["c64"]["per_s"],
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


def _nginx_binary() -> str | None:
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def run(duration: float, litellm: str | None, compare: list[str], sends: int) -> int:
    notes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        node_port = _free_port()
        node_url = f"http://127.0.0.1:{node_port}"
        node = stack.enter_context(_process(_node(node_port, sends), cpu=1))
        _wait_until_up(f"{node_url}/v1/models", node, 30)
        targets = [Target("direct to the node", node_url, UPSTREAM, {})]

        config = work / "provider.toml"
        config.write_text(_provider_config(node_url))
        auth = {"authorization": f"Bearer {KEY}"}  # the provider and LiteLLM check a key
        providers: list[tuple[str, str | None]] = [("this provider", None)]
        for spec in compare:
            label, _, path = spec.rpartition("=")
            providers.append((label or f"provider from {path}", path))
        for name, src in providers:
            port = _free_port()
            env = {"OPENROUTER_CONFIG": str(config)}
            if src is not None:
                env["PYTHONPATH"] = src
            process = stack.enter_context(
                _process(
                    [sys.executable, "-m", PACKAGE, "serve", "--port", str(port)], cpu=0, env=env
                )
            )
            _wait_until_up(f"http://127.0.0.1:{port}/health", process, 30)
            targets.append(Target(name, f"http://127.0.0.1:{port}", LISTED, auth, process.pid))

        port = _free_port()
        process = stack.enter_context(_process(_passthrough(port, node_url), cpu=0))
        _wait_until_up(f"http://127.0.0.1:{port}/v1/models", process, 30)
        targets.append(Target(BARE, f"http://127.0.0.1:{port}", UPSTREAM, {}, process.pid))

        nginx = _nginx_binary()
        if nginx is None:
            notes.append(
                "nginx row skipped: nginx is not installed (apt-get install -y nginx-light)"
            )
        else:
            port = _free_port()
            (work / "nginx.conf").write_text(_nginx_config(work, port, node_port))
            argv = [nginx, "-p", str(work), "-e", str(work / "error.log")]
            argv += ["-c", str(work / "nginx.conf"), "-g", "daemon off;"]
            process = stack.enter_context(_process(argv, cpu=0))
            _wait_until_up(f"http://127.0.0.1:{port}/v1/models", process, 15)
            targets.append(Target(NGINX, f"http://127.0.0.1:{port}", UPSTREAM, {}, process.pid))

        explicit = litellm is not None
        litellm = litellm or _litellm_binary()
        if litellm is None:
            notes.append("LiteLLM row skipped: not installed (pip install 'litellm[proxy]')")
        else:
            port = _free_port()
            (work / "litellm.yaml").write_text(_litellm_config(node_url))
            argv = [litellm, "--config", str(work / "litellm.yaml"), "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--num_workers", "1"]
            process = stack.enter_context(
                _process(
                    argv,
                    cpu=0,
                    cwd=work,
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                )
            )
            try:
                _wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", process, 90)
                targets.append(
                    Target(LITELLM, f"http://127.0.0.1:{port}", LISTED, auth, process.pid)
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
    print(
        f"each phase runs {duration:g} s; non-streamed answers are {SMALL_TOKENS} tokens; "
        f"the node writes each stream in {sends} send(s). CPU columns: the proxy's own CPU "
        "time per answer (user + system), which other load on the machine does not inflate.\n"
    )
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
    parser.add_argument(
        "--compare",
        metavar="[LABEL=]SRC",
        action="append",
        default=[],
        help="also measure the provider whose package is in SRC (a src/ directory, e.g. of an "
        "earlier commit's bake), in a row named LABEL; repeatable",
    )
    parser.add_argument(
        "--stream-sends",
        type=int,
        default=1,
        metavar="N",
        help="socket writes per 100-chunk stream at the node (default 1; 102 is one per event)",
    )
    args = parser.parse_args(argv)
    # Checked before any process starts: zero would end in a division by zero at the end.
    if args.duration <= 0:
        parser.error("--duration must be greater than 0")
    if args.stream_sends < 1:
        parser.error("--stream-sends must be at least 1")
    for spec in args.compare:
        # Without the package there, the row would measure this install under another name.
        src = Path(spec.rpartition("=")[2])
        if not (src / PACKAGE / "__init__.py").is_file():
            parser.error(f"--compare {spec}: no {PACKAGE} package in {src}")
    if args.litellm and not os.access(args.litellm, os.X_OK):
        print(f"bench overhead: --litellm {args.litellm}: not an executable file", file=sys.stderr)
        return 2
    return run(args.duration, args.litellm, args.compare, args.stream_sends)
