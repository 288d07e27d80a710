"""One client per LLM server type; `create_client` picks the module named after the node's type.

The post-generation hook deletes the modules of server types the project was
not generated for, so nothing imports them by name: they are found at run time.
`openai_compatible` is always present.
"""

from __future__ import annotations

import importlib

from ..config import ConfigError, LoadBalancerSettings, NodeSettings
from ..llm.interfaces import StreamingLlmClient


def create_client(node: NodeSettings, lb: LoadBalancerSettings) -> StreamingLlmClient:
    """A client for `node`, or a ConfigError when its type's module was not generated."""
    name = f"{__name__}.{node.type}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        raise ConfigError(
            f"node {node.name!r} has type {node.type!r}, but this project was generated "
            f"without the {node.type} client (backends/{node.type}.py); use type "
            "'openai_compatible' if the server speaks OpenAI's API, or regenerate the project"
        ) from None
    client: StreamingLlmClient = module.CLIENT(node, lb)
    return client
