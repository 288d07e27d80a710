"""Bounds on untrusted JSON that hold before any of it is parsed.

Both entry points read JSON from anyone: the HTTP API's request bodies and on-chain job
inputs.  They share these checks and the `[api]` settings that set them.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from .errors import PayloadTooLargeError


def check_json_size(body: bytes, max_keys: int, max_items: int) -> None:
    """Refuse with 413 JSON that could hold more than `max_keys` object keys or
    `max_items` array items and object members in all.

    Validation holds the GIL, so it stalls every client: 8 MB of small messages or tool
    calls took over a second, logit_bias keys or content parts a third of one.  Its cost
    grows with the objects' keys (each followed by ':'), and less steeply with the values
    (all but a container's first preceded by ','): counting those bytes (in C, a few
    milliseconds for the largest body) bounds the work before any of it is done.  Bytes
    inside strings count too, so the bound errs on the side of refusing.
    """
    if body.count(b":") > max_keys:
        raise PayloadTooLargeError(
            f"request has more than {max_keys} JSON object keys (api.max_json_keys)"
        )
    if body.count(b",") >= max_items:
        raise PayloadTooLargeError(
            f"request has more than {max_items} JSON array items and object members "
            "(api.max_json_items)"
        )


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one call turns untrusted JSON into objects.

    Validating or dumping a body creates an object per item, and the collector would scan
    the growing heap every 700 of them: a 1 MB body of empty arrays cost 4x its parse
    (87 ms against 20).  The call holds the event loop, so nothing else allocates
    meanwhile; its objects are collected as usual afterwards.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
