"""The token bucket, sans-IO: explicit times in, admitted or not out."""

from __future__ import annotations

import pytest

from actr_trio._bucket import TokenBucket
from actr_trio.errors import ConfigError


def admitted(bucket: TokenBucket, times: list[float], cost: float = 1.0) -> int:
    return sum(bucket.take(t, cost) for t in times)


def test_starts_full_and_admits_exactly_the_burst_at_once() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert bucket.tokens(0.0) == 0


def test_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert admitted(bucket, [0.0] * 5) == 5
    assert bucket.tokens(0.25) == pytest.approx(2.5)
    assert admitted(bucket, [0.25] * 5) == 2
    # A long pause saves up no more than the burst.
    assert bucket.tokens(100.0) == 5


def test_a_caller_that_keeps_asking_gets_burst_plus_rate_times_elapsed() -> None:
    bucket = TokenBucket(rate=20, burst=50, now=0.0)
    times = [i / 1000 for i in range(10_000)]  # 1,000 asks per second for 10 s
    assert admitted(bucket, times) == pytest.approx(50 + 20 * 9.999, abs=1)


def test_a_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=3, now=0.0)
    assert not bucket.take(0.0, cost=4)  # above the burst: never
    assert bucket.take(0.0, cost=3)
    assert not bucket.take(0.5, cost=1)
    assert bucket.tokens(0.5) == pytest.approx(0.5)


def test_charge_goes_into_debt_that_is_paid_back_first() -> None:
    bucket = TokenBucket(rate=100, burst=1000, now=0.0)
    assert bucket.take(0.0)
    bucket.charge(0.0, 2999)  # a page larger than the balance: admitted, then paid for
    assert bucket.tokens(0.0) == -1000  # the debt stops at -burst
    assert not bucket.take(5.0)  # 500 tokens back: still in debt
    assert not bucket.take(10.0)
    assert bucket.take(10.02)


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=10, burst=2, now=5.0)
    assert admitted(bucket, [5.0, 5.0]) == 2
    assert not bucket.take(1.0)
    assert not bucket.take(5.0)
    assert bucket.take(5.1 + 1e-9)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0.5), (float("nan"), 1)])
def test_invalid_parameters_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate=rate, burst=burst, now=0.0)
