"""The host app's rate limits as configured: burst, endpoint rules, exemptions, keys."""

from __future__ import annotations

import pytest

from asgimon.ratelimit.headers import Standing
from asgimon.ratelimit.keys import MAX_PEERS, ClientAddress, hashed, parse_networks
from asgimon.ratelimit.policy import Policy, default_rule, parse_endpoint_rules


def test_burst_is_a_larger_window_held_to_the_average_over_two() -> None:
    rule = default_rule(100, 60, 10)
    assert [(i.amount, i.get_expiry()) for i in rule.items] == [(110, 60), (200, 120)]
    assert [(i.amount, i.get_expiry()) for i in default_rule(5, 60, 0).items] == [(5, 60)]


def test_endpoint_rules_match_method_and_template_first_wins() -> None:
    rules = parse_endpoint_rules(
        "GET /items/{id}=10/minute; /items/{id}=3/minute; /files/{rest:path}=1 per 5 seconds"
    )
    policy = Policy(default_rule(100, 60, 0), rules, ["/health", "/static/*"])
    assert policy.rule_for("GET", "/items/7").name == "GET /items/{id}"  # type: ignore[union-attr]
    assert policy.rule_for("POST", "/items/7").name == "/items/{id}"  # type: ignore[union-attr]
    assert policy.rule_for("GET", "/items/7/more").name == "default"  # type: ignore[union-attr]
    assert policy.rule_for("GET", "/files/a/b/c").name == "/files/{rest:path}"  # type: ignore[union-attr]
    assert policy.rule_for("GET", "/health") is None
    assert policy.rule_for("GET", "/static/app.css") is None


@pytest.mark.parametrize(
    "raw", ["GET /a", "/a=ten/minute", "FETCH /a=1/minute", "a=1/minute", "GET /a b=1/minute"]
)
def test_a_bad_endpoint_rule_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"expected|starts with|not a rate"):
        parse_endpoint_rules(raw)


def test_forwarding_headers_count_only_from_a_trusted_proxy() -> None:
    def scope(peer: str, *headers: tuple[bytes, bytes]) -> dict[str, object]:
        return {"client": (peer, 5000), "headers": list(headers)}

    spoof = (b"x-forwarded-for", b"6.6.6.6")
    nobody = ClientAddress()
    assert nobody(scope("203.0.113.9", spoof)) == "203.0.113.9"
    proxied = ClientAddress(parse_networks(["10.0.0.0/8", "127.0.0.1"]))
    assert proxied(scope("203.0.113.9", spoof)) == "203.0.113.9"  # not from a proxy
    assert proxied(scope("10.1.2.3", (b"x-forwarded-for", b"6.6.6.6, 198.51.100.7"))) == (
        "198.51.100.7"
    )
    # Hops the proxies added are skipped; the first untrusted one from the right is the client.
    chain = (b"x-forwarded-for", b"1.1.1.1, 198.51.100.7, 10.9.9.9")
    assert proxied(scope("127.0.0.1", chain)) == "198.51.100.7"
    forwarded = (b"forwarded", b'for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"')
    assert proxied(scope("10.0.0.1", forwarded)) == "10.0.0.1"  # not the header it reads
    by_forwarded = ClientAddress(parse_networks(["10.0.0.0/8"]), header="Forwarded")
    assert by_forwarded(scope("10.0.0.1", forwarded)) == "2001:db8::1"
    assert proxied(scope("10.0.0.1", (b"x-forwarded-for", b"not-an-ip"))) == "10.0.0.1"
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        parse_networks(["10.0.0.0/33"])


def test_a_peer_is_keyed_by_its_address_as_written_canonically() -> None:
    nobody, proxied = ClientAddress(), ClientAddress(parse_networks(["192.0.2.0/24"]))
    peers = {
        "198.51.100.7": "198.51.100.7",
        "::ffff:198.51.100.7": "198.51.100.7",  # a dual-stack socket's IPv4 peer
        "2001:db8:0:0:1:0:0:1": "2001:db8::1:0:0:1",
        " 198.51.100.7": "198.51.100.7",
        "not an address": "not an address",
    }
    for raw, key in peers.items():
        for keys in (nobody, proxied):
            assert keys({"client": (raw, 1), "headers": []}) == key, raw
    # Beyond the cache of known peers every new one is still keyed as it should be.
    many = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(3 * MAX_PEERS)]
    assert [nobody({"client": (a, 1)}) for a in many] == many


