"""The alerts and the dashboard on a real Prometheus (Debian's `prometheus` package).

One provider runs in this process as `run` does: jobs from the chain and the HTTP API, four
simulated nodes, Redis for the leader lease. Prometheus scrapes its /metrics every second and
evaluates a copy of deploy/prometheus/alerts.yaml whose `for:` durations are 2 s and whose
latency, lag and unmined-age thresholds are small; the faults are real: a node killed, a node
that fails, a queue filled, the base fee above the cap, blocks stopped, the wallet drained,
the service ended under a job (its result refused), Redis killed. Each alert must go pending
and then firing through Prometheus's own HTTP API, none may fire before its fault, and every
dashboard query must return data. The table of how long each alert took is printed (pytest -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.tangle.abi import Function
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}.tangle.cli import submit_job
from {{ cookiecutter.package_name }}.tangle.consumer import Outcome
from {{ cookiecutter.package_name }}.tangle.fees import GWEI
from {{ cookiecutter.package_name }}.tangle.runner import JobRunner, serve_jobs
from {{ cookiecutter.package_name }}_sim import SimHandle

from .conftest import MODEL, OPERATOR, OPERATOR_KEY, SimFactory, anvil, free_port, local_tangle
from .test_faults import CHAT, pool

EXPECTED = {
    **dict.fromkeys(
        [
            "ProviderModelUnavailable",
            "ProviderNodeDown",
            "ProviderErrorRatioHigh",
            "ProviderRateLimited",
            "ProviderLatencyHigh",
        ],
        "node killed, node failing, queue full",
    ),
    "TangleWaitingOnFeeCap": "base fee above the cap",
    "TangleRunnerBehind": "base fee above the cap",
    "TangleTransactionStuck": "blocks stopped",
    "TangleWalletLow": "wallet drained",
    "TangleResultsFailing": "service ended",
    "ClusterRedisUnreachable": "Redis killed",
    "TangleNoLeader": "Redis killed",
}
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Small enough for a test to cross in seconds; the rest keep their defaults.
TERMINATE_SERVICE = Function("terminateService(uint64)")
THRESHOLDS = {"p99_seconds": 1, "lag_blocks": 5, "unmined_seconds": 3}


def fast_rules(path: Path) -> list[str]:
    """alerts.yaml with `for: 2s` and the small thresholds; the alert names."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "2s"
                names.append(rule["alert"])
            elif (name := rule["record"].rsplit(":", 1)[-1]) in THRESHOLDS:
                rule["expr"] = f"vector({THRESHOLDS[name]})"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    return names


