"""JSON-RPC to the chain: calls, logs, and signed transactions with managed nonces.

web3 does the transport, gas estimation and receipts; this module adds what a
job runner needs on top: one nonce sequence shared by concurrent senders,
reverts named by their custom error, and retries of transient failures only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)
from web3.types import FilterParams, LogReceipt, TxParams, TxReceipt, Wei

from ..backoff import backoff_s
from ..config import TangleSettings
from .abi import Function, Revert, decode_revert

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures worth trying again: the node was unreachable, slow or busy.
TRANSIENT = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
    ProviderConnectionError,
    TooManyRequests,
    TimeExhausted,
)


class ChainError(Exception):
    """The chain refused or could not be reached; the message is safe to log."""


class Unreachable(ChainError):
    """The RPC endpoint did not answer (connection refused, timeout, rate limit)."""


class RpcRefused(ChainError):
    """The RPC endpoint answered with an error that is not a revert (e.g. a range too large)."""


class Reverted(ChainError):
    """A call or transaction reverted; `revert` names the custom error."""

    def __init__(self, function: str, revert: Revert) -> None:
        super().__init__(f"{function} reverted: {revert}")
        self.revert = revert


def _revert_data(error: ContractLogicError) -> bytes:
    data = error.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""


def _is_nonce_error(error: Web3RPCError) -> bool:
    text = str(error).lower()
    return "nonce" in text and ("too low" in text or "already" in text or "used" in text)


class NonceManager:
    """Hands out consecutive nonces to concurrent senders.

    The nonce is taken under a lock held until the transaction is accepted by
    the node, so a send that fails before broadcast leaves no gap.  `resync`
    re-reads the pending count after a "nonce too low".
    """

    def __init__(self, fetch: Callable[[], Awaitable[int]]) -> None:
        self._fetch = fetch
        self._next: int | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def reserve(self) -> AsyncIterator[int]:
        async with self._lock:
            if self._next is None:
                self._next = await self._fetch()
            nonce = self._next
            yield nonce
            # Only reached when the body did not raise: the nonce is spent.
            self._next = nonce + 1

    async def resync(self) -> None:
        async with self._lock:
            self._next = await self._fetch()


@dataclass(frozen=True)
class Sent:
    tx_hash: str
    receipt: TxReceipt


class Chain:
    """One RPC endpoint, the Tangle contract addresses, and (optionally) a signing key."""

    def __init__(
        self,
        settings: TangleSettings,
        account: LocalAccount | None = None,
        *,
        w3: AsyncWeb3[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.account = account
        self.w3: AsyncWeb3[Any] = w3 or AsyncWeb3(
            AsyncHTTPProvider(settings.http_rpc_url, request_kwargs={"timeout": 30})
        )
        self.tangle = self._address(settings.tangle_contract, "tangle_contract")
        self.staking = self._address(settings.staking_contract, "staking_contract")
        self.status_registry = self._address(
            settings.status_registry_contract, "status_registry_contract"
        )
        self.nonces = NonceManager(self._pending_count)
        self._chain_id: int | None = None
        self._gas_price: tuple[float, int] | None = None

    @staticmethod
    def _address(value: str, key: str) -> ChecksumAddress:
        if not value:
            # An empty address fails loudly at first use rather than calling address zero.
            return cast(ChecksumAddress, "")
        try:
            return to_checksum_address(value)
        except ValueError:
            raise ChainError(f"tangle.{key}: not an address") from None

    @property
    def address(self) -> ChecksumAddress:
        """The signer's address (the operator in `run`, the customer in `submit-job`)."""
        if self.account is None:
            raise ChainError("no key loaded")
        return to_checksum_address(self.account.address)

    async def aclose(self) -> None:
        provider = self.w3.provider
        if isinstance(provider, AsyncHTTPProvider):
            await provider.disconnect()

    # --- reads ------------------------------------------------------------------

    async def _read(self, what: str, request: Awaitable[T]) -> T:
        """Await a read, turning transport and RPC failures into ChainError subclasses."""
        try:
            return await request
        except Web3RPCError as error:
            raise RpcRefused(f"{what}: {error.message or error}") from None
        except TRANSIENT as error:
            raise Unreachable(
                f"{what}: no answer from {self.settings.http_rpc_url} ({type(error).__name__})"
            ) from None

    async def block_number(self) -> int:
        return int(await self._read("eth_blockNumber", self.w3.eth.block_number))

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(await self._read("eth_chainId", self.w3.eth.chain_id))
        return self._chain_id

    async def get_logs(
        self, from_block: int, to_block: int, topics: list[Any], address: str | None = None
    ) -> list[LogReceipt]:
        params: FilterParams = {
            "address": to_checksum_address(address or self.tangle),
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": topics,
        }
        return list(await self._read("eth_getLogs", self.w3.eth.get_logs(params)))

    async def call(
        self, to: str, function: Function, *args: Any, sender: str | None = None
    ) -> tuple[Any, ...]:
        """eth_call; a revert raises Reverted with the decoded error."""
        self._require(to, function)
        params: TxParams = {"to": to_checksum_address(to), "data": function.calldata(*args)}
        if sender is not None:
            params["from"] = to_checksum_address(sender)
        try:
            data = await self._read(function.name, self.w3.eth.call(params))
        except ContractLogicError as error:
            raise Reverted(function.name, decode_revert(_revert_data(error))) from None
        return function.decode_output(bytes(data))

    # --- transactions -------------------------------------------------------------

    async def _pending_count(self) -> int:
        return int(await self.w3.eth.get_transaction_count(self.address, "pending"))

    async def _current_gas_price(self) -> int:
        # One gas price read per few seconds is plenty; results sent in a burst share it.
        now = time.monotonic()
        if self._gas_price is None or now - self._gas_price[0] > 3.0:
            self._gas_price = (now, int(await self.w3.eth.gas_price))
        return self._gas_price[1]

    async def estimate(self, to: str, function: Function, *args: Any, value: int = 0) -> int:
        """Gas for the call from the operator; a revert raises Reverted (nothing is sent)."""
        self._require(to, function)
        params: TxParams = {
            "from": self.address,
            "to": to_checksum_address(to),
            "data": function.calldata(*args),
            "value": Wei(value),
        }
        try:
            return int(await self.w3.eth.estimate_gas(params))
        except ContractLogicError as error:
            raise Reverted(function.name, decode_revert(_revert_data(error))) from None

    async def send(
        self,
        to: str,
        function: Function,
        *args: Any,
        value: int = 0,
        attempts: int = 5,
        receipt_timeout_s: float = 120.0,
    ) -> Sent:
        """Estimate, sign with the loaded key, send, and wait for the receipt.

        Transient failures are retried with backoff; a revert (at estimation or
        in the mined receipt) raises Reverted at once.
        """
        if self.account is None:
            raise ChainError("no key loaded to sign with")
        for attempt in range(1, attempts + 1):
            try:
                gas = await self.estimate(to, function, *args, value=value)
                tx_hash = await self._sign_and_send(to, function, args, value, gas)
                receipt = await self.w3.eth.wait_for_transaction_receipt(
                    cast(HexStr, tx_hash), timeout=receipt_timeout_s, poll_latency=0.1
                )
            except Reverted:
                raise
            except Web3RPCError as error:
                if _is_nonce_error(error):
                    log.warning("nonce out of step (%s); re-reading it", function.name)
                    await self.nonces.resync()
                elif attempt == attempts:
                    raise RpcRefused(f"{function.name}: {error.message or error}") from None
                else:
                    log.warning("%s: RPC error, retrying: %s", function.name, error.message)
            except TRANSIENT as error:
                if attempt == attempts:
                    raise Unreachable(f"{function.name}: {type(error).__name__}") from None
                log.warning("%s: %s, retrying", function.name, type(error).__name__)
            else:
                if receipt["status"] == 1:
                    return Sent(tx_hash, receipt)
                # Mined but reverted (a race since estimation): ask the chain why.
                raise Reverted(function.name, await self._replay_revert(to, function, args))
            await asyncio.sleep(backoff_s(attempt, base_s=0.5, cap_s=5.0))
        raise Unreachable(f"{function.name}: gave up after {attempts} attempts")

    async def _sign_and_send(
        self, to: str, function: Function, args: tuple[Any, ...], value: int, gas: int
    ) -> str:
        assert self.account is not None
        chain_id = await self.chain_id()
        gas_price = await self._current_gas_price()
        async with self.nonces.reserve() as nonce:
            tx: dict[str, Any] = {
                "to": to_checksum_address(to),
                "data": function.calldata(*args),
                "value": value,
                "gas": gas * 12 // 10 + 10_000,
                "gasPrice": gas_price,
                "nonce": nonce,
                "chainId": chain_id,
            }
            signed = self.account.sign_transaction(tx)
            tx_hash = await self.w3.eth.send_raw_transaction(signed.raw_transaction)
        return "0x" + bytes(tx_hash).hex()

    async def _replay_revert(self, to: str, function: Function, args: tuple[Any, ...]) -> Revert:
        try:
            await self.call(to, function, *args, sender=self.address)
        except Reverted as reverted:
            return reverted.revert
        return Revert("reverted when mined, succeeds now")

    def _require(self, to: str, function: Function) -> None:
        if not to:
            raise ChainError(f"{function.name}: contract address not configured")
