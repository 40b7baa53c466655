"""Where an outgoing request may go: global addresses, and private ones only when allowed.

A webhook URL is written by whoever can edit an alert rule, and the request it causes comes
from inside the host's network. Left unchecked, ``http://169.254.169.254/`` reads the cloud
metadata service and ``http://10.0.0.5:6379/`` talks to an internal Redis. The check is made
on the addresses a name *resolves to*, at the moment of connecting, and the caller connects
to the address that was checked: a name whose DNS answer changes between a check and a
second lookup (DNS rebinding) never gets that second lookup. Spellings such as
``2130706433``, ``0x7f000001``, ``0177.0.0.1`` or ``127.1`` are no way round it, since the
resolver turns them into the loopback address that is then refused.

>>> guard = AddressGuard(allow=["10.1.0.0/16"])
>>> guard.refusal(ipaddress.ip_address("10.1.2.3")) is None
True
>>> guard.refusal(ipaddress.ip_address("127.0.0.1"))
'is loopback and not in ALERTS_WEBHOOK_ALLOW'
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

from asgimon.errors import AsgimonError

__all__ = ["AddressGuard", "IPAddress", "Refused", "Resolve", "special_kind"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""Turns a host and port into the addresses it names, as text (``getaddrinfo``'s answer)."""

_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
# Carrier-grade NAT space: not global, yet Python 3.11 does not call it private either.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
# Both carry an IPv4 address inside, and a relay or gateway delivers to that one.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


class Refused(AsgimonError):
    """The destination may not be connected to.

    ``transient`` is true when the name could not be resolved, which a later try may
    change; a private address stays private, so retrying that is pointless.
    """

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        self.reason = reason
        self.transient = transient
        super().__init__(reason)


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


def special_kind(address: IPAddress) -> str | None:
    """What makes ``address`` unfit for an outgoing request (``"loopback"``…), None if global."""
    address = _unmapped(address)
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            # Python calls 64:ff9b::/96 reserved, yet on an IPv6-only host with DNS64 every
            # public name resolves into it: the address it carries decides.
            kind = special_kind(inner)
            return None if kind is None else f"{kind} (it carries {inner})"
    if address in _METADATA:
        return "the cloud metadata address"
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared address space", address in _SHARED),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not a global address", not address.is_global),
    ):
        if flag:
            return kind
    return None


async def _getaddrinfo(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class AddressGuard:
    """Resolves a host and hands back one address that is safe to connect to, or refuses.

    Every address the name resolves to must pass, not only the first: a resolver that
    answers with a public and a private address may be rotated to the private one by the
    next lookup. ``allow`` lists networks that may be reached though private (an internal
    receiver, a test server on loopback); nothing else private ever is.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        setting: str = "ALERTS_WEBHOOK_ALLOW",
        resolve: Resolve | None = None,
    ) -> None:
        self._allow: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in allow
        )
        self._setting = setting
        self._resolve: Resolve = resolve or _getaddrinfo

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        address = _unmapped(address)
        if any(address in network for network in self._allow):
            return None
        kind = special_kind(address)
        return None if kind is None else f"is {kind} and not in {self._setting}"

    async def check(self, host: str, port: int) -> IPAddress:
        """The address to connect to for ``host``; raises :class:`Refused` otherwise."""
        try:
            answers = await self._resolve(host, port)
            addresses = [ipaddress.ip_address(answer) for answer in answers]
        except (OSError, UnicodeError, ValueError) as exc:
            # Fail closed: a name that cannot be resolved here is not tried some other way.
            raise Refused(f"cannot resolve {host}: {exc}", transient=True) from None
        if not addresses:
            raise Refused(f"cannot resolve {host}: no addresses", transient=True)
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                shown = _unmapped(address)
                if str(shown) == host:
                    raise Refused(f"{shown} {why}")
                raise Refused(f"{host} resolves to {shown}, which {why}")
        return _unmapped(addresses[0])
