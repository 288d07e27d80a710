"""What a transaction may pay: EIP-1559 fees under the operator's cap.

A result is worth sending only below `max_fee_gwei`; above it, it waits for the
base fee to fall instead of paying any price.  Replacements raise both fees by a
fifth: geth refuses a replacement that raises either by less than 10 %
(`txpool.pricebump`), and some nodes ask for 12.5 %.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TangleSettings

GWEI = 10**9
_BUMP_PERCENT = 20


def _bump(value: int) -> int:
    return value + max(value * _BUMP_PERCENT // 100, 1)


@dataclass(frozen=True)
class Fees:
    """Per-gas prices of one transaction; `priority` None means a legacy `gasPrice`."""

    max_fee: int
    priority: int | None

    def fields(self) -> dict[str, int]:
        if self.priority is None:
            return {"gasPrice": self.max_fee}
        return {"maxFeePerGas": self.max_fee, "maxPriorityFeePerGas": self.priority}

    def __str__(self) -> str:
        if self.priority is None:
            return f"gas price {self.max_fee / GWEI:.3g} gwei"
        return f"max fee {self.max_fee / GWEI:.3g} gwei, tip {self.priority / GWEI:.3g} gwei"


class FeePolicy:
    """The operator's caps from [tangle], applied to what the chain asks now."""

    def __init__(self, settings: TangleSettings) -> None:
        self.cap = int(settings.max_fee_gwei * GWEI)
        self.tip = (
            None if settings.priority_fee_gwei is None else int(settings.priority_fee_gwei * GWEI)
        )

    def quote(self, base_fee: int | None, suggested_tip: int) -> Fees | None:
        """Fees for the next block, or None while its base fee is above the cap.

        The max fee leaves room for the base fee to double (as wallets do), within the cap.
        """
        tip = suggested_tip if self.tip is None else self.tip
        if base_fee is None:  # a chain without EIP-1559: one gas price
            price = suggested_tip
            return None if price > self.cap else Fees(price, None)
        if base_fee > self.cap:
            return None
        tip = min(tip, self.cap - base_fee)
        return Fees(min(2 * base_fee + tip, self.cap), tip)

    def replacement(self, previous: Fees, now: Fees | None) -> Fees | None:
        """Fees to replace a stuck transaction with, or None when that would pass the cap."""
        now = now or Fees(0, 0)  # at least what the chain asks now, if it answered
        max_fee = max(_bump(previous.max_fee), now.max_fee)
        if previous.priority is None or now.priority is None:  # legacy stays legacy
            return None if max_fee > self.cap else Fees(max_fee, None)
        fees = Fees(max_fee, max(_bump(previous.priority), now.priority))
        return None if fees.max_fee > self.cap else fees
