"""Who a request counts against: the user, an API key, else the client's address.

The address is the socket's peer, unless that peer is a configured trusted proxy: then the
forwarding headers (``Forwarded``'s ``for=``, else ``X-Forwarded-For``) are read from the
right, skipping the trusted hops, and the first untrusted address is the client. With no
trusted proxy configured (the default) the headers are never read: any client can write
them. Keys are hashed (SHA-256, 16 bytes) unless configured otherwise, so a store of
counters never holds a user's id, an API key or an address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``127.0.0.1``, ``::1``: ValueError for anything else."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(value: str) -> list[str]:
    """The ``for=`` of each hop of a ``Forwarded`` header, in order."""
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, given = pair.strip().partition("=")
            if name.lower() == "for":
                hops.append(given)
    return hops


class ClientAddress:
    """The client's address as this deployment can trust it."""

    def __init__(self, trusted: Sequence[Network] = ()) -> None:
        self.trusted = tuple(trusted)

    def _is_trusted(self, addr: Any) -> bool:
        return addr is not None and any(addr in net for net in self.trusted)

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        if not self.trusted or not self._is_trusted(_address(peer)):
            return peer
        forwarded: list[str] = []
        xff: list[str] = []
        for name, value in scope.get("headers") or ():
            if name == b"forwarded":
                forwarded += _forwarded_for(value.decode("latin-1"))
            elif name == b"x-forwarded-for":
                xff += value.decode("latin-1").split(",")
        hops = forwarded or xff
        for hop in reversed(hops):
            addr = _address(hop)
            if addr is None:
                return peer  # a hop we cannot read: stop at the proxy we know
            if not self._is_trusted(addr):
                return str(addr)
        return peer


def hashed(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
