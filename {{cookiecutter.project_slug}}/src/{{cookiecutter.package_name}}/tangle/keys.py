"""The operator's ECDSA key: from the Tangle SDK keystore, or OPERATOR_PRIVATE_KEY.

Keystore layout (blueprint SDK `crates/keystore/src/storage/fs.rs`):
`<KEYSTORE_URI>/Ecdsa/<hex name>`, each file JSON `[[public key bytes], [secret key bytes]]`,
or a standard encrypted Ethereum keystore (Web3 Secret Storage, "V3") that
KEYSTORE_PASSWORD opens.  The environment variable is for local development;
whatever the source, the key never appears in a log line or an error message.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import PrivateKey
from pydantic import SecretStr
from pydantic_core import from_json

from ..config import TangleSettings

log = logging.getLogger(__name__)

# A key file is small; anything larger is not one (and is not read whole).
_MAX_KEY_FILE_BYTES = 64 * 1024
_EXPECTED = "expected JSON [[public key bytes], [secret key bytes]] or an encrypted (V3) keystore"


class OperatorKeyError(Exception):
    """No usable operator key; the message says where we looked and why it failed."""


def keystore_dir(uri: str) -> Path:
    """The directory a KEYSTORE_URI names (`file://` stripped, as the SDK does)."""
    return Path(uri.removeprefix("file://"))


def _account_from_secret(secret: bytes, where: str) -> LocalAccount:
    if len(secret) != 32:
        raise OperatorKeyError(
            f"{where}: expected a 32-byte secp256k1 secret, got {len(secret)} bytes"
        )
    try:
        account: LocalAccount = Account.from_key(secret)
    except ValueError:
        raise OperatorKeyError(f"{where}: not a valid secp256k1 secret key") from None
    return account


def _read_key_file(path: Path) -> Any:
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            raw = file.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise OperatorKeyError(f"{path}: cannot read the key file ({error.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: the key file is readable by other users; chmod 600 it", path)
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise OperatorKeyError(f"{path}: larger than any key file ({_MAX_KEY_FILE_BYTES} bytes)")
    try:
        return from_json(raw)
    except ValueError:
        raise OperatorKeyError(f"{path}: not JSON; {_EXPECTED}") from None


def _decrypt(path: Path, content: dict[str, Any], password: SecretStr | None) -> bytes:
    if password is None:
        raise OperatorKeyError(f"{path}: an encrypted keystore; set KEYSTORE_PASSWORD to open it")
    try:
        return bytes(Account.decrypt(content, password.get_secret_value()))
    except (ValueError, KeyError, TypeError):
        # eth-account says "MAC mismatch" for a wrong password; a broken file fails the same way.
        raise OperatorKeyError(
            f"{path}: KEYSTORE_PASSWORD does not open this encrypted keystore"
        ) from None


def read_keystore(uri: str, password: SecretStr | None = None) -> LocalAccount:
    """The first ECDSA key in the keystore (files sorted by name)."""
    directory = keystore_dir(uri) / "Ecdsa"
    try:
        # A link to a missing file is listed, so that it is reported rather than skipped.
        files = sorted(path for path in directory.glob("*") if path.is_file() or path.is_symlink())
    except OSError as error:
        raise OperatorKeyError(
            f"{directory}: cannot list the keystore ({error.strerror})"
        ) from None
    if not files:
        raise OperatorKeyError(
            f"no ECDSA key in {directory} (expected files under <KEYSTORE_URI>/Ecdsa/)"
        )
    path = files[0]
    content = _read_key_file(path)
    if isinstance(content, dict) and ("crypto" in content or "Crypto" in content):
        return _account_from_secret(_decrypt(path, content, password), str(path))
    try:
        public, secret = (bytes(part) for part in content)
    except (ValueError, TypeError):
        raise OperatorKeyError(f"{path}: {_EXPECTED}") from None
    account = _account_from_secret(secret, str(path))
    derived = PrivateKey(secret).public_key
    if public and public not in (
        derived.to_compressed_bytes(),
        b"\x04" + derived.to_bytes(),
        derived.to_bytes(),
    ):
        raise OperatorKeyError(f"{path}: the public key does not belong to the secret key")
    return account


def write_keystore(uri: str, secret: bytes) -> Path:
    """Store a key in the SDK layout (for `tangle import-key` and tests)."""
    _account_from_secret(secret, "key")  # refuse to store what is not a key
    public = PrivateKey(secret).public_key.to_compressed_bytes()
    directory = keystore_dir(uri) / "Ecdsa"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / public.hex()
    path.write_text(json.dumps([list(public), list(secret)]), encoding="utf-8")
    path.chmod(0o600)
    return path


def operator_account(settings: TangleSettings) -> LocalAccount:
    """OPERATOR_PRIVATE_KEY when set (local development), else the keystore."""
    if settings.operator_private_key is not None:
        raw = settings.operator_private_key.get_secret_value().strip().removeprefix("0x")
        try:
            secret = bytes.fromhex(raw)
        except ValueError:
            raise OperatorKeyError("OPERATOR_PRIVATE_KEY: expected 64 hex digits") from None
        return _account_from_secret(secret, "OPERATOR_PRIVATE_KEY")
    return read_keystore(settings.keystore_uri, settings.keystore_password)


def uncompressed_public_key(account: LocalAccount) -> bytes:
    """The 65-byte SEC1 public key Tangle.registerOperator expects."""
    return b"\x04" + PrivateKey(account.key).public_key.to_bytes()
