"""The operator key: the SDK keystore layout, or OPERATOR_PRIVATE_KEY; never echoed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_keys.datatypes import PrivateKey
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.config import TangleSettings
from {{ cookiecutter.package_name }}.tangle.keys import (
    OperatorKeyError,
    operator_account,
    read_keystore,
    uncompressed_public_key,
    write_keystore,
)

SECRET = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def sdk_keystore(root: Path, public: bytes, secret: bytes = SECRET) -> None:
    """A key file as the blueprint SDK writes it: JSON [[public bytes], [secret bytes]]."""
    directory = root / "Ecdsa"
    directory.mkdir(parents=True)
    (directory / "0badc0de").write_text(json.dumps([list(public), list(secret)]))


def test_reads_the_sdk_layout_with_file_uri(tmp_path: Path) -> None:
    sdk_keystore(tmp_path, PrivateKey(SECRET).public_key.to_compressed_bytes())
    assert read_keystore(f"file://{tmp_path}").address == ADDRESS
    assert read_keystore(str(tmp_path)).address == ADDRESS


def test_uncompressed_public_keys_are_accepted(tmp_path: Path) -> None:
    sdk_keystore(tmp_path, b"\x04" + PrivateKey(SECRET).public_key.to_bytes())
    assert read_keystore(str(tmp_path)).address == ADDRESS


def test_a_public_key_of_another_secret_is_refused(tmp_path: Path) -> None:
    other = PrivateKey(b"\x01" * 32).public_key.to_compressed_bytes()
    sdk_keystore(tmp_path, other)
    with pytest.raises(OperatorKeyError, match="does not belong"):
        read_keystore(str(tmp_path))


@pytest.mark.parametrize("content", ["not json", "[[1, 2]]", '{"secret": 1}'])
def test_malformed_files_are_named_without_their_content(tmp_path: Path, content: str) -> None:
    (tmp_path / "Ecdsa").mkdir()
    (tmp_path / "Ecdsa" / "k").write_text(content)
    with pytest.raises(OperatorKeyError, match=r"expected JSON \[\[public key bytes\]"):
        read_keystore(str(tmp_path))


def test_empty_keystore_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(OperatorKeyError, match=r"no ECDSA key in .*Ecdsa"):
        read_keystore(str(tmp_path))


def test_write_then_read(tmp_path: Path) -> None:
    path = write_keystore(str(tmp_path / "ks"), SECRET)
    assert path.parent.name == "Ecdsa"
    assert path.stat().st_mode & 0o077 == 0
    assert read_keystore(str(tmp_path / "ks")).address == ADDRESS


def test_environment_key_wins_and_is_never_echoed(tmp_path: Path) -> None:
    settings = TangleSettings(
        keystore_uri=str(tmp_path / "empty"), operator_private_key=SecretStr("0x" + SECRET.hex())
    )
    account = operator_account(settings)
    assert account.address == ADDRESS
    assert uncompressed_public_key(account)[0] == 4
    assert len(uncompressed_public_key(account)) == 65

    bad = "zz" + SECRET.hex()[2:]
    with pytest.raises(OperatorKeyError) as caught:
        operator_account(TangleSettings(operator_private_key=SecretStr(bad)))
    assert "OPERATOR_PRIVATE_KEY" in str(caught.value)
    assert SECRET.hex()[2:] not in str(caught.value)


def test_without_env_key_the_keystore_is_used(tmp_path: Path) -> None:
    write_keystore(str(tmp_path), SECRET)
    assert operator_account(TangleSettings(keystore_uri=str(tmp_path))).address == ADDRESS


def test_an_unreadable_key_file_is_not_called_malformed(tmp_path: Path) -> None:
    (tmp_path / "Ecdsa").mkdir()
    # A link to nothing cannot be read, whoever runs the test (root reads any mode).
    (tmp_path / "Ecdsa" / "k").symlink_to(tmp_path / "gone")
    with pytest.raises(OperatorKeyError, match=r"Ecdsa/k: cannot read the key file \(No such"):
        read_keystore(str(tmp_path))


def test_a_key_file_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_keystore(str(tmp_path), SECRET)
    read_keystore(str(tmp_path))
    assert "readable by other users" not in caplog.text
    path.chmod(0o644)
    assert read_keystore(str(tmp_path)).address == ADDRESS
    assert f"{path}: the key file is readable by other users; chmod 600 it" in caplog.text


def encrypted_keystore(root: Path, password: str) -> Path:
    from eth_account import Account

    directory = root / "Ecdsa"
    directory.mkdir(parents=True)
    path = directory / "UTC--operator"
    # pbkdf2 with few rounds: the format eth-account and geth read, quick to open in a test.
    path.write_text(json.dumps(Account.encrypt(SECRET, password, kdf="pbkdf2", iterations=2)))
    path.chmod(0o600)
    return path


def test_keystore_password_opens_an_encrypted_keystore(tmp_path: Path) -> None:
    path = encrypted_keystore(tmp_path, "correct horse")
    settings = TangleSettings(
        keystore_uri=str(tmp_path), keystore_password=SecretStr("correct horse")
    )
    assert operator_account(settings).address == ADDRESS

    wrong = TangleSettings(keystore_uri=str(tmp_path), keystore_password=SecretStr("battery"))
    with pytest.raises(OperatorKeyError) as caught:
        operator_account(wrong)
    assert str(caught.value) == f"{path}: KEYSTORE_PASSWORD does not open this encrypted keystore"
    assert "battery" not in str(caught.value)

    with pytest.raises(OperatorKeyError, match="set KEYSTORE_PASSWORD"):
        operator_account(TangleSettings(keystore_uri=str(tmp_path)))
