"""API keys: bearer tokens checked against SHA-256 hashes, fail-closed, rotatable, never echoed."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
import yaml

from serve.auth import (
    ANONYMOUS,
    Authenticator,
    KeysFile,
    bearer_token,
    generate_key,
    hash_key,
)
from serve.cli import main as videogen
from serve.config import AppConfig, AuthOptions
from serve.errors import Unauthenticated

ALICE_KEY = "vgk_alice-0123456789abcdefghijklmnopqrstuvwxyz"
BOB_KEY = "vgk_bob-0123456789abcdefghijklmnopqrstuvwxyzAB"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_keys(path: Path, *entries: dict) -> Path:
    path.write_text(yaml.safe_dump({"keys": list(entries)}))
    return path


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return write_keys(
        tmp_path / "keys.yaml",
        {"name": "alice", "sha256": hash_key(ALICE_KEY), "max_concurrent_jobs": 2},
        {"name": "bob", "sha256": hash_key(BOB_KEY)},
    )


def bearer(key: str) -> list[tuple[str, str]]:
    return [("application", "videogen"), ("authorization", f"Bearer {key}")]


def test_auth_is_off_by_default_and_everyone_is_the_anonymous_caller():
    assert AppConfig.model_validate({"models": [{"name": "svd"}]}).auth.enabled is False
    caller = Authenticator(AuthOptions()).authenticate([])
    assert caller is ANONYMOUS and caller.scope is None


def test_enabled_auth_needs_a_keys_file():
    with pytest.raises(ValueError, match="keys_file"):
        AuthOptions(enabled=True)


def test_a_valid_key_names_its_caller_and_quota(keys_file: Path):
    auth = Authenticator(AuthOptions(enabled=True, keys_file=str(keys_file)))
    alice = auth.authenticate(bearer(ALICE_KEY))
    bob = auth.authenticate(bearer(BOB_KEY))
    assert (alice.name, alice.max_concurrent_jobs, alice.scope) == ("alice", 2, "alice")
    assert (bob.name, bob.max_concurrent_jobs, bob.scope) == ("bob", None, "bob")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([], "API key is required"),
        ([("authorization", "Basic dXNlcjpwYXNz")], "Bearer"),
        ([("authorization", "Bearer ")], "Bearer"),
        ([("authorization", "Bearer not-a-known-key-but-long-enough-000000")], "not valid"),
        ([("authorization", f"Bearer {ALICE_KEY}x")], "not valid"),
        ([("authorization", f"Bearer {ALICE_KEY}"), ("authorization", f"Bearer {BOB_KEY}")], "one"),
    ],
)
def test_missing_malformed_or_unknown_keys_are_unauthenticated(keys_file: Path, metadata, message):
    auth = Authenticator(AuthOptions(enabled=True, keys_file=str(keys_file)))
    with pytest.raises(Unauthenticated, match=message) as error:
        auth.authenticate(metadata)
    assert error.value.code == "UNAUTHENTICATED"
    assert ALICE_KEY not in error.value.message and "not-a-known-key" not in error.value.message


def test_bearer_scheme_is_case_insensitive_and_bytes_metadata_is_accepted():
    assert bearer_token([("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([("application", "videogen")]) is None


def test_without_a_keys_file_every_call_is_refused_until_the_file_appears(tmp_path: Path, caplog):
    keys_file, clock = tmp_path / "absent.yaml", Clock()
    with caplog.at_level(logging.ERROR, logger="serve.auth"):
        auth = Authenticator(AuthOptions(enabled=True, keys_file=str(keys_file), reload_interval_s=30), clock)
    assert "does not exist: every call is refused UNAUTHENTICATED" in caplog.text  # it starts, closed
    with pytest.raises(Unauthenticated, match="no API keys loaded yet"):
        auth.authenticate(bearer(ALICE_KEY))
    # The Secret is created (kubelet writes the mounted file): keys work after the reload interval.
    write_keys(keys_file, {"name": "alice", "sha256": hash_key(ALICE_KEY)})
    clock.now += 31
    assert auth.authenticate(bearer(ALICE_KEY)).name == "alice"


@pytest.mark.parametrize(
    "entries",
    [
        [{"name": "alice", "sha256": "abc"}],
        [{"name": "al ice", "sha256": hash_key(ALICE_KEY)}],
        [{"name": "alice", "sha256": hash_key(ALICE_KEY)}, {"name": "alice", "sha256": hash_key(BOB_KEY)}],
        [{"name": "alice", "sha256": hash_key(ALICE_KEY)}, {"name": "bob", "sha256": hash_key(ALICE_KEY)}],
        [{"name": "alice", "sha256": hash_key(ALICE_KEY), "max_concurrent_jobs": 0}],
    ],
    ids=["short-hash", "bad-name", "duplicate-name", "duplicate-key", "zero-quota"],
)
def test_malformed_keys_files_are_refused(tmp_path: Path, entries):
    path = write_keys(tmp_path / "keys.yaml", *entries)
    with pytest.raises(ValueError):
        KeysFile.load(path)


def test_a_rotated_keys_file_is_picked_up_after_the_reload_interval(keys_file: Path):
    clock = Clock()
    auth = Authenticator(AuthOptions(enabled=True, keys_file=str(keys_file), reload_interval_s=30), clock)
    carol_key = generate_key()
    write_keys(keys_file, {"name": "carol", "sha256": hash_key(carol_key)})
    os.utime(keys_file, (clock.now + 5, clock.now + 5))  # a new mtime even on coarse filesystems

    assert auth.authenticate(bearer(ALICE_KEY)).name == "alice"  # within the interval: old keys
    clock.now += 31
    assert auth.authenticate(bearer(carol_key)).name == "carol"
    with pytest.raises(Unauthenticated):
        auth.authenticate(bearer(ALICE_KEY))  # revoked


def test_a_broken_rotation_keeps_the_loaded_keys(keys_file: Path, caplog):
    clock = Clock()
    auth = Authenticator(AuthOptions(enabled=True, keys_file=str(keys_file), reload_interval_s=1), clock)
    keys_file.write_text("keys: [{name: x}]")
    clock.now += 2
    with caplog.at_level(logging.ERROR, logger="serve.auth"):
        assert auth.authenticate(bearer(ALICE_KEY)).name == "alice"
    assert "keeping the loaded keys" in caplog.text


def test_keys_never_reach_the_logs(keys_file: Path, caplog):
    with caplog.at_level(logging.DEBUG):
        auth = Authenticator(AuthOptions(enabled=True, keys_file=str(keys_file)))
        auth.authenticate(bearer(ALICE_KEY))
        with pytest.raises(Unauthenticated):
            auth.authenticate(bearer(BOB_KEY + "-wrong"))
    assert ALICE_KEY not in caplog.text and BOB_KEY not in caplog.text


def test_hash_key_reads_the_key_from_stdin_and_prints_an_entry(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(ALICE_KEY + "\n"))
    assert videogen(["hash-key", "--name", "alice", "--max-concurrent-jobs", "3"]) == 0
    entry = yaml.safe_load(capsys.readouterr().out)
    assert entry == [{"name": "alice", "sha256": hash_key(ALICE_KEY), "max_concurrent_jobs": 3}]
    assert KeysFile.model_validate({"keys": entry}).keys[0].name == "alice"


def test_hash_key_generate_prints_a_new_key_once_and_its_entry(capsys):
    assert videogen(["hash-key", "--name", "ci-bot", "--generate"]) == 0
    out, err = capsys.readouterr()
    key = err.strip().rsplit(" ", 1)[-1]
    assert key.startswith("vgk_") and len(key) >= 40 and key not in out
    assert yaml.safe_load(out) == [{"name": "ci-bot", "sha256": hash_key(key)}]


@pytest.mark.parametrize(
    ("args", "stdin"), [(["--name", "alice"], "short\n"), (["--name", "no spaces"], ALICE_KEY + "\n")]
)
def test_hash_key_refuses_weak_keys_and_bad_names(monkeypatch, capsys, args, stdin):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert videogen(["hash-key", *args]) == 2
    assert "error:" in capsys.readouterr().err
