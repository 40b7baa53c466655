"""Who counts as local: with no auth configured, loopback clients and no one behind a proxy.

A reverse proxy on the same host makes every visitor look like 127.0.0.1, so a request
carrying a proxy header is refused too; so is one whose ``Host`` is not a loopback name,
which is what a DNS-rebinding page in a local browser sends. A proxy that adds no header at
all (a bare nginx ``proxy_pass``) cannot be told apart from a local client: configure auth
before putting the app behind one. Refusals are 404s, which do not tell a stranger that
anything is mounted here (see :class:`asgimon.dashboard.app.Guard`).
"""

from __future__ import annotations

import ipaddress

from starlette.types import Scope

# What reverse proxies, load balancers and CDNs add to say who the client is. Any header
# starting with one of PROXY_PREFIXES counts too (X-Forwarded-Server, -Scheme, -Ssl, ...).
PROXY_PREFIXES = (b"x-forwarded-", b"x-original-forwarded-", b"x-real-")
PROXY_HEADERS = frozenset(
    {
        b"forwarded",
        b"via",
        b"x-forwarded",
        b"x-client-ip",
        b"client-ip",
        b"x-cluster-client-ip",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-host",
        b"x-proxyuser-ip",
        b"x-envoy-external-address",
        b"x-appengine-user-ip",
        b"x-azure-clientip",
        b"x-azure-socketip",
        b"cf-connecting-ip",
        b"cf-connecting-ipv6",
        b"cf-pseudo-ipv4",
        b"true-client-ip",
        b"fastly-client-ip",
        b"akamai-client-ip",
        b"x-akamai-client-ip",
        b"x-vercel-forwarded-for",
        b"x-vercel-ip",
        b"fly-client-ip",
        b"do-connecting-ip",
        b"x-bluecoat-via",
    }
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def is_loopback_host(host: bytes) -> bool:
    """A Host header naming this machine, with or without a port."""
    name = host.decode("latin-1").strip().lower()
    # "[::1]:8000" keeps its brackets; "localhost:8000" loses its port.
    name = name[: name.find("]") + 1] if name.startswith("[") else name.rsplit(":", 1)[0]
    return name in LOOPBACK_NAMES or (name.startswith("127.") and is_loopback(name))


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def local_request(scope: Scope) -> bool:
    client = scope.get("client")
    if not client or not is_loopback(client[0]):
        return False
    if scope.get("http_version") == "1.0":
        # What nginx's proxy_pass speaks by default, with no forwarding header at all.
        return False
    host_ok = False
    for name, value in scope.get("headers", ()):
        if is_proxy_header(name):
            return False
        if name == b"host":
            host_ok = is_loopback_host(value)
    return host_ok


def is_proxy_header(name: bytes) -> bool:
    """A header a proxy adds about the client (``name`` lower-case, as ASGI gives it)."""
    return name in PROXY_HEADERS or name.startswith(PROXY_PREFIXES)


def host_count(scope: Scope) -> int:
    return sum(1 for name, _ in scope.get("headers", ()) if name == b"host")


def cross_site(scope: Scope) -> bool:
    """A browser says the request comes from another site (a page the user visits)."""
    host = origin = b""
    for name, value in scope.get("headers", ()):
        if name == b"sec-fetch-site" and value.strip().lower() == b"cross-site":
            return True
        if name == b"host":
            host = value.strip().lower()
        elif name == b"origin":
            origin = value.strip().lower()
    return bool(origin) and origin.partition(b"://")[2] != host
