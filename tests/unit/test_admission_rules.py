"""Admission's pure parts: client identity, token buckets, counts, tokens, origins."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from icee_api.admission import Admission, AdmissionLimits, SandboxUp, SessionCounts
from icee_api.auth import (
    AuthError,
    TokenFileError,
    TokenStore,
    request_token,
    selected_subprotocol,
)
from icee_api.clients import Client, client_address, parse_networks
from icee_api.origin import origin_allowed
from icee_api.quotas import RateLimiter

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- client address ----------------------------------------------------------------


def test_forwarded_for_only_from_trusted_proxies() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", PROXIES) == "203.0.113.9"
    assert client_address("127.0.0.1", "198.51.100.1", PROXIES) == "198.51.100.1"
    assert client_address("127.0.0.1", None, PROXIES) == "127.0.0.1"
    assert client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_forwarded_for_takes_the_rightmost_untrusted_hop() -> None:
    # The client wrote "1.2.3.4" itself; the proxies saw 198.51.100.7.
    xff = "1.2.3.4, 198.51.100.7, 10.1.2.3"
    assert client_address("10.0.0.1", xff, PROXIES) == "198.51.100.7"
    assert client_address("10.0.0.1", "garbage, 10.9.9.9", PROXIES) == "10.9.9.9"


def test_bad_proxy_entry_is_named() -> None:
    with pytest.raises(ValueError, match="not-an-ip"):
        parse_networks(["not-an-ip"])


def test_client_label_is_a_stable_hash() -> None:
    a = Client("address", "198.51.100.7")
    assert a.label == Client("address", "198.51.100.7").label
    assert a.label != Client("token", "198.51.100.7").label
    assert len(a.label) == 32
    assert "198" not in a.label


# -- token bucket ------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    clock = Clock()
    rates = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [rates.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rates.take("a") == pytest.approx(0.5)
    assert rates.take("b") == 0.0  # another client is not affected
    clock.now += 0.5
    assert rates.take("a") == 0.0
    assert rates.take("a") > 0


def test_token_bucket_keeps_a_bounded_number_of_clients() -> None:
    clock = Clock()
    rates = RateLimiter(rate=1.0, burst=1, max_clients=10, clock=clock)
    for i in range(100):
        rates.take(f"c{i}")
    assert len(rates) <= 10


# -- counts and admission ------------------------------------------------------------


def session(client: str, connected: bool = False, phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"icee.dev/client": client}},
        "spec": {"start": {"at": "2026-01-01T00:00:00Z"}} if connected else {},
        "status": {"phase": phase} if phase else {},
    }


def test_counts_follow_the_watch() -> None:
    counts = SessionCounts()
    counts.apply("s1", session("a"))
    counts.apply("s2", session("a", connected=True))
    counts.apply("s3", session("b", connected=True))
    assert (counts.connected, counts.unconnected, counts.of_client("a")) == (2, 1, 2)
    counts.apply("s1", session("a", connected=True))
    counts.apply("s2", session("a", connected=True, phase="Finished"))
    counts.apply("s3", None)
    assert (counts.connected, counts.unconnected, counts.of_client("a")) == (1, 0, 1)
    assert counts.of_client("b") == 0


def test_relist_replaces_everything() -> None:
    counts = SessionCounts()
    counts.apply("gone", session("a"))
    counts.begin_relist()
    counts.apply("s1", session("b", connected=True))
    counts.end_relist()
    assert (counts.total, counts.of_client("a"), counts.of_client("b")) == (1, 0, 1)


def test_reservations_count_until_seen_or_expired() -> None:
    clock = Clock()
    counts = SessionCounts(clock)
    counts.reserve("s1", "a")
    assert (counts.unconnected, counts.of_client("a")) == (1, 1)
    counts.apply("s1", session("a"))
    assert (counts.unconnected, counts.of_client("a")) == (1, 1)  # not twice
    counts.reserve("s2", "a")
    clock.now += 31
    assert counts.of_client("a") == 1
    counts.reserve("s3", "a")
    counts.release("s3")
    assert counts.of_client("a") == 1


def admission(**overrides: Any) -> Admission:
    limits: dict[str, Any] = dict(
        max_live=10,
        max_unconnected=5,
        max_starting=100,
        client_starting=None,
        client_sessions=3,
        client_rate=1.0,
        client_burst=100,
    )
    return Admission(AdmissionLimits(**(limits | overrides)), SessionCounts())


def test_client_concurrency_limit() -> None:
    adm, alice, bob = admission(), Client("address", "a"), Client("address", "b")
    for i in range(3):
        assert adm.check(alice) is None
        adm.counts.reserve(f"s{i}", alice.label)
    refusal = adm.check(alice)
    assert refusal is not None
    assert refusal.limit == "client_sessions"
    assert "at most 3" in refusal.detail
    assert refusal.retry_after > 0
    assert adm.check(bob) is None


def test_cluster_limits() -> None:
    adm = admission(client_sessions=100)
    for i in range(5):
        adm.counts.apply(f"u{i}", session(f"c{i}"))
    refusal = adm.check(Client("address", "x"))
    assert refusal is not None
    assert refusal.limit == "unconnected_sessions"
    for i in range(5):
        adm.counts.apply(f"u{i}", session(f"c{i}", connected=True))
    for i in range(5):
        adm.counts.apply(f"l{i}", session(f"c{i}", connected=True))
    refusal = adm.check(Client("address", "x"))
    assert refusal is not None
    assert refusal.limit == "live_sessions"
    assert refusal.body()["limit"] == "live_sessions"


def test_starting_sessions_are_refused_with_429() -> None:
    adm = admission(client_sessions=100, max_unconnected=100, max_live=100, max_starting=3)
    adm.counts.apply("u", session("a"))  # waiting for its client
    adm.counts.apply("p", session("b", connected=True))  # its sandbox is starting
    adm.counts.reserve("r", "c")  # created here, not in the watch yet
    refusal = adm.check(Client("address", "x"))
    assert refusal is not None
    assert (refusal.limit, refusal.status, refusal.retry_after) == ("starting_sessions", 429, 2)
    assert "3 sessions are starting, at most 3" in refusal.detail
    assert adm.counts.starting == 3
    adm.counts.apply("p", session("b", connected=True, phase="Running"))
    assert adm.counts.starting == 2
    assert adm.check(Client("address", "x")) is None  # a slot freed: admitted
    adm.counts.apply("u", session("a", phase="Finished"))
    assert (adm.counts.starting, adm.counts.total) == (1, 2)


def test_an_unconnected_session_counts_as_starting_only_at_first() -> None:
    wall = Clock()
    counts = SessionCounts(wall=wall)
    created = datetime.fromtimestamp(wall.now, UTC).isoformat().replace("+00:00", "Z")
    counts.apply("u", {**session("a"), "metadata": {"creationTimestamp": created}})
    assert (counts.starting, counts.starting_of_client("a"), counts.unconnected) == (1, 0, 1)
    wall.now += 6  # its client did not come at once: an idle session, not a start
    assert (counts.starting, counts.unconnected) == (0, 1)


def test_one_client_holds_at_most_half_of_the_starting_sessions() -> None:
    adm = admission(client_sessions=100, max_unconnected=100, max_live=100, max_starting=8)
    mallory, alice = Client("address", "m"), Client("address", "a")
    for i in range(4):
        adm.counts.apply(f"m{i}", session(mallory.label))  # never connected
    refusal = adm.check(mallory)
    assert refusal is not None
    assert (refusal.limit, refusal.status) == ("client_starting", 429)
    assert adm.check(alice) is None  # the others still start
    adm.counts.apply("m0", session(mallory.label, connected=True, phase="Running"))
    assert adm.counts.starting_of_client(mallory.label) == 3
    assert adm.check(mallory) is None


def pod(state: str) -> dict[str, Any]:
    return {"status": {"containerStatuses": [{"name": "program", "state": {state: {}}}]}}


def test_a_session_whose_sandbox_runs_is_not_starting() -> None:
    counts = SessionCounts()
    pods = SandboxUp(counts, lambda obj: "running" in str(obj))
    counts.apply("s1", session("a", connected=True))
    counts.apply("s2", session("a", connected=True))
    assert (counts.starting, counts.starting_of_client("a")) == (2, 2)
    pods.apply("s1", pod("waiting"))
    assert counts.starting == 2
    pods.apply("s1", pod("running"))
    assert (counts.starting, counts.starting_of_client("a"), counts.connected) == (1, 1, 2)
    # The operator's status still says Pending (its Running comes after a relist):
    # the sandbox ran, so it stays not starting, also through a relist.
    counts.apply("s1", session("a", connected=True))
    counts.begin_relist()
    counts.apply("s1", session("a", connected=True))
    counts.apply("s2", session("a", connected=True))
    counts.end_relist()
    assert counts.starting == 1
    # Its end forgets it; a sandbox seen after the end is not remembered.
    counts.apply("s1", None)
    pods.apply("s1", pod("running"))
    counts.apply("s2", session("a", connected=True, phase="Finished"))
    assert (counts.starting, counts.connected, counts.total) == (0, 0, 0)


def test_a_set_client_share_of_the_starting_sessions() -> None:
    adm = admission(
        client_sessions=100, max_unconnected=100, max_live=100, max_starting=8, client_starting=2
    )
    mallory, alice = Client("address", "m"), Client("address", "a")
    for i in range(2):
        adm.counts.apply(f"m{i}", session(mallory.label))
    refusal = adm.check(mallory)
    assert refusal is not None
    assert (refusal.limit, refusal.retry_after) == ("client_starting", 2)
    assert "2 sessions starting" in refusal.detail
    assert adm.check(alice) is None


def test_rate_limit_after_burst() -> None:
    adm = admission(client_sessions=100, max_live=100, max_unconnected=100, client_burst=2)
    alice = Client("token", "alice")
    assert adm.check(alice) is None
    assert adm.check(alice) is None
    refusal = adm.check(alice)
    assert refusal is not None
    assert refusal.limit == "client_rate"
    assert refusal.retry_after == 1


# -- tokens --------------------------------------------------------------------------

TOKEN = "s3cr3t-token-0123456789"


def test_tokens_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "alice").write_text(TOKEN + "\n")
    (tmp_path / "..data").mkdir()  # a mounted Secret's bookkeeping is skipped
    store = TokenStore(tmp_path, reload_seconds=0)
    assert store.name_of(TOKEN) == "alice"
    with pytest.raises(AuthError) as refused:
        store.name_of("x" * 20)
    assert refused.value.status == 403
    (tmp_path / "bob").write_text("another-token-abcdefgh")
    assert store.name_of("another-token-abcdefgh") == "bob"


def test_token_characters_must_fit_a_subprotocol(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("has spaces and/slashes, too long enough")
    with pytest.raises(TokenFileError, match="subprotocol"):
        TokenStore(tmp_path)
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenStore(tmp_path / "missing")
    (tmp_path / "bad").unlink()
    with pytest.raises(TokenFileError, match="no token"):
        TokenStore(tmp_path)


def test_request_token() -> None:
    assert request_token(f"Bearer {TOKEN}") == TOKEN
    assert request_token(None, ["icee", f"bearer.{TOKEN}"]) == TOKEN
    with pytest.raises(AuthError) as missing:
        request_token(None, ["icee"])
    assert missing.value.status == 401
    with pytest.raises(AuthError) as malformed:
        request_token(f"Basic {TOKEN}")
    assert malformed.value.status == 401
    assert selected_subprotocol(["icee", f"bearer.{TOKEN}"]) == "icee"
    assert selected_subprotocol([f"bearer.{TOKEN}"]) is None


# -- origin --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "icee.example.com", [], True),
        ("https://icee.example.com", "icee.example.com", [], True),
        ("http://127.0.0.1:30080", "127.0.0.1:30080", [], True),
        ("https://evil.example", "icee.example.com", [], False),
        ("null", "icee.example.com", [], False),
        ("https://ide.example.org", "icee.example.com", ["https://ide.example.org/"], True),
        ("https://evil.example", "icee.example.com", ["*"], True),
        ("http://127.0.0.1:30081", "127.0.0.1:30080", [], False),
    ],
)
def test_origin(origin: str | None, host: str, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok
