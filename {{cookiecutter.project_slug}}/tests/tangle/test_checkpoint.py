"""The checkpoint: never past a call still in flight, tied to chain, contract and service."""

from __future__ import annotations

from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import TangleSettings
from {{ cookiecutter.package_name }}.tangle.checkpoint import FILE_NAME, Checkpoint, CheckpointError

TANGLE = "0x0165878a594ca255338adfa4d48449f69242eb8f"


def settings(data_dir: Path, service_id: int = 0) -> TangleSettings:
    return TangleSettings(data_dir=str(data_dir), tangle_contract=TANGLE, service_id=service_id)


def test_out_of_order_finishes_hold_the_checkpoint_back(tmp_path: Path) -> None:
    checkpoint = Checkpoint.for_service(settings(tmp_path), chain_id=31337)
    checkpoint.started(call_id=1, block=10)
    checkpoint.started(call_id=2, block=12)
    checkpoint.scanned(15)
    assert checkpoint.last_processed == 9
    checkpoint.finished(2)
    assert checkpoint.last_processed == 9  # call 1 (block 10) is still open
    checkpoint.finished(1)
    assert checkpoint.last_processed == 15
    checkpoint.save()

    again = Checkpoint.for_service(settings(tmp_path), chain_id=31337)
    assert again.load() == 15
    assert not list(tmp_path.glob("*.tmp"))


def test_saved_block_is_one_before_the_oldest_open_call(tmp_path: Path) -> None:
    checkpoint = Checkpoint.for_service(settings(tmp_path), chain_id=1)
    checkpoint.scanned(20)
    checkpoint.started(call_id=7, block=18)
    checkpoint.save()
    assert Checkpoint.for_service(settings(tmp_path), chain_id=1).load() == 17


def test_another_chain_or_service_starts_afresh(tmp_path: Path) -> None:
    checkpoint = Checkpoint.for_service(settings(tmp_path), chain_id=31337)
    checkpoint.scanned(50)
    checkpoint.save()
    assert Checkpoint.for_service(settings(tmp_path), chain_id=84532).load() is None
    assert Checkpoint.for_service(settings(tmp_path, service_id=3), chain_id=31337).load() is None


@pytest.mark.parametrize(
    "text", ['{"key": {}, "last_processed', "{not json", '{"key": {}, "last_processed_block": "x"}']
)
def test_a_torn_or_corrupt_file_is_an_error_not_a_fresh_start(tmp_path: Path, text: str) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        Checkpoint.for_service(settings(tmp_path), chain_id=1).load()


def test_nothing_scanned_writes_nothing(tmp_path: Path) -> None:
    Checkpoint.for_service(settings(tmp_path / "new"), chain_id=1).save()
    assert not (tmp_path / "new").exists()
