"""The hand-written signatures: selectors match tnt-core's, reverts decode to their names."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode

from {{ cookiecutter.package_name }}.tangle import abi


@pytest.mark.parametrize(
    ("function", "selector"),
    [
        (abi.SUBMIT_JOB, "3413e8ee"),
        (abi.SUBMIT_RESULT, "2d07e655"),
        (abi.SUBMIT_RESULTS, "aacdba9f"),
        (abi.REGISTER_OPERATOR, "d4e1ab7c"),
        (abi.STAKING_REGISTER_OPERATOR, "2acde098"),
        (abi.STAKING_IS_OPERATOR_ACTIVE, "eb473533"),
    ],
)
def test_selectors_match_the_contracts(function: abi.Function, selector: str) -> None:
    assert function.selector.hex() == selector


def test_calldata_and_output_round_trip() -> None:
    data = abi.SUBMIT_RESULTS.calldata(3, [1, 2], [b"a", b"bc"])
    assert data[:4] == abi.SUBMIT_RESULTS.selector
    struct = (0, "0x" + "11" * 20, 5, 1, True, False, 0)
    out = encode(["(uint8,address,uint64,uint32,bool,bool,uint256)"], [struct])
    ((job_index, _caller, created, results, completed, rfq, payment),) = (
        abi.GET_JOB_CALL.decode_output(out)
    )
    assert (job_index, created, results, completed, rfq, payment) == (0, 5, 1, True, False, 0)


def test_custom_errors_decode_with_their_arguments() -> None:
    operator = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    data = abi.RESULT_ALREADY_SUBMITTED.selector + encode(
        ["uint64", "uint64", "address"], [0, 12, operator]
    )
    revert = abi.decode_revert(data)
    assert revert.name == "ResultAlreadySubmitted"
    assert revert.args == (0, 12, operator)
    assert revert.name in abi.DONE_ERRORS
    assert str(revert) == f"ResultAlreadySubmitted(0, 12, {operator})"


def test_require_strings_and_unknown_errors() -> None:
    reason = abi.decode_revert(
        bytes.fromhex("08c379a0") + encode(["string"], ["Invalid signature"])
    )
    assert (reason.name, reason.args) == ("Error", ("Invalid signature",))
    assert abi.decode_revert(bytes.fromhex("deadbeef")).name == "0xdeadbeef"
    assert abi.decode_revert(b"").name == "revert without reason"
