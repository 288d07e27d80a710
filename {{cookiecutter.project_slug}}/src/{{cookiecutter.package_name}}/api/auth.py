"""Bearer keys: several at once, replaceable while serving, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from pydantic import SecretStr

from ..llm.errors import AuthenticationError


class KeyRing:
    """The keys a request may present; `replace` swaps them atomically (no restart)."""

    def __init__(self, keys: Iterable[SecretStr] = ()) -> None:
        self._keys: tuple[bytes, ...] = ()
        self.replace(keys)

    def replace(self, keys: Iterable[SecretStr]) -> None:
        self._keys = tuple(key.get_secret_value().encode() for key in keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, authorization: str | None) -> None:
        """Raise AuthenticationError unless the header is `Bearer <one of the keys>`."""
        if not authorization:
            raise AuthenticationError("missing Authorization header; send 'Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("expected an Authorization header of the form 'Bearer <key>'")
        presented = token.strip().encode()
        # Compare against every key without stopping early: timing says nothing about which matched.
        if not any([hmac.compare_digest(presented, key) for key in self._keys]):
            raise AuthenticationError("invalid API key")
