"""vLLM: OpenAI's endpoints, plus /health and Prometheus load gauges.

The served context length is `max_model_len` in /v1/models.  /health answers
200 while the engine lives (503 only once it has died).  /metrics carries the
scheduler's queue (`vllm:num_requests_waiting`), its running batch
(`vllm:num_requests_running`) and the fraction of KV-cache blocks in use
(`vllm:kv_cache_usage_perc`, called `vllm:gpu_cache_usage_perc` before 0.9.2),
one sample per model and engine.
"""

from __future__ import annotations

from .load import ServerSignals
from .openai_compatible import OpenAICompatibleClient

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE = "vllm:kv_cache_usage_perc"
KV_CACHE_BEFORE_0_9_2 = "vllm:gpu_cache_usage_perc"


class VllmClient(OpenAICompatibleClient):
    """A vLLM OpenAI-compatible server (`vllm serve`)."""

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
