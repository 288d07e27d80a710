"""One client per LLM server type; `create_client` picks the module named after the node's type.

The post-generation hook deletes the modules of server types the project was
not generated for, so nothing imports them by name: they are found at run time.
`openai_compatible` and the `custom` skeleton are always present.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import get_args

from ..config import ConfigError, LoadBalancerSettings, NodeSettings, NodeType
from ..llm.interfaces import StreamingLlmClient


def available_types() -> list[str]:
    """The node types this project has a client module for."""
    present = {module.name for module in pkgutil.iter_modules(__path__)}
    return [name for name in get_args(NodeType) if name in present]


def _no_client(node: NodeSettings, available: list[str]) -> ConfigError:
    return ConfigError(
        f"node {node.name!r} has type {node.type!r}, but this project was generated without "
        f"its client (backends/{node.type}.py); available types: {', '.join(available)}"
    )


def check_node_types(nodes: Iterable[NodeSettings]) -> None:
    """Refuse, before anything starts, a node whose type has no client in this project."""
    available = available_types()
    for node in nodes:
        if node.type not in available:
            raise _no_client(node, available)


def create_client(node: NodeSettings, lb: LoadBalancerSettings) -> StreamingLlmClient:
    """A client for `node`, or a ConfigError when its type's module was not generated."""
    name = f"{__name__}.{node.type}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        raise _no_client(node, [t for t in available_types() if t != node.type]) from None
    client: StreamingLlmClient = module.CLIENT(node, lb)
    return client
