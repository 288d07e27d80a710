"""Decoding job events by hand.

The published ABI marks `JobSubmitted.jobIndex` as indexed, but the deployed
contract emits it in the data (3 topics, data `(uint8, address, bytes)`).
Both forms are accepted: with 4 topics, jobIndex is topic 3 and the data is
`(address, bytes)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_utils.address import to_checksum_address

from .abi import JOB_SUBMITTED, JOB_SUBMITTED_FROM_QUOTE


class LogDecodeError(ValueError):
    """A log with our topic0 whose layout we cannot read."""


@dataclass(frozen=True, order=True)
class JobCall:
    """One job call as the chain announced it; ordered by position on chain."""

    block_number: int
    log_index: int
    service_id: int
    call_id: int
    job_index: int
    caller: str
    inputs: bytes
    from_quote: bool = False


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    raise LogDecodeError(f"expected bytes or hex, got {type(value).__name__}")


def _uint(topic: Any) -> int:
    return int.from_bytes(_bytes(topic), "big")


def decode_job_log(log: Mapping[str, Any]) -> JobCall:
    """A JobSubmitted or JobSubmittedFromQuote log (web3 or raw JSON-RPC form) as a JobCall."""
    topics: Sequence[Any] = log["topics"]
    if not topics:
        raise LogDecodeError("log without topics")
    topic0 = _bytes(topics[0])
    data = _bytes(log["data"])
    try:
        if topic0 == JOB_SUBMITTED:
            if len(topics) == 3:
                job_index, caller, inputs = decode(["uint8", "address", "bytes"], data)
            elif len(topics) == 4:
                job_index = _uint(topics[3])
                caller, inputs = decode(["address", "bytes"], data)
            else:
                raise LogDecodeError(f"JobSubmitted with {len(topics)} topics")
            from_quote = False
        elif topic0 == JOB_SUBMITTED_FROM_QUOTE:
            if len(topics) != 3:
                raise LogDecodeError(f"JobSubmittedFromQuote with {len(topics)} topics")
            job_index, caller, _operators, _price, inputs = decode(
                ["uint8", "address", "address[]", "uint256", "bytes"], data
            )
            from_quote = True
        else:
            raise LogDecodeError(f"not a job event: topic0 0x{topic0.hex()}")
    except LogDecodeError:
        raise
    except Exception as error:  # eth-abi raises several unrelated types on bad data
        raise LogDecodeError(f"undecodable job event data: {error}") from None
    block = log["blockNumber"]
    index = log["logIndex"]
    return JobCall(
        block_number=int(block, 16) if isinstance(block, str) else int(block),
        log_index=int(index, 16) if isinstance(index, str) else int(index),
        service_id=_uint(topics[1]),
        call_id=_uint(topics[2]),
        job_index=int(job_index),
        caller=to_checksum_address(caller),
        inputs=bytes(inputs),
        from_quote=from_quote,
    )
