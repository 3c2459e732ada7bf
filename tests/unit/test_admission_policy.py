"""Link admission, sans-IO: size, per-peer and total token buckets (``_bucket``), caps, typed refusals,
refusal pacing and the refusal payload (``actr_trio.transport._admission``)."""

from __future__ import annotations

import pytest

from actr_trio.transport._admission import (
    MAX_PEERS,
    MAX_REFUSAL,
    REFUSAL_BURST,
    REFUSAL_CODES,
    REFUSAL_INTERVAL,
    Admission,
    Refusal,
    decode_refusal,
    encode_refusal,
)

OFFER = 5_500  # characters of a real offer's relay payload


def admission(**overrides: float) -> Admission:
    options: dict[str, float] = {
        "max_links": 8,
        "max_negotiating": 4,
        "peer_rate": 1.0,
        "peer_burst": 2,
        "total_rate": 10.0,
        "max_payload": 32 * 1024,
        "now": 0.0,
    }
    options.update(overrides)
    return Admission(**options)  # type: ignore[arg-type]


def code(refusal: Refusal | None) -> str | None:
    return None if refusal is None else refusal.code


# ------------------------------------------------------------------ offers


def test_an_offer_over_the_size_cap_is_refused_without_spending_tokens() -> None:
    gate = admission(max_payload=16 * 1024, peer_burst=1)
    refusal = gate.check_offer("a", 60_000, 0.0)
    assert refusal is not None
    assert refusal.code == "too_large"
    assert "60000" in refusal.message
    assert "max_relay_payload=16384" in refusal.message
    assert gate.check_offer("a", OFFER, 0.0) is None  # the peer's one token is still there
    assert gate.statistics().refused_too_large == 1


def test_one_peer_is_held_to_its_rate_and_others_are_not() -> None:
    gate = admission(peer_rate=1.0, peer_burst=2)
    outcomes = [code(gate.check_offer("flooder", OFFER, 0.0)) for _ in range(5)]
    assert outcomes == [None, None, "peer_rate", "peer_rate", "peer_rate"]
    assert gate.check_offer("honest", OFFER, 0.0) is None
    assert code(gate.check_offer("flooder", OFFER, 0.5)) == "peer_rate"
    assert gate.check_offer("flooder", OFFER, 1.0) is None  # one token a second
    refusal = gate.check_offer("flooder", OFFER, 1.0)
    assert refusal is not None
    assert "offers_per_peer_rate=1/s, burst 2" in refusal.message
    stats = gate.statistics()
    assert (stats.offers_admitted, stats.refused_peer_rate) == (4, 5)


def test_the_node_total_bounds_many_peers_and_bursts_up_to_the_negotiating_cap() -> None:
    gate = admission(total_rate=2.0, max_negotiating=4, max_links=100)
    admitted = [code(gate.check_offer(f"p{i}", OFFER, 0.0)) for i in range(6)]
    assert admitted == [None] * 4 + ["total_rate"] * 2
    assert code(gate.check_offer("p9", OFFER, 0.25)) == "total_rate"
    assert gate.check_offer("p9", OFFER, 0.5) is None  # 2 per second
    refusal = gate.check_offer("p10", OFFER, 0.5)
    assert refusal is not None
    assert refusal.message == "too many offers (offers_total_rate=2/s)"


def test_a_peer_refused_by_its_own_rate_does_not_drain_the_node_total() -> None:
    gate = admission(peer_burst=1, total_rate=1.0, max_negotiating=2)
    assert gate.check_offer("flooder", OFFER, 0.0) is None
    for _ in range(100):
        assert code(gate.check_offer("flooder", OFFER, 0.0)) == "peer_rate"
    assert gate.check_offer("honest", OFFER, 0.0) is None


def test_offers_beyond_the_negotiating_cap_are_refused_until_a_link_opens() -> None:
    gate = admission(max_negotiating=2, total_rate=100.0)
    for peer in ("a", "b"):
        assert gate.check_offer(peer, OFFER, 0.0) is None
        gate.link_started()
    refusal = gate.check_offer("c", OFFER, 1.0)
    assert refusal == Refusal(
        "negotiating", "too many links being negotiated (max_negotiating_links=2)"
    )
    gate.link_ready()  # "a" opened
    assert gate.check_offer("c", OFFER, 2.0) is None
    gate.link_started()
    gate.link_ended(was_ready=False)  # "b" gave up before opening
    assert (gate.links, gate.negotiating) == (2, 1)


def test_offers_beyond_max_links_are_refused_and_existing_links_are_untouched() -> None:
    gate = admission(max_links=3, max_negotiating=3, total_rate=100.0)
    for peer in ("a", "b", "c"):
        assert gate.check_offer(peer, OFFER, 0.0) is None
        gate.link_started()
        gate.link_ready()
    assert code(gate.check_offer("d", OFFER, 1.0)) == "links"
    # A peer that holds a link may offer again (it restarted): its slot is its own.
    assert gate.check_offer("a", OFFER, 2.0, replaces=True) is None
    assert (gate.links, gate.negotiating) == (3, 0)  # refusals change no link count
    stats = gate.statistics()
    assert (stats.refused_links, stats.offers_refused, stats.offers_admitted) == (1, 1, 4)


