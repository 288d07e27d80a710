"""JobSubmitted decoding by hand: the deployed 3-topic form, the ABI's 4-topic form, RFQ."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode

from {{ cookiecutter.package_name }}.tangle.abi import JOB_SUBMITTED, JOB_SUBMITTED_FROM_QUOTE
from {{ cookiecutter.package_name }}.tangle.events import LogDecodeError, decode_job_log

CALLER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
QUOTED = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def test_topics_are_the_known_event_hashes() -> None:
    assert JOB_SUBMITTED.hex() == "de37cc48d21778e1c9a075c4e41c5aff6918c3ea6151221f0af3ce8121a29db5"
    assert (
        JOB_SUBMITTED_FROM_QUOTE.hex()
        == "b707259a8a1604adca251fecf84eb283329cd45175690dcb8ff1cf52a6252422"
    )


def test_three_topics_as_deployed() -> None:
    log = {
        "topics": [JOB_SUBMITTED, word(7), word(42)],
        "data": encode(["uint8", "address", "bytes"], [3, CALLER, b"\x01\x02"]),
        "blockNumber": 100,
        "logIndex": 2,
    }
    call = decode_job_log(log)
    assert (call.service_id, call.call_id, call.job_index) == (7, 42, 3)
    assert call.caller == CALLER
    assert call.inputs == b"\x01\x02"
    assert (call.block_number, call.log_index, call.from_quote) == (100, 2, False)


def test_four_topics_as_the_abi_file_declares() -> None:
    log = {
        "topics": [JOB_SUBMITTED, word(7), word(43), word(1)],
        "data": encode(["address", "bytes"], [CALLER, b"abc"]),
        "blockNumber": 101,
        "logIndex": 0,
    }
    call = decode_job_log(log)
    assert (call.call_id, call.job_index, call.inputs) == (43, 1, b"abc")


def test_raw_json_rpc_hex_form() -> None:
    data = encode(["uint8", "address", "bytes"], [0, CALLER, b"hi"])
    log: dict[str, Any] = {
        "topics": ["0x" + JOB_SUBMITTED.hex(), "0x" + word(1).hex(), "0x" + word(9).hex()],
        "data": "0x" + data.hex(),
        "blockNumber": "0x1f",
        "logIndex": "0x3",
    }
    call = decode_job_log(log)
    assert (call.service_id, call.call_id, call.block_number, call.log_index) == (1, 9, 31, 3)


def test_rfq_jobs() -> None:
    log = {
        "topics": [JOB_SUBMITTED_FROM_QUOTE, word(2), word(5)],
        "data": encode(
            ["uint8", "address", "address[]", "uint256", "bytes"],
            [0, CALLER, [QUOTED], 10**18, b"req"],
        ),
        "blockNumber": 5,
        "logIndex": 1,
    }
    call = decode_job_log(log)
    assert (call.service_id, call.call_id, call.inputs, call.from_quote) == (2, 5, b"req", True)


def test_calls_sort_by_position_on_chain() -> None:
    def at(block: int, index: int, call_id: int) -> dict[str, Any]:
        return {
            "topics": [JOB_SUBMITTED, word(0), word(call_id)],
            "data": encode(["uint8", "address", "bytes"], [0, CALLER, b""]),
            "blockNumber": block,
            "logIndex": index,
        }

    calls = sorted(decode_job_log(log) for log in (at(9, 0, 3), at(8, 5, 2), at(8, 1, 1)))
    assert [call.call_id for call in calls] == [1, 2, 3]


@pytest.mark.parametrize(
    ("topics", "data", "reason"),
    [
        ([JOB_SUBMITTED, word(0), word(1)], b"\x00" * 5, "undecodable"),
        ([JOB_SUBMITTED, word(0)], b"", "2 topics"),
        ([b"\x11" * 32, word(0), word(1)], b"", "not a job event"),
    ],
)
def test_bad_logs_are_named(topics: list[bytes], data: bytes, reason: str) -> None:
    with pytest.raises(LogDecodeError, match=reason):
        decode_job_log({"topics": topics, "data": data, "blockNumber": 1, "logIndex": 0})
