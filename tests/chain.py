"""A fresh anvil with tnt-core's local testnet replayed, for the generated Tangle tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import REPO, tail

ANVIL_FLAGS = ["--code-size-limit", "1000000", "--disable-block-gas-limit", "--quiet"]
INSTALL_HINT = "npm install --prefix .tools @foundry-rs/anvil@1.7.1"


def find_anvil() -> str | None:
    """$ANVIL, else the npm-installed binary in .tools (as .ci/run installs it), else PATH."""
    for candidate in (
        os.environ.get("ANVIL"),
        str(REPO / ".tools" / "node_modules" / ".bin" / "anvil"),
        shutil.which("anvil"),
    ):
        if candidate and Path(candidate).is_file():
            return str(_native(Path(candidate)))
    return None


def _native(anvil: Path) -> Path:
    """npm's anvil is a node launcher that spawns the platform binary; run that binary
    directly so that stopping the process stops anvil itself."""
    scope = anvil.resolve().parent.parent  # node_modules/@foundry-rs/anvil/bin.mjs -> @foundry-rs
    for candidate in sorted(scope.glob("anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return candidate
    return anvil


def find_kit() -> Path | None:
    """The Tangle kit (replay.py + broadcast): $TANGLE_KIT_DIR, else ../shared/tangle."""
    kit = Path(os.environ.get("TANGLE_KIT_DIR", REPO.parent / "shared" / "tangle"))
    return kit if (kit / "replay.py").is_file() else None


def missing_reason() -> str | None:
    """Why the chain cannot start here, or None when it can."""
    if find_anvil() is None:
        return f"anvil not found (set $ANVIL or run `{INSTALL_HINT}` in the repo)"
    if find_kit() is None:
        return "the Tangle kit is absent (set $TANGLE_KIT_DIR or put shared/tangle beside the repo)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return "result" in json.load(response)
    except OSError:
        return False


@contextmanager
def tangle_chain() -> Iterator[str]:
    """Start anvil on a free port, replay the deployment, yield its RPC URL, stop it."""
    anvil, kit = find_anvil(), find_kit()
    assert anvil is not None and kit is not None, missing_reason()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [anvil, "--port", str(port), *ANVIL_FLAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"anvil did not start on port {port}: {error}")
            time.sleep(0.1)
        replay = subprocess.run(
            [sys.executable, str(kit / "replay.py"), "--rpc", url],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if replay.returncode != 0:
            raise RuntimeError(f"replay failed: {tail(replay.stdout + replay.stderr)}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
