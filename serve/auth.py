"""API keys: who is calling, checked against SHA-256 hashes; the keys themselves are never stored or logged.

A caller sends `authorization: Bearer <key>` in the gRPC metadata. The keys file (a mounted Secret in
Kubernetes) holds one entry per key: its name (the caller's identity, which owns the caller's jobs),
the SHA-256 of the key and an optional quota of concurrent jobs. `videogen hash-key` writes entries.

Keys are random 256-bit tokens, so a plain SHA-256 is enough: a slow password hash protects guessable
secrets, and a leaked keys file gives an attacker no usable key either way.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve.config import AuthOptions
from serve.errors import Unauthenticated

log = logging.getLogger(__name__)

METADATA_KEY = "authorization"
SCHEME = "bearer"
KEY_PREFIX = "vgk_"
MIN_KEY_CHARS = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what the keys file stores."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyEntry(BaseModel):
    """One key of the keys file."""

    model_config = ConfigDict(frozen=True)
    name: str = Field(description="the caller's identity: owner of its jobs; appears in logs and metrics")
    sha256: str = Field(description="hex SHA-256 of the key (`videogen hash-key`)")
    max_concurrent_jobs: int | None = Field(
        None, ge=1, description="most Generate calls and unfinished jobs at once; unset: no quota"
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"key name {name!r} must be 1-64 characters of [A-Za-z0-9._@-]")
        return name

    @field_validator("sha256")
    @classmethod
    def _valid_hash(cls, value: str) -> str:
        value = value.lower()
        if not SHA256_PATTERN.fullmatch(value):
            raise ValueError("sha256 must be 64 hex digits (the hash of the key, not the key)")
        return value


class KeysFile(BaseModel):
    """The keys file: `keys: [{name, sha256, max_concurrent_jobs}]`."""

    keys: list[KeyEntry] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[KeyEntry]) -> list[KeyEntry]:
        for attribute in ("name", "sha256"):
            values = [getattr(key, attribute) for key in keys]
            if len(set(values)) != len(values):
                raise ValueError(f"two keys share a {attribute}")
        return keys

    @classmethod
    def load(cls, path: str | Path) -> KeysFile:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})


class Caller(BaseModel):
    """Who made a request: a key's name and quota, or the anonymous caller when auth is off."""

    model_config = ConfigDict(frozen=True)
    name: str = ""
    max_concurrent_jobs: int | None = None
    authenticated: bool = False

    @property
    def scope(self) -> str | None:
        """Owner to filter jobs by: the key's name; None (every job) when authentication is off."""
        return self.name if self.authenticated else None


ANONYMOUS = Caller()


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The key of `authorization: Bearer <key>`; None when absent. Two authorization entries are refused."""
    values = [value for name, value in metadata if name.lower() == METADATA_KEY]
    if not values:
        return None
    if len(values) > 1:
        raise Unauthenticated("send one authorization entry, not several")
    value = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != SCHEME or not token.strip():
        raise Unauthenticated("authorization must be `Bearer <API key>`")
    return token.strip()


class Authenticator:
    """Checks bearer tokens against the keys file, re-reading it when it changes (key rotation)."""

    def __init__(self, options: AuthOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self.entries: list[tuple[bytes, Caller]] = []
        self._stamp: tuple[float, int, int] | None = None
        self._checked_at = 0.0
        if options.enabled:
            # Fail closed, but start: without a keys file (a Secret not created yet) every call is
            # UNAUTHENTICATED until the file appears, which the reload below notices.
            try:
                self._load(self._file_stamp())
            except FileNotFoundError:
                log.error(
                    "API keys file %s does not exist: every call is refused UNAUTHENTICATED until it "
                    "does (checked every %.0f s)",
                    options.keys_file,
                    options.reload_interval_s,
                )

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    def _file_stamp(self) -> tuple[float, int, int]:
        stat = os.stat(self.options.keys_file or "")
        return stat.st_mtime, stat.st_size, stat.st_ino

    def _load(self, stamp: tuple[float, int, int]) -> None:
        keys = KeysFile.load(self.options.keys_file or "")
        self.entries = [
            (
                bytes.fromhex(entry.sha256),
                Caller(name=entry.name, max_concurrent_jobs=entry.max_concurrent_jobs, authenticated=True),
            )
            for entry in keys.keys
        ]
        self._stamp = stamp
        self._checked_at = self.clock()
        log.info("loaded %d API keys from %s", len(self.entries), self.options.keys_file)

    def _maybe_reload(self) -> None:
        if self.clock() - self._checked_at < self.options.reload_interval_s:
            return
        self._checked_at = self.clock()
        try:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._load(stamp)
        except Exception as error:  # keep serving with the keys already loaded
            log.error("keys file %s unreadable, keeping the loaded keys: %s", self.options.keys_file, error)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Caller:
        """The caller named by the request's bearer token; raises Unauthenticated."""
        if not self.options.enabled:
            return ANONYMOUS
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated("an API key is required: send metadata `authorization: Bearer <key>`")
        self._maybe_reload()
        digest = hashlib.sha256(token.encode()).digest()
        found: Caller | None = None
        # Compare with every entry, in constant time each, so timing says nothing about which matched.
        for stored, caller in self.entries:
            if hmac.compare_digest(digest, stored):
                found = caller
        if found is None:
            if self._stamp is None:
                raise Unauthenticated("the service has no API keys loaded yet; try again later")
            raise Unauthenticated("the API key is not valid")
        return found


def cmd_hash_key(args: argparse.Namespace) -> int:
    """Print a keys-file entry for a key read from stdin, or for a new key (--generate)."""
    if not NAME_PATTERN.fullmatch(args.name):
        print(f"error: --name must be 1-64 characters of [A-Za-z0-9._@-], got {args.name!r}", file=sys.stderr)
        return 2
    if args.generate:
        key = generate_key()
        print(
            f"new API key for {args.name} (give it to the caller; it is not stored): {key}", file=sys.stderr
        )
    else:
        key = sys.stdin.readline().strip()
        if len(key) < MIN_KEY_CHARS:
            print(
                f"error: a key needs at least {MIN_KEY_CHARS} characters (use --generate for a random one)",
                file=sys.stderr,
            )
            return 2
    try:
        entry = KeyEntry(name=args.name, sha256=hash_key(key), max_concurrent_jobs=args.max_concurrent_jobs)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False), end="")
    return 0


def add_hash_key_command(commands: argparse._SubParsersAction) -> None:
    """Register `videogen hash-key`."""
    parser = commands.add_parser(
        "hash-key", help="print a keys-file entry (SHA-256) for an API key read from stdin, or a new key"
    )
    parser.add_argument("--name", required=True, help="the caller's identity (owner of its jobs)")
    parser.add_argument("--max-concurrent-jobs", type=int, help="quota of jobs at once (default: none)")
    parser.add_argument("--generate", action="store_true", help="make a new random key (printed to stderr)")
    parser.set_defaults(run=cmd_hash_key)