def test_keys_are_hashed_and_headers_are_exact() -> None:
    assert hashed("user:ann") == hashed("user:ann") != hashed("user:bo")
    assert "ann" not in hashed("user:ann")
    headers = dict(Standing("default", 100, 60, 42, 17, True).headers())
    assert headers == {
        b"ratelimit-policy": b'"default";q=100;w=60',
        b"ratelimit": b'"default";r=42;t=17',
        b"x-ratelimit-limit": b"100",
        b"x-ratelimit-remaining": b"42",
        b"x-ratelimit-reset": b"17",
    }
    assert Standing("default", 100, 60, 42, 17, True).headers("ietf") == [
        (b"ratelimit-policy", b'"default";q=100;w=60'),
        (b"ratelimit", b'"default";r=42;t=17'),
    ]
    assert Standing("default", 100, 60, 42, 17, True).headers("none") == []
    denied = dict(Standing("GET /a", 5, 60, 0, 0, False).headers("none"))
    assert denied[b"retry-after"] == b"1"  # a refusal has every header, whatever the mode
    assert denied[b"x-ratelimit-remaining"] == b"0"
    # A rule of two limits (the burst) lists both; RateLimit names the one that decides.
    rule = default_rule(100, 60, 10)
    assert rule.listed == b'"default";q=110;w=60, "default/120s";q=200;w=120'
    second = Standing("default", 200, 120, 3, 90, True, rule.listed, rule.names[1])
    assert dict(second.headers())[b"ratelimit"] == b'"default/120s";r=3;t=90'
    assert dict(second.headers())[b"ratelimit-policy"] == rule.listed


def test_memory_counters_expire_lazily_and_forget_old_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgimon.ratelimit import counters

    now = [1_000.0]
    monkeypatch.setattr("asgimon.ratelimit.counters.time.time", lambda: now[0])
    c = counters.Counters()
    minute = [("", "", 60, 1000)]  # one limit: the counter's name is the key itself
    assert [c.spend(minute, "a", 1)[2] for _ in range(3)] == [999, 998, 997]
    assert c.standing(minute, "a") == [(997, 1_060.0)]
    for i in range(100):
        c.spend(minute, f"k{i}", 2)
    assert len(c) == 101
    assert c.standing(minute, "k5") == [(998, 1_060.0)]
    now[0] += 61  # every window over: each next count starts afresh and forgets a few old
    assert c.spend(minute, "a", 1)[2] == 999
    assert c.standing(minute, "k5") == [(1000, now[0])]
    for i in range(30):
        c.spend(minute, f"new{i}", 1)
    # Four expired windows forgotten per count: after 31 counts, only the live ones remain.
    assert len(c) == 31


def test_a_rules_limits_are_spent_at_once_and_renew_with_their_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgimon.ratelimit import counters

    now = [1_000.0]
    monkeypatch.setattr("asgimon.ratelimit.counters.time.time", lambda: now[0])
    c = counters.Counters()
    rule = default_rule(3, 60, 1)  # 4 per 60 s and 6 per 120 s
    spent = [c.spend(rule.counters, "k", 1) for _ in range(5)]
    # The tightest limit decides: the first (4 per minute) until it refuses the 5th.
    assert [(index, allowed, left) for index, allowed, left, _ in spent] == [
        (0, True, 3),
        (0, True, 2),
        (0, True, 1),
        (0, True, 0),
        (0, False, 0),
    ]
    assert spent[0][3] == 1_060.0
    now[0] += 61  # the minute is over, the two minutes are not: 2 left of the 6
    again = [c.spend(rule.counters, "k", 1) for _ in range(3)]
    assert [(index, allowed, left) for index, allowed, left, _ in again] == [
        (1, True, 1),
        (1, True, 0),
        (1, False, 0),
    ]
    assert again[0][3] == 1_120.0  # the deciding limit's own reset
    # Others' counters are theirs; a cost spends several at once, and a refusal nothing.
    assert c.spend(rule.counters, "other", 4)[1:3] == (True, 0)
    assert c.spend(rule.counters, "third", 5)[1:3] == (False, 4)
    assert c.spend(rule.counters, "third", 4)[1:3] == (True, 0)


def test_the_middleware_refuses_a_header_mode_it_does_not_know() -> None:
    from asgimon.ratelimit.limiter import RateLimiter
    from asgimon.ratelimit.middleware import RateLimitMiddleware
    from asgimon.ratelimit.policy import Policy

    policy = Policy(default_rule(5, 60, 0), (), ())
    with pytest.raises(ValueError, match="ietf, all, none"):
        RateLimitMiddleware(None, limiter=RateLimiter("1/second"), policy=policy, headers="x")  # type: ignore[arg-type]
