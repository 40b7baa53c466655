"""The address guard: what an outgoing webhook may connect to, judged on resolved addresses."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import pytest

from asgimon.plugins.ssrf import AddressGuard, Refused, special_kind

# Every spelling of loopback that the system resolver accepts, and names that lead there.
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0177.0.0.1",
    "0x7f000001",
    "127.1",
    "::ffff:127.0.0.1",
    "::1",
    "localhost",
]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "the cloud metadata address"),
        ("fd00:ec2::254", "the cloud metadata address"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared address space"),
        ("100.127.255.254", "shared address space"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("fc00::1", "private"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("2002:7f00:1::", "loopback (it carries 127.0.0.1)"),
        ("64:ff9b::a00:1", "private (it carries 10.0.0.1)"),
    ],
)
def test_special_addresses_are_named(address: str, kind: str) -> None:
    assert special_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_global_addresses_pass(address: str) -> None:
    assert AddressGuard().refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_every_spelling_of_loopback_is_refused(host: str) -> None:
    with pytest.raises(Refused) as refused:
        await AddressGuard().check(host, 80)
    assert "loopback and not in ALERTS_WEBHOOK_ALLOW" in refused.value.reason
    assert not refused.value.transient


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "::ffff:127.0.0.1"])
async def test_an_allowed_host_gives_the_address_it_resolved_to(host: str) -> None:
    guard = AddressGuard(["127.0.0.0/8"])
    assert await guard.check(host, 80) == ipaddress.IPv4Address("127.0.0.1")


def test_the_allowlist_takes_networks_with_host_bits_set() -> None:
    guard = AddressGuard(["10.1.2.3/16"])
    assert guard.refusal(ipaddress.ip_address("10.1.200.7")) is None
    assert guard.refusal(ipaddress.ip_address("10.2.0.1")) == (
        "is private and not in ALERTS_WEBHOOK_ALLOW"
    )


def test_an_allowed_network_opens_nothing_else() -> None:
    guard = AddressGuard(["127.0.0.1/32"])
    assert guard.refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert guard.refusal(ipaddress.ip_address("::1")) is not None


def resolving_to(*answers: str) -> AddressGuard:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return answers

    return AddressGuard(resolve=resolve)


@pytest.mark.parametrize(
    "answers",
    [("93.184.215.14", "10.0.0.1"), ("10.0.0.1", "93.184.215.14")],
)
async def test_one_private_answer_refuses_the_name(answers: tuple[str, ...]) -> None:
    with pytest.raises(Refused) as refused:
        await resolving_to(*answers).check("rebind.example", 443)
    assert refused.value.reason == (
        "rebind.example resolves to 10.0.0.1, which is private and not in ALERTS_WEBHOOK_ALLOW"
    )


async def test_the_first_checked_answer_is_the_one_to_connect_to() -> None:
    guard = resolving_to("2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14")
    assert await guard.check("example.com", 443) == ipaddress.ip_address(
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
    )


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def fail(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Refused) as refused:
        await AddressGuard(resolve=fail).check("nowhere.invalid", 443)
    assert refused.value.reason.startswith("cannot resolve nowhere.invalid")
    assert refused.value.transient


@pytest.mark.parametrize("answers", [(), ("not-an-address",)])
async def test_an_empty_or_garbled_answer_is_refused(answers: tuple[str, ...]) -> None:
    with pytest.raises(Refused, match=r"cannot resolve odd\.example"):
        await resolving_to(*answers).check("odd.example", 443)
