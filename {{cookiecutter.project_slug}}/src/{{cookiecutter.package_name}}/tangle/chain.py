"""JSON-RPC to the chain: calls, logs, and signed transactions with managed nonces.

web3 does the transport, gas estimation and receipts; this module adds what a
job runner needs on top: one nonce sequence shared by concurrent senders, fees
under the operator's cap, a stuck transaction replaced with the same nonce,
transactions a reorg dropped sent again, reverts named by their custom error,
a deadline on every call, and one log line when the endpoint stops answering
and one when it is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ProviderConnectionError,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)
from web3.types import FilterParams, LogReceipt, RPCEndpoint

from ..backoff import backoff_s
from ..config import TangleSettings
from .abi import Function, Revert, decode_revert
from .fees import FeePolicy, Fees

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


def _is_known(error: Exception) -> bool:
    """The node already holds this very transaction: sending it again did no harm."""
    text = str(error).lower()
    return "already known" in text or "already imported" in text


def public_url(url: str) -> str:
    """Scheme, host and port only: hosted RPC URLs carry their API key in the path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class Outage:
    """Logs once when the endpoint stops answering (with why) and once when it is back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.since: float | None = None

    def failed(self, what: str, error: BaseException, asked_at: float) -> None:
        """`asked_at`: when the failed call was sent (a timeout is noticed only at its end)."""
        if self.since is None:
            self.since = asked_at
            log.warning(
                "chain RPC %s stopped answering: %s: %s", self.url, what, type(error).__name__
            )

    def answered(self) -> None:
        if self.since is not None:
            log.warning(
                "chain RPC %s answers again after %.1f s", self.url, time.monotonic() - self.since
            )
            self.since = None


class NonceManager:
    """Hands out consecutive nonces to concurrent senders.

    The nonce is taken under a lock held until the transaction is accepted by
    the node, so a send that fails before broadcast leaves no gap.  `resync`
    re-reads the pending count after a "nonce too low".
    """

    def __init__(self, fetch: Callable[[], Awaitable[int]]) -> None:
        self._fetch = fetch
        self.next: int | None = None
        self.lock = asyncio.Lock()

    @asynccontextmanager
    async def reserve(self) -> AsyncIterator[int]:
        async with self.lock:
            if self.next is None:
                self.next = await self._fetch()
            nonce = self.next
            yield nonce
            # Only reached when the body did not raise: the nonce is spent.
            self.next = nonce + 1

    async def resync(self) -> None:
        async with self.lock:
            self.next = await self._fetch()


# A receipt as JSON-RPC gives it: numbers and hashes as 0x-strings, logs in raw form.
Receipt = dict[str, Any]
BlockTag = Literal["latest", "pending", "safe", "finalized", "earliest"] | int


def _block_tag(block: BlockTag) -> str:
    return hex(block) if isinstance(block, int) else block


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, dict):  # some nodes nest revert data one level down
        value = value.get("data")
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return b""
    return b""


@dataclass(frozen=True)
class Sent:
    tx_hash: str
    receipt: Receipt

    @property
    def block_number(self) -> int:
        return int(self.receipt["blockNumber"], 16)

    @property
    def block_hash(self) -> str:
        return str(self.receipt["blockHash"])


@dataclass
class _Attempt:
    tx_hash: str
    raw: bytes
    fees: Fees


@dataclass
class _Slot:
    """One nonce of ours and every transaction signed for it, newest last."""

    nonce: int
    fields: dict[str, Any]  # the transaction without its fees
    attempts: list[_Attempt] = field(default_factory=list)
    sent_at: float = field(default_factory=time.monotonic)
    mined: bool = False  # seen in a receipt; a reorg can undo it
    awaited: bool = True  # a `send` is waiting for it (else `keep_transactions` looks after it)

    @property
    def last(self) -> _Attempt:
        return self.attempts[-1]


class _NonceTaken(Exception):
    """Another transaction (not one of ours for this slot) used the nonce."""


# Middleware this module does the work of: it passes checksummed addresses, signs with
# the chain id and estimates gas itself.  The validation middleware would also read
# eth_chainId before every call and estimate, doubling the round trips.
_UNUSED_MIDDLEWARE = ("validation", "gas_price_strategy", "ens_name_to_address", "gas_estimate")


def _web3(settings: TangleSettings) -> AsyncWeb3[Any]:
    w3: AsyncWeb3[Any] = AsyncWeb3(
        AsyncHTTPProvider(
            settings.http_rpc_url,
            request_kwargs={"timeout": aiohttp.ClientTimeout(total=settings.rpc_timeout_s)},
            exception_retry_configuration=None,
        )
    )
    for name in _UNUSED_MIDDLEWARE:
        w3.middleware_onion.remove(name)
    return w3


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
        # No retries inside web3: a hung endpoint fails after rpc_timeout_s, and the
        # loops above decide when to try again.
        self.w3: AsyncWeb3[Any] = w3 or _web3(settings)
        self.tangle = self._address(settings.tangle_contract, "tangle_contract")
        self.staking = self._address(settings.staking_contract, "staking_contract")
        self.status_registry = self._address(
            settings.status_registry_contract, "status_registry_contract"
        )
        self.nonces = NonceManager(functools.partial(self.transaction_count, "pending"))
        self.fee_policy = FeePolicy(settings)
        self.outage = Outage(public_url(settings.http_rpc_url))
        self._chain_id: int | None = None
        self._fees: tuple[float, Fees | None] | None = None
        self._slots: dict[int, _Slot] = {}
        self._mined_count: int | None = None
        self._access_lists = True  # until the endpoint says it has no eth_createAccessList
        # For metrics: sends waiting for the base fee to fall, wei paid in fees.
        self.waiting_for_fee = 0
        self.fees_paid_wei = 0
        # Awaited before every broadcast; raises a ChainError when this process may
        # not send (a `run` replica that is not the leader: tangle.leader).
        self.fence: Callable[[], Awaitable[None]] | None = None

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

    @property
    def pending_transactions(self) -> int:
        """Our transactions not yet final (mined, or waiting to be)."""
        return len(self._slots)

    def oldest_unmined_s(self) -> float:
        sent = [slot.sent_at for slot in self._slots.values() if not slot.mined]
        return time.monotonic() - min(sent) if sent else 0.0

    async def balance(self) -> int:
        return await self._read("eth_getBalance", self.w3.eth.get_balance(self.address))

    async def aclose(self) -> None:
        provider = self.w3.provider
        if isinstance(provider, AsyncHTTPProvider):
            await provider.disconnect()

    # --- reads ------------------------------------------------------------------

    async def _read(self, what: str, request: Awaitable[T]) -> T:
        """Await one RPC call within rpc_timeout_s, as ChainError subclasses on failure."""
        asked_at = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.rpc_timeout_s):
                result = await request
        except Web3RPCError as error:
            self.outage.answered()
            raise RpcRefused(f"{what}: {error.message or error}") from None
        except TRANSIENT as error:
            self.outage.failed(what, error, asked_at)
            raise Unreachable(
                f"{what}: no answer from {self.outage.url} ({type(error).__name__})"
            ) from None
        self.outage.answered()
        return result

    async def _request(self, method: str, params: list[Any], what: str | None = None) -> Any:
        """One JSON-RPC call as is: the hot paths skip web3's formatters, which cost more
        CPU than the call (a receipt of a batch took 10 ms to turn into AttributeDicts)."""
        response = await self._read(
            method, self.w3.provider.make_request(cast(RPCEndpoint, method), params)
        )
        error = response.get("error")
        if error is None:
            return response.get("result")
        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        if isinstance(error, dict) and (error.get("code") == 3 or "revert" in message.lower()):
            raise Reverted(what or method, decode_revert(_hex_bytes(error.get("data"))))
        raise RpcRefused(f"{what or method}: {message}")

    async def block_number(self) -> int:
        return int(await self._request("eth_blockNumber", []), 16)

    async def block_hash(self, number: int) -> str | None:
        """The hash of block `number` on the chain as the node sees it now."""
        try:
            block = await self._request("eth_getBlockByNumber", [hex(number), False])
        except RpcRefused:
            return None
        return None if not block else str(block["hash"])

    async def block_time(self, number: int) -> int:
        """The timestamp of block `number`."""
        block = await self._request("eth_getBlockByNumber", [hex(number), False])
        return int(block["timestamp"], 16) if block else 0

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(await self._request("eth_chainId", []), 16)
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
        self,
        to: str,
        function: Function,
        *args: Any,
        sender: str | None = None,
        block: BlockTag = "latest",
    ) -> tuple[Any, ...]:
        """eth_call at `block` (e.g. "pending"); a revert raises Reverted, its error decoded."""
        self._require(to, function)
        params = {"to": to, "data": "0x" + function.calldata(*args).hex()}
        if sender is not None:
            params["from"] = sender
        data = await self._request("eth_call", [params, _block_tag(block)], function.name)
        return function.decode_output(_hex_bytes(data))

    async def transaction_count(self, block: BlockTag = "latest") -> int:
        """Transactions the signer has sent, as of `block` ("pending" counts the mempool)."""
        count = await self._request("eth_getTransactionCount", [self.address, _block_tag(block)])
        return int(count, 16)

    # --- fees -------------------------------------------------------------------

    async def fees(self) -> Fees | None:
        """Fees for a transaction now, or None while the base fee is above max_fee_gwei.

        Read at most once a second: results sent in a burst share one quote.
        """
        now = time.monotonic()
        if self._fees is not None and now - self._fees[0] < 1.0:
            return self._fees[1]
        block = await self._request("eth_getBlockByNumber", ["pending", False])
        base_fee = block.get("baseFeePerGas") if block else None
        if base_fee is None:
            price = int(await self._request("eth_gasPrice", []), 16)
            quote = self.fee_policy.quote(None, price)
        else:
            tip = self.fee_policy.tip
            if tip is None:
                tip = int(await self._request("eth_maxPriorityFeePerGas", []), 16)
            quote = self.fee_policy.quote(int(base_fee, 16), tip)
        self._fees = (now, quote)
        return quote

    async def _affordable_fees(self, what: str) -> Fees:
        """The current fees, waiting (logged once) while the base fee is above the cap."""
        fees = await self.fees()
        if fees is not None:
            return fees
        log.warning(
            "%s waits: the base fee is above max_fee_gwei (%g)", what, self.settings.max_fee_gwei
        )
        self.waiting_for_fee += 1
        waited = time.monotonic()
        try:
            while fees is None:
                await asyncio.sleep(1.0)
                try:
                    fees = await self.fees()
                except Unreachable:
                    continue
        finally:
            self.waiting_for_fee -= 1
        log.warning(
            "%s: the base fee is under the cap again after %.0f s", what, time.monotonic() - waited
        )
        return fees

    # --- transactions -------------------------------------------------------------

    async def _simulate(
        self, to: str, function: Function, args: tuple[Any, ...], value: int
    ) -> tuple[int, list[Any]]:
        """Gas and the access list of the call, from one run of eth_createAccessList.

        eth_estimateGas binary-searches the gas limit, running the call a dozen times
        or more: on anvil it cost 10 eth_calls' worth for a batch of results.  The
        access list goes into the transaction, so the gas used matches the run.
        Endpoints without the method get eth_estimateGas.
        """
        self._require(to, function)
        params = {
            "from": self.address,
            "to": to,
            "data": "0x" + function.calldata(*args).hex(),
            "value": hex(value),
        }
        if self._access_lists:
            try:
                plan = await self._request(
                    "eth_createAccessList", [params, "pending"], function.name
                )
            except RpcRefused as error:
                log.info("eth_createAccessList unavailable (%s); estimating gas instead", error)
                self._access_lists = False
            else:
                if not plan.get("error"):
                    return int(plan["gasUsed"], 16), list(plan.get("accessList") or [])
                # geth reports a revert inside the result, without its data: ask eth_call.
                await self.call(to, function, *args, sender=self.address, block="pending")
        gas = int(await self._request("eth_estimateGas", [params], function.name), 16)
        return gas, []

    async def send(self, to: str, function: Function, *args: Any, value: int = 0) -> Sent:
        """Estimate, sign with the loaded key, send, and wait until it is mined.

        A revert (at estimation or in the mined receipt) raises Reverted; an
        unreachable endpoint before the transaction is out raises Unreachable.
        Once it is out, this waits for it: a transaction pending longer than
        `replace_after_s` is replaced (same nonce, higher fee, within the cap).
        """
        if self.account is None:
            raise ChainError("no key loaded to sign with")
        self._require(to, function)
        while True:
            gas, access_list = await self._simulate(to, function, args, value)
            fees = await self._affordable_fees(function.name)
            fields = {
                "to": to_checksum_address(to),
                "data": function.calldata(*args),
                "value": value,
                "gas": gas * 12 // 10 + 10_000,
                "chainId": await self.chain_id(),
            }
            if access_list:
                fields["accessList"] = access_list
            slot = await self._send_new(fields, fees)
            try:
                tx_hash, receipt = await self._until_mined(slot, function.name)
            except _NonceTaken:
                log.warning(
                    "%s: nonce %d was used by another transaction; sending again",
                    function.name,
                    slot.nonce,
                )
                continue
            if int(receipt["status"], 16) == 1:
                return Sent(tx_hash, receipt)
            # Mined but reverted (a race since estimation): ask the chain why.
            raise Reverted(function.name, await self._replay_revert(to, function, args))

    def _sign(self, fields: dict[str, Any], nonce: int, fees: Fees) -> _Attempt:
        assert self.account is not None
        signed = self.account.sign_transaction({**fields, **fees.fields(), "nonce": nonce})
        return _Attempt("0x" + bytes(signed.hash).hex(), bytes(signed.raw_transaction), fees)

    async def _broadcast(self, attempt: _Attempt) -> None:
        """Under the nonce lock: only a process that may send right now sends."""
        assert self.nonces.lock.locked()
        if self.fence is not None:
            await self.fence()
        try:
            await self._request("eth_sendRawTransaction", ["0x" + attempt.raw.hex()])
        except RpcRefused as error:
            if not _is_known(error):
                raise

    async def _send_new(self, fields: dict[str, Any], fees: Fees) -> _Slot:
        """Take the next nonce, sign and broadcast; nonce clashes re-read the count."""
        while True:
            try:
                async with self.nonces.reserve() as nonce:
                    attempt = self._sign(fields, nonce, fees)
                    slot = _Slot(nonce, fields, [attempt])
                    try:
                        await self._broadcast(attempt)
                    except Unreachable:
                        # It may have reached the node: keep the nonce; waiting re-sends it.
                        log.warning("nonce %d: sending got no answer; will send it again", nonce)
                    self._slots[nonce] = slot
                    return slot
            except RpcRefused as error:
                text = str(error).lower()
                if "nonce" in text or "underpriced" in text:
                    log.warning("nonce out of step (%s); re-reading it", error)
                    await self.nonces.resync()
                    continue
                raise

    async def _receipt(self, slot: _Slot) -> tuple[str, Receipt] | None:
        for attempt in reversed(slot.attempts):
            receipt = await self._request("eth_getTransactionReceipt", [attempt.tx_hash])
            if receipt:
                return attempt.tx_hash, receipt
        return None

    async def _until_mined(self, slot: _Slot, what: str) -> tuple[str, Receipt]:
        failures = 0
        # A local chain mines at once, a public one every few seconds: ask soon, then less often.
        poll_s = 0.01
        try:
            while True:
                try:
                    found = await self._receipt(slot)
                    if found is not None:
                        slot.mined = True
                        receipt = found[1]
                        self.fees_paid_wei += int(receipt["gasUsed"], 16) * int(
                            receipt.get("effectiveGasPrice", "0x0"), 16
                        )
                        return found
                    if time.monotonic() - slot.sent_at >= self.settings.replace_after_s:
                        await self._unstick(slot, what)
                except Unreachable:
                    # Logged by the outage tracker; the transaction is out there: keep asking.
                    failures += 1
                    await asyncio.sleep(backoff_s(failures, base_s=0.5, cap_s=5.0))
                    continue
                except RpcRefused as error:
                    log.warning("%s: nonce %d: %s", what, slot.nonce, error)
                failures = 0
                await asyncio.sleep(poll_s)
                poll_s = min(poll_s * 2, 1.0)
        finally:
            slot.awaited = False

    async def _unstick(self, slot: _Slot, what: str) -> None:
        """Replace a transaction pending past its deadline: same nonce, higher fee."""
        slot.sent_at = time.monotonic()
        if await self.transaction_count("latest") > slot.nonce:
            if await self._receipt(slot) is None:
                self._slots.pop(slot.nonce, None)
                await self.nonces.resync()
                raise _NonceTaken
            return
        fees = self.fee_policy.replacement(slot.last.fees, await self.fees())
        if fees is None:
            # Replacing would pass the cap: keep the transaction out there and wait.
            log.warning(
                "%s: transaction %s (nonce %d) pending for over %g s; a higher fee would pass "
                "max_fee_gwei, so it is sent again as it is",
                what,
                slot.last.tx_hash,
                slot.nonce,
                self.settings.replace_after_s,
            )
            async with self.nonces.lock:
                await self._broadcast(slot.last)
            return
        attempt = self._sign(slot.fields, slot.nonce, fees)
        try:
            async with self.nonces.lock:
                await self._broadcast(attempt)
        except RpcRefused as error:
            if "underpriced" not in str(error).lower():
                raise
            # The pool holds a dearer one (ours, sent before a restart?); bid above it next time.
            slot.attempts.append(_Attempt(slot.last.tx_hash, slot.last.raw, fees))
            return
        log.warning(
            "%s: transaction %s (nonce %d) pending for over %g s; replaced by %s (%s)",
            what,
            slot.last.tx_hash,
            slot.nonce,
            self.settings.replace_after_s,
            attempt.tx_hash,
            fees,
        )
        slot.attempts.append(attempt)

    async def keep_transactions(self, final_block: int) -> bool:
        """Forget transactions final at `final_block`; repair what a reorg undid.

        A reorg takes transactions out of blocks, and a node need not return them to
        its pool (anvil does not): the nonce count falls below ours and everything we
        send after waits in the queue.  Each missing nonce gets an empty transaction:
        no gap at any depth.  A dropped result is not sent again as signed: the reorg
        may have taken its call too (it would revert), and the chain hands that call's
        id to the next call (it would answer another request); the caller, told the
        chain moved back, decides what to answer.  One still not mined after
        `replace_after_s` is replaced like any stuck one.
        """
        if self.account is None:
            return False
        # Taken before the count: a receipt seen while we wait for it is no reorg.
        seen_mined = {nonce for nonce, slot in self._slots.items() if slot.mined}
        mined = await self.transaction_count("latest")
        if self._slots:
            final = await self.transaction_count(final_block)
            for nonce in [nonce for nonce in self._slots if nonce < final]:
                del self._slots[nonce]
        # A count lower than last seen, or a transaction seen mined whose nonce the chain
        # no longer counts: the second holds even when no poll fell between mining and reorg.
        lost = sorted(nonce for nonce in seen_mined if nonce >= mined and nonce in self._slots)
        moved_back = bool(lost) or (self._mined_count is not None and mined < self._mined_count)
        self._mined_count = mined
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.awaited or slot.nonce < mined or moved_back:
                continue
            if now - slot.sent_at >= self.settings.replace_after_s:
                try:
                    await self._unstick(slot, "a transaction sent again")
                except _NonceTaken:
                    log.warning("nonce %d was used by another transaction", slot.nonce)
        if moved_back:
            log.warning("the chain moved back: %d of our transactions left their blocks", len(lost))
        for nonce in lost:
            del self._slots[nonce]
        async with self.nonces.lock:
            gap = [n for n in range(mined, self.nonces.next or mined) if n not in self._slots]
            if gap:  # not those the pool holds (an earlier run's, say): they are no gap
                pending = await self.transaction_count("pending")
                gap = [nonce for nonce in gap if nonce >= pending]
            if gap:
                await self._fill(gap)
        return moved_back or bool(gap)

    async def _fill(self, nonces: list[int]) -> None:
        """Under the nonce lock: an empty transaction to ourselves for each nonce in a gap."""
        log.warning("nonces %s are missing below ours (a reorg?): filling them", nonces)
        fields = {"to": self.address, "value": 0, "gas": 21_000, "chainId": await self.chain_id()}
        fees = await self._affordable_fees("filling a nonce gap")
        for nonce in nonces:
            slot = _Slot(nonce, fields, [self._sign(fields, nonce, fees)], awaited=False)
            try:
                await self._broadcast(slot.last)
            except RpcRefused as error:  # the pool holds another one for it (an earlier run's)
                log.warning("nonce %d: %s", nonce, error)
                continue
            self._slots[nonce] = slot

    async def _replay_revert(self, to: str, function: Function, args: tuple[Any, ...]) -> Revert:
        try:
            await self.call(to, function, *args, sender=self.address)
        except Reverted as reverted:
            return reverted.revert
        return Revert("reverted when mined, succeeds now")

    def _require(self, to: str, function: Function) -> None:
        if not to:
            raise ChainError(f"{function.name}: contract address not configured")
