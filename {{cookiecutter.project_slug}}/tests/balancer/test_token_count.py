"""A prompt the characters-a-token estimate finds too long is counted by the node itself.

vLLM and llama.cpp expose their tokenizers (/tokenize); a node that cannot count keeps
the estimate.  The simulator counts one token a word, so one long word is a prompt the
estimate (4 characters a token) refuses and the node serves.
"""

from __future__ import annotations

from typing import Any

import pytest

from {{ cookiecutter.package_name }}.backends import available_types, create_client
from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.config import ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}.llm.errors import ContextLengthExceededError

from .fakes import MODEL, chat, lb_settings

DIALECT = {
    "vllm": "vllm",
    "llamacpp": "llamacpp",
    "ollama": "ollama",
    "tgi": "tgi",
    "openai_compatible": "openai",
}
COUNTS = {"vllm", "llamacpp"}  # servers with a tokenizer route


@pytest.mark.parametrize("node_type", [kind for kind in available_types() if kind in DIALECT])
async def test_the_node_counts_what_the_estimate_would_refuse(
    sim_server: Any, node_type: str
) -> None:
    sim = await sim_server(dialect=DIALECT[node_type], models=[MODEL], context_length=2048)
    node = NodeSettings(name="n", url=sim.url, type=node_type, models=[MODEL])  # type: ignore[arg-type]
    settings = Settings(nodes=[node], models=[ModelSettings(id=MODEL)], load_balancer=lb_settings())
    balancer = Balancer(settings)
    balancer.add_node(node, create_client(node, settings.load_balancer))
    await balancer.start()
    long_word = "x" * 20_000  # about 5,000 tokens by the estimate; one to the simulator
    try:
        (listed,) = balancer.listed_models()
        if node_type in COUNTS or listed.context_length is None:
            answer = await balancer.chat_completion(chat(text=long_word, max_tokens=4))
            assert answer.choices[0].message.content
        else:  # the estimate stands where the server cannot count
            with pytest.raises(ContextLengthExceededError):
                await balancer.chat_completion(chat(text=long_word, max_tokens=4))
        if listed.context_length is not None:
            # What the node itself counts as too long is still refused before it is sent.
            with pytest.raises(ContextLengthExceededError):
                await balancer.chat_completion(chat(text="word " * 3000, max_tokens=4))
    finally:
        await balancer.aclose()