def test_a_reoffer_taking_over_a_negotiating_link_needs_no_new_negotiating_slot() -> None:
    gate = admission(max_links=2, max_negotiating=1, total_rate=100.0)
    assert gate.check_offer("a", OFFER, 0.0) is None
    gate.link_started()
    assert code(gate.check_offer("b", OFFER, 1.0)) == "negotiating"
    assert gate.check_offer("a", OFFER, 2.0, replaces=False) is None
    # An open link frees no negotiating slot when its peer offers again.
    gate.link_ready()
    gate.link_started()
    assert code(gate.check_offer("a", OFFER, 3.0, replaces=True)) == "negotiating"


def test_outbound_links_count_and_are_capped_by_max_links() -> None:
    gate = admission(max_links=2, max_negotiating=2)
    for _ in range(2):
        assert gate.check_outbound() is None
        gate.link_started()
    refusal = gate.check_outbound()
    assert refusal is not None
    assert refusal.code == "links"
    assert "max_links=2" in refusal.message
    assert code(gate.check_offer("x", OFFER, 0.0)) == "negotiating"
    gate.link_ready()
    assert code(gate.check_offer("x", OFFER, 0.0)) == "links"
    gate.link_ended(was_ready=True)
    assert gate.check_outbound() is None
    assert gate.statistics().refused_outbound == 1


def test_checks_run_cheapest_first() -> None:
    gate = admission(max_links=1, max_negotiating=1, peer_burst=1, total_rate=1.0)
    gate.link_started()
    # Everything is exhausted or full: the size is reported before anything else.
    assert code(gate.check_offer("a", 10**6, 0.0)) == "too_large"
    assert code(gate.check_offer("a", OFFER, 0.0)) == "negotiating"
    assert code(gate.check_offer("a", OFFER, 0.0)) == "peer_rate"
    assert code(gate.check_offer("b", OFFER, 0.0)) == "total_rate"


def test_the_peer_table_is_bounded() -> None:
    gate = admission(max_peers=3, peer_burst=1, total_rate=1e9, max_negotiating=8)
    for i in range(10):
        gate.check_offer(i, OFFER, 0.0)
    assert len(gate._peers) == 3
    assert MAX_PEERS >= 1024


@pytest.mark.parametrize(
    "options",
    [{"max_negotiating": 9}, {"max_negotiating": 0}, {"max_payload": 0}, {"peer_rate": 0.0}],
)
def test_limits_out_of_range_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        admission(**options)


# ------------------------------------------------------------------ refusals


FULL = Refusal("negotiating", "too many links being negotiated")


def test_refusals_are_paced_per_peer_and_overall() -> None:
    gate = admission()
    assert gate.refusal_due("a", FULL, 0.0)
    assert not gate.refusal_due("a", FULL, REFUSAL_INTERVAL / 2)  # one per peer per interval
    sent = sum(gate.refusal_due(f"p{i}", FULL, REFUSAL_INTERVAL / 2) for i in range(100))
    assert sent <= REFUSAL_BURST  # the node's own refusal bucket bounds them
    assert gate.refusal_due("a", FULL, REFUSAL_INTERVAL * 2)
    assert gate.statistics().refusals_sent == sent + 2


def test_a_peer_over_its_own_rate_gets_no_refusal() -> None:
    gate = admission(peer_burst=1)
    assert gate.check_offer("flooder", OFFER, 0.0) is None
    refusal = gate.check_offer("flooder", OFFER, 0.0)
    assert refusal is not None
    assert refusal.code == "peer_rate"
    assert not gate.refusal_due("flooder", refusal, 0.0)
    assert gate.refusal_due("other", FULL, 0.0)  # the budget is left for others
    assert gate.statistics().refusals_sent == 1


def test_a_refusal_travels_as_code_and_message() -> None:
    refusal = Refusal("negotiating", "too many links being negotiated (max_negotiating_links=2)")
    payload = encode_refusal(refusal)
    assert payload == "negotiating too many links being negotiated (max_negotiating_links=2)"
    assert decode_refusal(payload) == refusal
    assert len(encode_refusal(Refusal("links", "x" * 1000))) == MAX_REFUSAL


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("", Refusal("unknown", "no reason given")),
        ("evil\x00code message", Refusal("unknown", "message")),
        ("made_up_code what", Refusal("unknown", "what")),
        ("links bell\x07 and\nnewline", Refusal("links", "bell? and?newline")),
        ("peer_rate " + "y" * 10_000, Refusal("peer_rate", "y" * (MAX_REFUSAL - 10))),
    ],
)
def test_any_refusal_payload_decodes_to_a_bounded_printable_reason(
    payload: str, expected: Refusal
) -> None:
    assert decode_refusal(payload) == expected


def test_every_code_is_a_statistic() -> None:
    stats = admission().statistics()
    for name in REFUSAL_CODES:
        assert getattr(stats, f"refused_{name}") == 0


async def test_every_waiting_sender_gets_its_own_link_refused_with_the_reason() -> None:
    from actr_trio.errors import LinkRefused, PeerUnavailable
    from actr_trio.transport._webrtc_link import Outbox

    outbox = Outbox()
    outbox.fail(LinkRefused("peer: peer refused the link: too many", "negotiating"))
    raised = []
    for _ in range(2):
        with pytest.raises(PeerUnavailable) as caught:
            await outbox.put([b"x"])
        raised.append(caught.value)
    assert raised[0] is not raised[1]
    assert all(isinstance(e, LinkRefused) and e.reason == "negotiating" for e in raised)
    assert str(raised[0]) == "peer: peer refused the link: too many"
