"""Start real LLM servers for the contract suite: vLLM (CPU build) and llama.cpp's llama-server.

`.ci/real-servers` installs both once per machine and prints where they are
(REAL_VLLM_PYTHON, REAL_LLAMA_SERVER); `real_models.py` writes the tiny model
they serve.  Each server runs on a free port on 127.0.0.1 with an API key, small
limits (two sequences, and for vLLM one request queued beyond them: the machine
is shared) and the same context length, and is stopped with its whole process
group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

# What the generated suite's real cases expect of these servers (tests/backends/conftest.py).
CONTEXT = 1024
API_KEY = "real-server-key"
MODEL = "tiny"
# vLLM loads in about 70 s on an idle 2-core machine; allow for a busy one.
START_TIMEOUT_S = 600.0


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def installed() -> dict[str, str]:
    """Run the installer (a few seconds once cached) and read the paths it prints."""
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "real-servers")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f".ci/real-servers failed:\n{done.stderr[-3000:]}"
    paths = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return {key: value for key, value in paths.items() if key.startswith("REAL_")}


def make_models(python: str, folder: Path) -> None:
    done = subprocess.run(
        [python, str(REPO / "tests" / "real_models.py"), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"writing the tiny models failed:\n{done.stderr[-3000:]}"


def _start(name: str, command: list[str], env: dict[str, str], logs: Path, url: str) -> Server:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group, stopped as one
        )
    return Server(name, url, process, log)


def vllm(python: str, model: Path, logs: Path, *, pooling: bool = False) -> Server:
    port = free_port()
    command = [
        str(Path(python).parent / "vllm"),
        "serve",
        str(model),
        "--served-model-name",
        MODEL,
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        str(CONTEXT),
        "--max-num-seqs",
        "2",
        # Caps running and waiting requests together: two running, one queued.
        "--max-num-queued-reqs",
        "3",
        "--api-key",
        API_KEY,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if pooling:
        command += ["--runner", "pooling", "--convert", "embed"]
    else:
        # A named or required tool_choice needs a parser set; the forced call itself is
        # structured output, which even a random model follows.
        command += ["--enable-auto-tool-choice", "--tool-call-parser", "pythonic"]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    name = "vllm-pooling" if pooling else "vllm"
    return _start(name, command, env, logs, f"http://127.0.0.1:{port}")


def llama_server(binary: str, model: Path, logs: Path, *, embeddings: bool = False) -> Server:
    port = free_port()
    command = [
        binary,
        "-m",
        str(model),
        "--alias",
        MODEL,
        # Two slots of CONTEXT tokens each.
        "-c",
        str(2 * CONTEXT),
        "-np",
        "2",
        "-t",
        "1",
        "--metrics",
        "--jinja",
        "--api-key",
        API_KEY,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if embeddings:
        command += ["--embeddings", "--pooling", "mean"]
    name = "llamacpp-embeddings" if embeddings else "llamacpp"
    return _start(name, command, {}, logs, f"http://127.0.0.1:{port}")


def wait_ready(server: Server, deadline: float) -> None:
    """/health answers 200 (both servers keep it open with an API key)."""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"{server.name} exited with {server.process.returncode}:\n"
                + server.log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise AssertionError(
        f"{server.name} was not ready in {START_TIMEOUT_S:g} s:\n"
        + server.log.read_text(errors="replace")[-3000:]
    )


def stop(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Wait until every server is ready; stop them all on the way out, however it ends."""
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for server in servers:
            wait_ready(server, deadline)
        yield servers
    finally:
        for server in servers:
            stop(server)
