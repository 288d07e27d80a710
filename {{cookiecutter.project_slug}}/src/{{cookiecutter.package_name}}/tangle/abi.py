"""The few tnt-core functions, events and errors this blueprint speaks, as signatures.

Only what we call is written here, in Solidity's own notation, and encoded with
eth-abi.  The published ABI files are not used: they are large, and wrong about
`JobSubmitted` (see `events.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import TupleType, parse
from eth_utils.crypto import keccak


def _split_types(params: str) -> tuple[str, ...]:
    """`uint64,(uint8,address),bytes` as its top-level types, by eth-abi's type grammar."""
    parsed = parse(f"({params})") if params else None
    if not isinstance(parsed, TupleType):
        return ()
    return tuple(item.to_type_str() for item in parsed.components)


@dataclass(frozen=True)
class Function:
    """`name(type,...)` with its return types, e.g. Function("isOnline(uint64,address)", "bool")."""

    signature: str
    returns: str = ""
    inputs: tuple[str, ...] = field(init=False)
    outputs: tuple[str, ...] = field(init=False)
    selector: bytes = field(init=False)

    def __post_init__(self) -> None:
        params = self.signature[self.signature.index("(") + 1 : -1]
        object.__setattr__(self, "inputs", _split_types(params))
        object.__setattr__(self, "outputs", _split_types(self.returns))
        object.__setattr__(self, "selector", keccak(text=self.signature)[:4])

    @property
    def name(self) -> str:
        return self.signature.split("(", 1)[0]

    def calldata(self, *args: Any) -> bytes:
        return self.selector + encode(list(self.inputs), list(args))

    def decode_output(self, data: bytes) -> tuple[Any, ...]:
        return tuple(decode(list(self.outputs), data))


# A Solidity custom error is named and encoded as a function: its selector prefixes the data.
CustomError = Function


@dataclass(frozen=True)
class Revert:
    """A decoded revert: the error's name and arguments, or the raw data when unknown."""

    name: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}({', '.join(str(arg) for arg in self.args)})"


def event_topic(signature: str) -> bytes:
    return keccak(text=signature)


def uint_topic(value: int) -> str:
    """An indexed uint (a service or call id) as an eth_getLogs topic."""
    return "0x" + encode(["uint64"], [value]).hex()


# --- Tangle (jobs, services, operators) -----------------------------------------

SUBMIT_JOB = Function("submitJob(uint64,uint8,bytes)", "uint64")
SUBMIT_RESULT = Function("submitResult(uint64,uint64,bytes)")
SUBMIT_RESULTS = Function("submitResults(uint64,uint64[],bytes[])")
GET_JOB_CALL = Function(
    "getJobCall(uint64,uint64)", "(uint8,address,uint64,uint32,bool,bool,uint256)"
)
GET_SERVICE = Function(
    "getService(uint64)",
    "(uint64,address,uint64,uint64,uint64,uint64,uint32,uint32,uint32,uint8,uint8,uint8,uint8)",
)
GET_SERVICE_OPERATORS = Function("getServiceOperators(uint64)", "address[]")
IS_SERVICE_OPERATOR = Function("isServiceOperator(uint64,address)", "bool")
IS_OPERATOR_REGISTERED = Function("isOperatorRegistered(uint64,address)", "bool")
REGISTER_OPERATOR = Function("registerOperator(uint64,bytes,string)")
GET_JOB_QUOTED_PRICE = Function("getJobQuotedPrice(uint64,uint64,address)", "uint256")
# JobQuoteDetails (SignatureLib.sol): requester, serviceId, jobIndex, price, timestamp, expiry,
# confidentiality, inputsHash; then the signature and the operator.
JOB_QUOTE = "((address,uint64,uint8,uint256,uint64,uint64,uint8,bytes32),bytes,address)"
SUBMIT_JOB_FROM_QUOTE = Function(f"submitJobFromQuote(uint64,uint8,bytes,{JOB_QUOTE}[])", "uint64")
PENDING_REWARDS = Function("pendingRewards(address)", "uint256")

JOB_SUBMITTED = event_topic("JobSubmitted(uint64,uint64,uint8,address,bytes)")
JOB_SUBMITTED_FROM_QUOTE = event_topic(
    "JobSubmittedFromQuote(uint64,uint64,uint8,address,address[],uint256,bytes)"
)
JOB_RESULT_SUBMITTED = event_topic("JobResultSubmitted(uint64,uint64,address,bytes)")

