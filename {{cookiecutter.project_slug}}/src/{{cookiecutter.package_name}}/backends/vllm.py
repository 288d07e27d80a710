"""vLLM: OpenAI's endpoints, plus /health and Prometheus load gauges.

The served context length is `max_model_len` in /v1/models.  /health answers
200 while the engine lives (503 only once it has died).  /metrics carries the
scheduler's queue (`vllm:num_requests_waiting`), its running batch
(`vllm:num_requests_running`) and the fraction of KV-cache blocks in use
(`vllm:kv_cache_usage_perc`, called `vllm:gpu_cache_usage_perc` before 0.9.2),
one sample per model and engine.

Checked against a running vLLM 0.32 (CPU build): /health and /metrics stay open
when the server has an API key, so the health check also reads /v1/models, which
needs it; a server registers /v1/embeddings only with a pooling runner
(`--runner pooling`) and the generation routes only with a generate runner, which
discovery learns from the routes themselves.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from ..llm.errors import ContextLengthExceededError, LlmError, NotSupportedError
from ..llm.models import ChatCompletionRequest, ModelInfo
from .openai_compatible import OpenAICompatibleClient

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
KV_CACHE_BEFORE_0_9_2 = "vllm:gpu_cache_usage_perc"
_MAX_TOKENS_OVER = re.compile(
    r"max_(?:completion_|output_)?tokens=(?P<requested>\d+) cannot be greater than "
    r"max_model_len=(?P<context>\d+)"
)


class VllmClient(OpenAICompatibleClient):
    """A vLLM OpenAI-compatible server (`vllm serve`)."""

    def chat_body(self, request: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        """Thinking on or off goes to the chat template, where vLLM's models read it.

        OpenRouter's `reasoning` ({"enabled": false} or {"effort": "none"} to turn
        it off) becomes `chat_template_kwargs.enable_thinking` unless the caller
        set that already; vLLM's `reasoning_effort` takes low, medium or high only.
        """
        body = super().chat_body(request, stream=stream)
        reasoning = request.reasoning or {}
        if reasoning:
            effort = reasoning.get("effort")
            enabled = bool(reasoning.get("enabled", True)) and effort != "none"
            body.setdefault("chat_template_kwargs", {}).setdefault("enable_thinking", enabled)
            if effort in ("none", "minimal"):
                body.pop("reasoning_effort", None)
        return body

    async def list_models(self) -> list[ModelInfo]:
        models = await super().list_models()
        embeds, generates = await asyncio.gather(
            self._has_route(self.embeddings_path), self._has_route(self.chat_path)
        )
        self.supports_embeddings = embeds
        for model in models:
            model.capabilities |= {
                "embeddings": embeds,
                "chat": generates,
                "completions": generates,
            }
        return models

    async def _has_route(self, path: str) -> bool:
        """A GET on a POST route is 405 where the route exists, 404 where it does not."""
        try:
            await self.probe(path)
        except NotSupportedError:
            return False
        except LlmError:
            pass
        return True

    def error_for(self, status_code: int, body: bytes, headers: Mapping[str, str]) -> LlmError:
        """vLLM's "max_tokens=N cannot be greater than max_model_len=M", in OpenAI's words,
        which client libraries read as a context-window error."""
        error = super().error_for(status_code, body, headers)
        limit = _MAX_TOKENS_OVER.search(error.message)
        if isinstance(error, ContextLengthExceededError) and limit:
            return ContextLengthExceededError(
                f"This model's maximum context length is {limit['context']} tokens. However, "
                f"you requested {limit['requested']} output tokens. Please reduce the number "
                f"of requested output tokens.",
                param="max_tokens",
            )
        return error

    async def count_tokens(self, model: str, text: str) -> int | None:
        """vLLM's /tokenize, with the served model's tokenizer."""
        count = await self.query("POST", "/tokenize", body={"model": model, "prompt": text})
        return count.get("count") if isinstance(count.get("count"), int) else None

    async def check_health(self) -> None:
        await self.probe("/health")
        # /health and /metrics are open even with --api-key: a refused key shows here.
        await self.probe(self.models_path)
        found = await self.scrape((RUNNING, WAITING, KV_CACHE, KV_CACHE_BEFORE_0_9_2))
        if found is None:
            return  # Healthy but unmeasured: the gauges age out and count as unknown.
        kv = found.get(KV_CACHE, found.get(KV_CACHE_BEFORE_0_9_2))
        self.load.set_signals(
            running=sum(found[RUNNING]) if RUNNING in found else None,
            waiting=sum(found[WAITING]) if WAITING in found else None,
            # With several engines the fullest cache is the one a request may land on.
            kv_cache_usage=max(kv) if kv else None,
        )


CLIENT = VllmClient
