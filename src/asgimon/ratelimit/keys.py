"""Who a request counts against: the user, an API key, else the client's address.

The address is the socket's peer, unless that peer is a configured trusted proxy: then the
one forwarding header those proxies write (``X-Forwarded-For`` by default, or ``Forwarded``'s
``for=``) is read from the right, skipping the trusted hops, and the first untrusted address
is the client. Only that header: most proxies append to one and pass the other through as
the client sent it. With no trusted proxy configured (the default) the headers are never
read: any client can write them. An IPv6 client counts by its network
(``RATE_LIMIT_IPV6_PREFIX``, a /64 by default: one subscriber's, who can pick any address in
it). Keys are hashed (SHA-256, 16 bytes) unless configured otherwise, so a store of
counters never holds a user's id, an API key or an address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_PEERS = 4096


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``127.0.0.1``, ``::1``: ValueError for anything else."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: compared as the IPv4 they are.
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


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

    def __init__(
        self,
        trusted: Sequence[Network] = (),
        header: str = "x-forwarded-for",
        ipv6_prefix: int = 128,
    ) -> None:
        self.trusted = tuple(trusted)
        self.ipv6_prefix = ipv6_prefix
        # A peer's address parsed once: ``ipaddress`` took a fifth of the limiter's time.
        self._peers: dict[str, tuple[str, Any]] = {}
        self.header = header.lower().encode()
        if self.header not in (b"x-forwarded-for", b"forwarded"):
            raise ValueError(f"{header!r}: the forwarding header is X-Forwarded-For or Forwarded")

    def _is_trusted(self, addr: Any) -> bool:
        return addr is not None and any(addr in net for net in self.trusted)

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        raw = str(client[0]) if client else ""
        known = self._peers.get(raw)
        if known is None:
            if len(self._peers) >= MAX_PEERS:
                self._peers.clear()  # bounded: a new parse per peer is cheap, not free
            known = self._peers[raw] = self._peer(raw)
        peer, peer_addr = known
        if not self.trusted or not self._is_trusted(peer_addr):
            return peer
        hops: list[str] = []
        for name, value in scope.get("headers") or ():
            if name == self.header:
                text = value.decode("latin-1")
                hops += _forwarded_for(text) if name == b"forwarded" else text.split(",")
        for hop in reversed(hops):
            addr = parse_address(hop)
            if addr is None:
                return peer  # a hop we cannot read: stop at the proxy we know
            if not self._is_trusted(addr):
                return self.keyed(addr)
        return peer

    def _peer(self, raw: str) -> tuple[str, Any]:
        """The peer's key, and its address where it must be compared with the proxies'."""
        if not self.trusted and _is_dotted_quad(raw):
            return raw, None  # its own key: ``ipaddress`` takes ten times as long to say so
        addr = parse_address(raw)
        return (raw if addr is None else self.keyed(addr)), addr

    def keyed(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """The address as a key: an IPv6 one by its network (a /64 is one subscriber's,
        who can pick any of its 2^64 addresses), an IPv4 one as it is."""
        return address_key(addr, self.ipv6_prefix)


def _is_dotted_quad(text: str) -> bool:
    """An IPv4 address written as ``ipaddress`` writes it (no leading zeros, no port)."""
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text
    except (OSError, ValueError):  # ValueError: a NUL inside
        return False


def address_key(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, ipv6_prefix: int) -> str:
    if addr.version == 4 or ipv6_prefix >= 128:
        return str(addr)
    return str(ipaddress.IPv6Network((addr, ipv6_prefix), strict=False))


def hashed(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