# --- MultiAssetDelegation (staking) ---------------------------------------------

STAKING_IS_OPERATOR = Function("isOperator(address)", "bool")
STAKING_IS_OPERATOR_ACTIVE = Function("isOperatorActive(address)", "bool")
STAKING_REGISTER_OPERATOR = Function("registerOperator()")
STAKING_REGISTER_OPERATOR_WITH_ASSET = Function("registerOperatorWithAsset(address,uint256)")
STAKING_MIN_OPERATOR_STAKE = Function("minOperatorStake()", "uint256")
STAKING_OPERATOR_BOND_TOKEN = Function("operatorBondToken()", "address")

# --- ERC-20 (the staking bond token) ---------------------------------------------

ERC20_BALANCE_OF = Function("balanceOf(address)", "uint256")
ERC20_ALLOWANCE = Function("allowance(address,address)", "uint256")
ERC20_APPROVE = Function("approve(address,uint256)", "bool")
ERC20_TRANSFER = Function("transfer(address,uint256)", "bool")
ERC20_SYMBOL = Function("symbol()", "string")

# --- OperatorStatusRegistry (heartbeats) ----------------------------------------

SUBMIT_HEARTBEAT_DIRECT = Function("submitHeartbeatDirect(uint64,uint64,uint8,bytes)")
IS_ONLINE = Function("isOnline(uint64,address)", "bool")
GET_LAST_HEARTBEAT = Function("getLastHeartbeat(uint64,address)", "uint256")

# The metrics payload the registry decodes when a service enables custom metrics.
METRIC_PAIRS = "(string,uint256)[]"

# --- errors (tnt-core src/libraries/Errors.sol) ---------------------------------

JOB_ALREADY_COMPLETED = CustomError("JobAlreadyCompleted(uint64,uint64)")
RESULT_ALREADY_SUBMITTED = CustomError("ResultAlreadySubmitted(uint64,uint64,address)")
ERRORS = (
    JOB_ALREADY_COMPLETED,
    RESULT_ALREADY_SUBMITTED,
    CustomError("JobCallNotFound(uint64,uint64)"),
    CustomError("ServiceNotFound(uint64)"),
    CustomError("ServiceNotActive(uint64)"),
    CustomError("ServiceExpired(uint64)"),
    CustomError("OperatorNotInService(uint64,address)"),
    CustomError("OperatorNotActive(address)"),
    CustomError("OperatorNotRegistered(uint64,address)"),
    CustomError("OperatorAlreadyRegistered(uint64,address)"),
    CustomError("NotPermittedCaller(uint64,address)"),
    CustomError("NotQuotedOperator(uint64,uint64)"),
    CustomError("InvalidJobIndex(uint8)"),
    CustomError("AggregationRequired(uint64,uint8)"),
    CustomError("SchemaValidationFailed(uint8,uint64,uint64,uint256)"),
    CustomError("InsufficientPayment(uint256,uint256)"),
    CustomError("InvalidMsgValue(uint256,uint256)"),
    CustomError("InsufficientStake(address,uint256,uint256)"),
    # MultiAssetDelegation (src/staking/DelegationErrors.sol)
    CustomError("OperatorBondTokenOnly(address)"),
    CustomError("InsufficientStake(uint256,uint256)"),
    CustomError("ZeroAmount()"),
    CustomError("LengthMismatch()"),
    CustomError("Error(string)"),
)
_BY_SELECTOR = {error.selector: error for error in ERRORS}

# Reverts meaning "this call needs nothing more from us".
DONE_ERRORS = frozenset({JOB_ALREADY_COMPLETED.name, RESULT_ALREADY_SUBMITTED.name})


def decode_revert(data: bytes) -> Revert:
    """Name a revert from its data; unknown selectors keep their hex."""
    error = _BY_SELECTOR.get(data[:4])
    if error is None:
        return Revert(f"0x{data.hex()}" if data else "revert without reason")
    try:
        return Revert(error.name, tuple(decode(list(error.inputs), data[4:])))
    except DecodingError:
        return Revert(error.name)