class Prometheus:
    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (Debian/Ubuntu: apt-get install prometheus)")
        self.alert_names = fast_rules(directory / "alerts.yaml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yaml"],
            "scrape_configs": [{"job_name": "provider", "static_configs": [{"targets": [target]}]}],
        }
        (directory / "prometheus.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yaml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10)
        self.started = time.monotonic()
        # alert -> state -> seconds since the fault it was first seen under; alert -> that fault
        self.seen: dict[str, dict[str, float]] = {}
        self.fault: dict[str, str] = {}

    async def query(self, expr: str) -> list[dict[str, Any]]:
        response = await self.http.get("/api/v1/query", params={"query": expr})
        assert response.status_code == 200, f"{expr}: {response.text}"
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    async def states(self) -> dict[str, set[str]]:
        """Each active alert's states (one alert name may have several series)."""
        response = await self.http.get("/api/v1/alerts")
        states: dict[str, set[str]] = {}
        for alert in response.json()["data"]["alerts"]:
            states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return states

    async def until_firing(
        self, fault: str, names: set[str], since: float, timeout_s: float = 90
    ) -> None:
        """Poll the alerts API until `names` fire; record when each was pending and firing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, states in (await self.states()).items():
                self.fault.setdefault(name, fault)
                for state in states:
                    self.seen.setdefault(name, {}).setdefault(state, time.monotonic() - since)
            if all("firing" in self.seen.get(name, {}) for name in names):
                return
            await asyncio.sleep(0.2)
        missing = sorted(name for name in names if "firing" not in self.seen.get(name, {}))
        pytest.fail(f"never fired: {missing}; seen {self.seen}\n{self.log.read_text()[-2000:]}")

    async def aclose(self) -> None:
        await self.http.aclose()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out waiting until {what}")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    yield f"redis://127.0.0.1:{port}/0", process
    process.kill()
    process.wait()


@contextlib.asynccontextmanager
async def provider(settings: Settings) -> AsyncIterator[JobRunner]:
    """`serve_jobs` (what `run` runs) in this process until the block ends."""
    ready: asyncio.Future[JobRunner] = asyncio.get_running_loop().create_future()

    async def started(runner: JobRunner) -> None:
        if not ready.done():
            ready.set_result(runner)

    task = asyncio.create_task(
        serve_jobs(settings, dry_run=False, install_signals=False, ready=started)
    )
    done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    assert ready in done, f"the runner stopped at start (exit {task.result()})"
    runner = ready.result()
    try:
        yield runner
    finally:
        runner.stopping.set()
        runner.abandon()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=30)


@pytest.mark.timeout(300)  # about a minute alone; the suite's 120 s is for one fault
async def test_each_alert_fires_on_its_fault_and_every_panel_has_data(
    isolated_chain: Chain,
    rpc_url: str,
    sim_server: SimFactory,
    redis_url: tuple[str, subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    chain = isolated_chain
    good = await sim_server(dialect="openai", models=[MODEL], output_tokens=3)
    killed = await sim_server(dialect="openai", models=["acme/killed"])
    broken = await sim_server(dialect="openai", models=["acme/broken"], error_rate=1.0)
    slow = await sim_server(dialect="openai", models=["acme/slow"], ttft_s=2.0)
    nodes = {"good": (good, MODEL), "killed": (killed, "acme/killed")}
    nodes |= {"broken": (broken, "acme/broken"), "slow": (slow, "acme/slow")}
    port = free_port()
    settings = Settings.model_validate(
        {
            "api": {"port": port, "auth_enabled": False},
            "nodes": [
                {
                    "name": name,
                    "url": sim.url,
                    "type": "openai_compatible",
                    "models": [model],
                    "max_concurrency": 1 if name == "slow" else 8,
                }
                for name, (sim, model) in nodes.items()
            ],
            "models": [{"id": model} for _, model in nodes.values()],
            "load_balancer": {
                "health_check_interval_s": 0.5,
                "max_queue": 2,
                "selection_timeout_s": 0.5,
                # The failing node keeps failing (502) rather than being ejected (then 429).
                "eject_consecutive_failures": 1000,
                "failure_window": 1000,
                "failure_window_min": 1000,
            },
            "cluster": {
                "redis_url": redis_url[0],
                "leader_lease_s": 2,
                "lease_ttl_s": 1.0,  # the cluster timing rules, as in test_leader
                "redis_timeout_s": 0.25,
            },
        }
    )
    settings.tangle = local_tangle(
        rpc_url,
        operator_private_key=SecretStr(OPERATOR_KEY),
        data_dir=str(tmp_path / "data"),
        poll_interval_s=0.2,
        heartbeat_interval_s=0,
        lookback_blocks=20,
        max_fee_gwei=2,
    )
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    async with (
        provider(settings) as runner,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api,
    ):
        prometheus = Prometheus(prometheus_dir, f"127.0.0.1:{port}")
        try:
            await run_faults(prometheus, runner, chain, api, killed, redis_url[1])
        finally:
            await prometheus.aclose()


async def chat(api: httpx.AsyncClient, model: str, stream: bool = False) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = await api.post("/v1/chat/completions", json=body)
    return response.status_code


async def run_faults(
    prometheus: Prometheus,
    runner: JobRunner,
    chain: Chain,
    api: httpx.AsyncClient,
    killed: SimHandle,
    redis: subprocess.Popen[bytes],
) -> None:
    async def ready() -> bool:
        try:
            return (await prometheus.http.get("/-/ready")).status_code == 200
        except httpx.TransportError:  # not listening yet
            return False

    async def scraped() -> bool:
        return bool(await prometheus.query('up{job="provider"} == 1'))

    await eventually(ready, "Prometheus is ready")

    await eventually(scraped, "Prometheus scrapes the provider")
    # A healthy baseline: answers, a stream, two jobs on chain.
    assert [await chat(api, MODEL, stream) for stream in (False, True, False)] == [200] * 3
    for _ in range(2):
        await submit_job(chain, 0, 0, CHAT)

    async def answered() -> bool:
        return bool(await prometheus.query("tangle_calls_answered_total >= 2"))

    await eventually(answered, "the baseline's jobs are answered and scraped")
    scraped_at = time.time()

    async def evaluated() -> bool:
        # The rules ran (a recording rule's sample time) a few times on the baseline.
        found = await prometheus.query("timestamp(provider:threshold:lag_blocks)")
        return bool(found) and float(found[0]["value"][1]) > scraped_at + 3

    await eventually(evaluated, "the rules were evaluated on the baseline")
    assert await prometheus.states() == {}, "an alert is active on a healthy provider"

    # 1. A node killed, a node that fails every request, a queue filled past max_queue.
    fault = time.monotonic()
    await killed.stop()

    async def burst(failing: int, crowding: int) -> list[int]:
        # One at a time: max_queue (2) is the whole provider's, the crowd is to fill it.
        assert {await chat(api, "acme/broken") for _ in range(failing)} == {502}
        return list(await asyncio.gather(*[chat(api, "acme/slow") for _ in range(crowding)]))

    # A counter series rate() can read must exist before it grows: a first small burst
    # creates the 502 and 429 series, scraped before the real one.
    assert 429 in await burst(2, 4)

    async def created() -> bool:
        return len(await prometheus.query('api_requests_total{status=~"502|429"}')) == 2

    await eventually(created, "the 502 and 429 series are scraped")
    crowded = await burst(20, 12)
    assert crowded.count(429) >= 8 and 200 in crowded, crowded
    await prometheus.until_firing(
        "node killed, node failing, queue full",
        {
            "ProviderModelUnavailable",
            "ProviderNodeDown",
            "ProviderErrorRatioHigh",
            "ProviderRateLimited",
            "ProviderLatencyHigh",
        },
        since=fault,
    )

    # 2. The base fee above max_fee_gwei (2): a job's result waits, and the chain moves on.
    fault = time.monotonic()
    await anvil(chain, "anvil_setNextBlockBaseFeePerGas", hex(50 * GWEI))
    await submit_job(chain, 0, 0, CHAT)
    await anvil(chain, "anvil_mine", hex(10))
    await prometheus.until_firing(
        "base fee above the cap", {"TangleWaitingOnFeeCap", "TangleRunnerBehind"}, since=fault
    )

    # 3. Blocks stop: the fee falls under the cap, the result is sent and never mined.
    fault = time.monotonic()
    await anvil(chain, "evm_setAutomine", False)
    await anvil(chain, "anvil_setNextBlockBaseFeePerGas", hex(GWEI // 2))
    await prometheus.until_firing("blocks stopped", {"TangleTransactionStuck"}, since=fault)

    # 4. The wallet drained to 0.001 ETH.
    fault = time.monotonic()
    await anvil(chain, "anvil_setBalance", OPERATOR, hex(10**15))
    await prometheus.until_firing("wallet drained", {"TangleWalletLow"}, since=fault)

    # Every dashboard query has data while the runner leads (a standby reports only
    # tangle_leader 0, and Redis is killed next).
    dashboard = json.loads((DEPLOY / "grafana" / "{{ cookiecutter.project_slug }}.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            assert await prometheus.query(expr), f"panel {panel['title']!r}: no data for {expr}"

    # 5. The contract refuses a result: the customer ends the service (terminateService) in
    # the block its job lands in, so the runner's answer reverts with ServiceNotActive.
    fault = time.monotonic()

    async def in_pool(count: int) -> bool:
        return len(await pool(chain, chain.address)) >= count

    job = asyncio.create_task(submit_job(chain, 0, 0, CHAT))
    await eventually(lambda: in_pool(1), "the job is in the mempool")
    terminate = "0x" + TERMINATE_SERVICE.calldata(0).hex()
    # Gas given: the signer's estimate (+20 %) falls short for this call (the hook it makes
    # gets 63/64 of what is left), and it reverts when mined.
    end = {"from": chain.address, "to": chain.tangle, "data": terminate, "gas": hex(1_000_000)}
    await anvil(chain, "eth_sendTransaction", end)
    await eventually(lambda: in_pool(2), "the job and the service's end are in the mempool")
    await anvil(chain, "evm_mine")
    await anvil(chain, "evm_setAutomine", True)
    await job
    await prometheus.until_firing("service ended", {"TangleResultsFailing"}, since=fault)
    assert runner.consumer.stats[Outcome.FAILED] >= 1

    # 6. Redis killed: this replica degrades to local state and loses the leader lease.
    fault = time.monotonic()
    redis.kill()
    await prometheus.until_firing(
        "Redis killed", {"ClusterRedisUnreachable", "TangleNoLeader"}, since=fault
    )

    print("\n| fault | alert | pending after s | firing after s |\n|---|---|---|---|")
    for name, seen in sorted(prometheus.seen.items(), key=lambda item: item[1]["firing"]):
        # "-": it went pending and fired between two looks (the test was causing the fault).
        pending = f"{seen['pending']:.1f}" if "pending" in seen else "-"
        when = f"{pending} | {seen['firing']:.1f}"
        print(f"| {prometheus.fault[name]} | {name} | {when} |")
    # No alert before its own fault: each was first seen under the fault that causes it.
    assert prometheus.fault == EXPECTED, prometheus.fault
    assert set(prometheus.alert_names) == set(prometheus.fault)
