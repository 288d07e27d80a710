"""`nodes`: one health and discovery round over real clients, as a table or JSON."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable

import pytest

from {{ cookiecutter.package_name }}.balancer.report import check_nodes, print_nodes, render_table
from {{ cookiecutter.package_name }}.config import ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}_sim import SimHandle

from .fakes import MODEL


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fleet(**urls: str) -> Settings:
    return Settings(
        nodes=[
            NodeSettings(name=name, url=url, type="openai_compatible", models=[MODEL])
            for name, url in urls.items()
        ],
        models=[ModelSettings(id=MODEL)],
    )


async def test_check_nodes_reports_reachable_and_unreachable(
    sim_server: Callable[..., Awaitable[SimHandle]],
) -> None:
    handle = await sim_server(dialect="openai", models=[MODEL, "extra"])
    states = await check_nodes(fleet(up=handle.url, dead=closed_port_url()))
    by_name = {state.name: state for state in states}
    assert by_name["up"].healthy and by_name["up"].models == [MODEL]
    assert not by_name["dead"].healthy and by_name["dead"].last_error
    table = render_table(states).splitlines()
    assert table[0].startswith("| node | type | url | reachable |")
    assert table[2].startswith(f"| up | openai_compatible | {handle.url} | yes | {MODEL} |")
    assert table[3].startswith("| dead | openai_compatible |") and "| no |" in table[3]


def test_print_nodes_exits_non_zero_when_none_is_reachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert print_nodes(fleet(dead=closed_port_url()), as_json=True) == 1
    (node,) = json.loads(capsys.readouterr().out)
    assert node["name"] == "dead" and node["healthy"] is False
