"""URLs in message parts that a node would fetch: public http(s) only, by default.

vLLM, SGLang and llama.cpp download `image_url`s (and audio, video, file URLs) themselves, from
inside the operator's network: a URL naming a metadata service (169.254.169.254), loopback or a
private address turns the node into a proxy for the caller (SSRF).  A host given as a name is not
resolved here (that would be a DNS lookup per request, and the answer may change before the node
asks); names that only mean something inside a network are refused, and egress rules on the nodes
stay the real fence (see SECURITY.md).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ..llm.errors import InvalidRequestError
from ..llm.models import ChatCompletionRequest

# Names that resolve only inside a network or a host.
_INTERNAL_SUFFIXES = (
    *(".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan"),
    ".svc",  # a Kubernetes service, as a pod's resolver completes `name.namespace.svc`
)
# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway or the host connects to:
# NAT64 (64:ff9b::/96, RFC 6052) and IPv4-compatible (::/96, RFC 4291).
_NAT64, _COMPATIBLE = 0x64FF9B << 64, 0
_INTERNAL_NAMES = {"localhost", "metadata", "instance-data"}
# Hosts made of numbers only (2852039166, 0xa9.0xfe.0xa9.0xfe): addresses to most fetchers.
_NUMERIC = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}")


def check_media(request: ChatCompletionRequest) -> None:
    """Refuse (400) a message part whose URL points inside a network."""
    for index, message in enumerate(request.messages):
        if isinstance(message.content, list):
            for url in _urls(message.content):
                reason = _refusal(url)
                if reason is not None:
                    raise InvalidRequestError(
                        f"messages.{index}.content: {reason}", param=f"messages.{index}.content"
                    )


def _urls(parts: list[dict[str, Any]]) -> Iterator[str]:
    """Strings that look like URLs in each part, at its top level or one object down.

    Every field but `text` is looked at, not only the one `type` names: vLLM also
    reads a part without `type` by its `image_url`, `audio_url` or `video_url`.
    """
    for part in parts:
        for key, value in part.items():
            if key == "text":
                continue
            values = value.values() if isinstance(value, dict) else (value,)
            for item in values:
                if isinstance(item, str) and "://" in item[:16]:
                    yield item


def _refusal(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "a media URL that cannot be parsed"
    if parts.scheme not in ("http", "https"):
        return "media URLs must be http(s) or data: URIs"
    if not host.isascii():
        # The fetcher maps the host as IDNA does ("127.0.0\u30021" and "\u2460\u2461\u2466.0.0.1"
        # become 127.0.0.1 in aiohttp's yarl): check what it will connect to.
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return "a media URL whose host is not a valid internationalized name"
    host = host.removesuffix(".")  # "localhost." and "169.254.169.254." name the same hosts
    if not host:
        return "a media URL without a host"
    if ":" not in host and (  # IPv6 literals have no dots
        host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES) or "." not in host
    ):
        return "media URLs may not name an internal host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC.fullmatch(host):
            return "media URLs may not give a host as a bare number"
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour  # 6to4: 2002::/16, RFC 3056
        if embedded is None and int(address) >> 32 in (_NAT64, _COMPATIBLE):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        address = embedded or address
    if not address.is_global:
        return "media URLs may not name a private, loopback or link-local address"
    return None
