"""The last fully processed block, kept in DATA_DIR so a restart resumes there.

A block counts as processed when every job call it carried has its result on
chain (or needed none).  Calls finish out of order, so the saved block is one
below the oldest call still in flight, or the last scanned block when none is.
Restarting from there repeats no finished block and skips no unfinished one;
calls finished beyond it are recognised on chain and not answered twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import TangleSettings

FILE_NAME = "tangle-checkpoint.json"


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be read: a start-up error, not a fresh start."""


class Checkpoint:
    """Scan position and in-flight calls; `save()` writes atomically when the position moves."""

    def __init__(self, path: Path, *, key: dict[str, str | int]) -> None:
        self.path = path
        # What the block number means: another chain, contract or service starts afresh.
        self.key = key
        self.scanned_to: int | None = None
        self._pending: dict[int, int] = {}
        self._saved: int | None = None

    @classmethod
    def for_service(cls, settings: TangleSettings, chain_id: int) -> Checkpoint:
        """The checkpoint of SERVICE_ID on this chain and contract, in DATA_DIR."""
        return cls(
            Path(settings.data_dir) / FILE_NAME,
            key={
                "chain_id": chain_id,
                "tangle_contract": settings.tangle_contract.lower(),
                "service_id": -1 if settings.service_id is None else settings.service_id,
            },
        )

    def load(self) -> int | None:
        """The saved last processed block for this key, or None (no file, or another key)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            data = error
        block = data.get("last_processed_block") if isinstance(data, dict) else None
        if not isinstance(block, int):
            raise CheckpointError(
                f"{self.path}: unreadable checkpoint ({data}); move it away to start afresh"
            )
        if data.get("key") != self.key:
            return None
        self.scanned_to = self._saved = block
        return block

    def scanned(self, block: int) -> None:
        """Every call up to `block` has been read from the chain and started."""
        self.scanned_to = block

    def started(self, call_id: int, block: int) -> None:
        self._pending[call_id] = block

    def holds(self, call_id: int) -> bool:
        """The call is started and not finished."""
        return call_id in self._pending

    def finished(self, call_id: int) -> None:
        self._pending.pop(call_id, None)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def last_processed(self) -> int | None:
        if self._pending:
            return min(self._pending.values()) - 1
        return self.scanned_to

    def save(self) -> None:
        block = self.last_processed
        if block is None or block == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            json.dump({"key": self.key, "last_processed_block": block}, file)
            file.flush()
            os.fsync(file.fileno())  # a power cut leaves the old file or the new, never a torn one
        os.replace(temporary, self.path)
        self._saved = block
