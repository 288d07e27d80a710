"""Calls whose input killed (or hung) the runner, so that it never crash-loops on one.

Decoding a job's input is the only work on untrusted bytes, and it is
synchronous: one call at a time.  Before it starts, the call id goes into a
marker file in DATA_DIR; after it ends (even by an exception) the marker goes.
A marker found at start names the call that was being read when the process
died, or was killed because it hung.  Twice is enough: that call is poisoned,
and the runner answers it with an error instead of reading it again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic_core import from_json

log = logging.getLogger(__name__)

MARKER = "tangle-reading"
COUNTS = "tangle-poison.json"
DEATHS_TO_POISON = 2


class PoisonGuard:
    def __init__(self, data_dir: Path) -> None:
        self._marker = data_dir / MARKER
        self._counts_path = data_dir / COUNTS
        self.deaths: dict[int, int] = {}

    def load(self) -> None:
        """Read past deaths, and count one more for a call the last process died reading."""
        try:
            data = from_json(self._counts_path.read_bytes())
            self.deaths = {int(key): int(value) for key, value in data.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self.deaths = {}
        try:
            text = self._marker.read_text(encoding="ascii").strip()
        except OSError:
            return
        if text.isdigit():
            call_id = int(text)
            self.deaths[call_id] = self.deaths.get(call_id, 0) + 1
            log.error(
                "the runner stopped while reading the input of call %d (%d time%s)%s",
                call_id,
                self.deaths[call_id],
                "" if self.deaths[call_id] == 1 else "s",
                "; it will be answered with an error" if self.poisoned(call_id) else "",
            )
            self._save()
        self._marker.unlink(missing_ok=True)

    def poisoned(self, call_id: int) -> bool:
        return self.deaths.get(call_id, 0) >= DEATHS_TO_POISON

    @contextmanager
    def reading(self, call_id: int) -> Iterator[None]:
        self._marker.write_text(str(call_id), encoding="ascii")
        try:
            yield
        finally:
            self._marker.unlink(missing_ok=True)

    def forget(self, call_id: int) -> None:
        """The call is answered for good: its count is no longer needed."""
        if self.deaths.pop(call_id, None) is not None:
            self._save()

    def _save(self) -> None:
        temporary = self._counts_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({str(k): v for k, v in self.deaths.items()}))
        os.replace(temporary, self._counts_path)
