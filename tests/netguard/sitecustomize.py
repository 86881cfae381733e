"""Loaded by every Python process the tests start (PYTHONPATH): refuse non-loopback connections.

Each refused attempt is appended to $VIDEOGEN_NETGUARD_LOG; the test session fails if it is not
empty. The machine's own interface addresses are allowed: Ray's agents bind to and dial them.
"""

import ipaddress
import os
import socket
import time
import traceback

_LOG = os.environ.get("VIDEOGEN_NETGUARD_LOG")


def _own_addresses() -> set:
    """This machine's interface addresses (Ray's agents bind to and dial the node address)."""
    addresses = {"0.0.0.0", "::"}
    try:
        import psutil

        for entries in psutil.net_if_addrs().values():
            addresses.update(entry.address.split("%")[0] for entry in entries if entry.family in (2, 10))
    except Exception:
        pass
    return addresses


def _allowed(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%")[0]
    if host in ("localhost", "") or host in _OWN:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith(".localhost")
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _refuse(what: str, host) -> None:
    message = f"netguard: refused {what} to {host!r} (pid {os.getpid()})"
    if _LOG:
        with open(_LOG, "a") as handle:
            handle.write(f"{time.time():.3f} {message}\n{''.join(traceback.format_stack(limit=8))}\n")
    raise ConnectionRefusedError(message)


def _check_address(what: str, address) -> None:
    if isinstance(address, tuple) and address and not _allowed(address[0]):
        _refuse(what, address[0])


_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto
_OWN = _own_addresses()


def _getaddrinfo(host, *args, **kwargs):
    if not _allowed(host):
        _refuse("getaddrinfo", host)
    return _real_getaddrinfo(host, *args, **kwargs)


def _connect(self, address):
    _check_address("connect", address)
    return _real_connect(self, address)


def _connect_ex(self, address):
    _check_address("connect", address)
    return _real_connect_ex(self, address)


def _sendto(self, data, *args):
    _check_address("sendto", args[-1] if args else None)
    return _real_sendto(self, data, *args)


socket.getaddrinfo = _getaddrinfo
socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
socket.socket.sendto = _sendto
