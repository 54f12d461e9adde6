"""This machine's names and addresses: what `--lan` prints for other machines to use, and what
relaybox answers to when it serves on every interface."""

from __future__ import annotations

import contextlib
import socket


def lan_addresses() -> list[str]:
    """This machine's addresses other machines on its networks can reach (not loopback)."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
        found.add(probe.getsockname()[0])
    return sorted(a for a in found if not a.startswith("127.") and a != "0.0.0.0")


def machine_names() -> list[str]:
    """The names other machines may know this one by: its host name, fully qualified, and mDNS."""
    name = socket.gethostname()
    names = {name, f"{name}.local"}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    return sorted(n.lower() for n in names if n)
