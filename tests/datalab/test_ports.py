"""Ports the platform listens on are chosen where no outgoing connection can take them."""

from __future__ import annotations

import socket
from pathlib import Path

from datalab.processes import free_port, listen_port_range, port_is_free


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)
    assert all(port in listen_port_range() for port in ports)


def test_a_port_in_use_is_not_handed_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not port_is_free(taken)
        assert taken not in {free_port() for _ in range(300)}
        assert free_port(exclude={taken}) != taken
