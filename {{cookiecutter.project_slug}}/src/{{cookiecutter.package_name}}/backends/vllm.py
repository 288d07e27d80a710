"""vLLM: OpenAI's endpoints, plus /health and Prometheus load gauges.

The served context length is `max_model_len` in /v1/models.  /health answers
200 while the engine lives (503 only once it has died).  /metrics carries the
scheduler's queue (`vllm:num_requests_waiting`), its running batch
(`vllm:num_requests_running`) and the fraction of KV-cache blocks in use
(`vllm:kv_cache_usage_perc`, called `vllm:gpu_cache_usage_perc` before 0.9.2),
one sample per model and engine.
"""

from __future__ import annotations

from typing import Any

from ..llm.models import ChatCompletionRequest
from .load import ServerSignals
from .openai_compatible import OpenAICompatibleClient

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
KV_CACHE_BEFORE_0_9_2 = "vllm:gpu_cache_usage_perc"


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

    async def check_health(self) -> None:
        await self.probe("/health")
        found = await self.scrape((RUNNING, WAITING, KV_CACHE, KV_CACHE_BEFORE_0_9_2))
        if found is None:
            return  # Healthy but unmeasured: the gauges age out and count as unknown.
        kv = found.get(KV_CACHE, found.get(KV_CACHE_BEFORE_0_9_2))
        self.load.set_signals(
            ServerSignals(
                running=sum(found[RUNNING]) if RUNNING in found else None,
                waiting=sum(found[WAITING]) if WAITING in found else None,
                # With several engines the fullest cache is the one a request may land on.
                kv_cache_usage=max(kv) if kv else None,
            )
        )


CLIENT = VllmClient
