"""Start-up errors of `run`: one line naming the setting, path or node, and exit status 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from {{ cookiecutter.package_name }}.config import NodeSettings

from .conftest import OPERATOR_KEY, RUN, free_port, operator_files, write_config


def missing_node_type() -> str:
    """A server type this project was generated without."""
    types = NodeSettings.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
    for name in types:
        if importlib.util.find_spec(f"{{ cookiecutter.package_name }}.backends.{name}") is None:
            return str(name)
    pytest.fail("every node type's client was generated")


def run(tmp_path: Path, node_type: str = "openai_compatible", **env: str) -> tuple[int, str]:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    environ = {**operator_files(tmp_path, closed, closed), **env}
    write_config(tmp_path / "config.toml", closed, free_port(), node_type=node_type)
    done = subprocess.run(
        [sys.executable, *RUN],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr


def one_error(stderr: str) -> str:
    """The one error line: logged by `run`, or printed by the CLI before logging starts."""
    assert "Traceback" not in stderr, stderr
    errors = [
        line
        for line in stderr.splitlines()
        if " ERROR " in line or (line.strip() and not line[:4].isdigit())
    ]
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_data_dir_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    status, stderr = run(tmp_path, DATA_DIR=str(tmp_path / "file" / "data"))
    assert status == 2
    assert f"DATA_DIR {tmp_path}/file/data: not writable (" in one_error(stderr)


def test_a_node_type_whose_client_was_not_generated(tmp_path: Path) -> None:
    missing = missing_node_type()
    status, stderr = run(tmp_path, node_type=missing)
    assert status == 2
    assert f"node 'sim' has type '{missing}', but this project was generated" in one_error(stderr)


def test_an_unreadable_key_file(tmp_path: Path) -> None:
    keystore = tmp_path / "links" / "Ecdsa"
    keystore.mkdir(parents=True)
    (keystore / "key").symlink_to(tmp_path / "gone")  # unreadable whoever runs the test
    status, stderr = run(tmp_path, KEYSTORE_URI=str(tmp_path / "links"))
    assert status == 2
    assert f"{keystore}/key: cannot read the key file" in one_error(stderr)


def test_a_wrong_keystore_password(tmp_path: Path) -> None:
    keystore = tmp_path / "v3" / "Ecdsa"
    keystore.mkdir(parents=True)
    encrypted = Account.encrypt(OPERATOR_KEY, "right", kdf="pbkdf2", iterations=2)
    (keystore / "UTC--operator").write_text(json.dumps(encrypted))
    status, stderr = run(tmp_path, KEYSTORE_URI=str(tmp_path / "v3"), KEYSTORE_PASSWORD="hunter2")
    assert status == 2
    line = one_error(stderr)
    assert "KEYSTORE_PASSWORD does not open this encrypted keystore" in line
    assert "hunter2" not in stderr


def test_an_rpc_endpoint_that_does_not_answer(tmp_path: Path) -> None:
    status, stderr = run(tmp_path)
    assert status == 2
    line = one_error(stderr)
    assert (
        "HTTP_RPC_URL (tangle.http_rpc_url): eth_chainId: no answer from http://127.0.0.1:" in line
    )


def test_a_torn_checkpoint_is_named_not_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tangle-checkpoint.json").write_text('{"key": {"chain_id": 1}, "last_')
    status, stderr = run(tmp_path)
    assert status == 2
    error = one_error(stderr)
    assert f"{tmp_path}/data/tangle-checkpoint.json: unreadable checkpoint (" in error
    assert "move it away" in error
