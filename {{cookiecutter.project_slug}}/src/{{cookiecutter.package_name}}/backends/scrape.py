"""Read gauges from a Prometheus text exposition (vLLM, llama.cpp, TGI /metrics)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from ..llm.errors import UpstreamError


def gauges(text: str, names: Iterable[str]) -> dict[str, list[float]]:
    """Each wanted gauge's values, one per label set (vLLM engines, llama.cpp models).

    A name the server does not export is absent from the result, so callers can
    fall back to an older name; callers choose how to combine label sets (sum a
    queue, take the fullest cache).
    """
    wanted = set(names)
    found: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name in wanted:
                found[family.name] = [s.value for s in family.samples if s.name == family.name]
    except ValueError as error:
        raise UpstreamError(f"the server's /metrics is not Prometheus text: {error}") from None
    return found
