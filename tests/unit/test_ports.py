"""Ports picked for servers started later lie where no outgoing connection can take them first."""

from __future__ import annotations

import socket

from serve.ports import free_port, unassigned_ports


def test_picked_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_start = int(ranges.read().split()[0])
    picked = [free_port() for _ in range(50)] + [free_port(host="") for _ in range(10)]
    assert len(set(picked)) == len(picked)
    assert all(19999 < port < ephemeral_start for port in picked), picked
    assert unassigned_ports().stop == ephemeral_start


def test_a_picked_port_binds_on_every_interface_without_address_reuse() -> None:
    # As Ray's HTTP proxy binds it: 0.0.0.0, no SO_REUSEADDR.
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", port))
        sock.listen()
        assert sock.getsockname()[1] == port


def test_a_port_taken_on_any_interface_is_not_picked(monkeypatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("", 0))
        taken = held.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as spare:
            spare.bind(("", 0))
            spare_port = spare.getsockname()[1]
        offered = iter([taken, taken, spare_port])
        monkeypatch.setattr("serve.ports.random.choice", lambda ports: next(offered))
        assert free_port() == spare_port
