"""llama.cpp's llama-server: OpenAI's endpoints, plus its own health, props, slots and metrics.

/health answers 503 while the model loads.  /props gives the context each slot
gets (`default_generation_settings.n_ctx`), the slot count (`total_slots`, from
--parallel), image input (`modalities.vision`) and whether the chat template can
call tools (`chat_template_caps.supports_tool_calls`; without, the server ignores
`tools`); it does not say whether --embeddings is on, which the first refusal tells.
/slots lists the slots with `is_processing` (on by default, off with --no-slots):
the running count, since `llamacpp:requests_processing` from /metrics (only with
--metrics) read 0 under load in 3 of 8 reads against a real server.
`llamacpp:requests_deferred` is the queue.  Current builds export no KV-cache
gauge.  Thinking arrives as `reasoning_content`, renamed `reasoning` by the base.
"""

from __future__ import annotations

from typing import Any

from ..config import Capability
from ..llm.errors import LlmError, UpstreamCredentialsError
from ..llm.models import ModelInfo
from .openai_compatible import OpenAICompatibleClient

PROCESSING = "llamacpp:requests_processing"
DEFERRED = "llamacpp:requests_deferred"


class LlamaCppClient(OpenAICompatibleClient):
    """A llama-server node."""

    total_slots: int | None = None

    async def list_models(self) -> list[ModelInfo]:
        models = await super().list_models()
        try:
            props = await self.query("GET", "/props")
        except LlmError:
            return models  # Router mode without a loaded model, or an old build.
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        slots = props.get("total_slots")
        self.total_slots = slots if isinstance(slots, int) and slots > 0 else None
        said: dict[Capability, Any] = {
            "vision": (props.get("modalities") or {}).get("vision"),
            "tools": (props.get("chat_template_caps") or {}).get("supports_tool_calls"),
        }
        for model in models:
            model.capabilities |= {k: v for k, v in said.items() if isinstance(v, bool)}
        if isinstance(n_ctx, int) and n_ctx > 0 and len(models) == 1:
            # The runtime context per slot beats the trained maximum in /v1/models.
            models[0].context_length = n_ctx
        return models

    def model_info(self, card: dict[str, Any]) -> ModelInfo:
        info = super().model_info(card)
        trained = (card.get("meta") or {}).get("n_ctx_train")
        if info.context_length is None and isinstance(trained, int) and trained > 0:
            info.context_length = trained
        return info

    async def count_tokens(self, model: str, text: str) -> int | None:
        """llama-server's /tokenize, with the loaded model's tokenizer."""
        tokens = (await self.query("POST", "/tokenize", body={"content": text})).get("tokens")
        return len(tokens) if isinstance(tokens, list) else None

    async def check_health(self) -> None:
        await self.probe("/health")
        running: float | None = None
        waiting: float | None = None
        capacity = self.total_slots
        try:
            slots: Any = (await self.probe("/slots")).json()
            if isinstance(slots, list):
                running = float(sum(1 for slot in slots if slot.get("is_processing")))
                capacity = len(slots) or capacity
        except UpstreamCredentialsError:
            raise  # Only /health is open with --api-key: a refused key shows here.
        except (LlmError, ValueError):
            pass  # --no-slots: rely on /metrics or our own count.
        found = await self.scrape((PROCESSING, DEFERRED)) or {}
        if running is None and PROCESSING in found:
            running = sum(found[PROCESSING])
        if DEFERRED in found:
            waiting = sum(found[DEFERRED])
        if running is not None or waiting is not None:
            self.load.set_signals(running=running, waiting=waiting, capacity=capacity)


CLIENT = LlamaCppClient
