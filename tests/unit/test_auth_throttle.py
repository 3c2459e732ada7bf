"""The auth throttle, sans-IO: explicit times in, waits out (no clock, no sleeping)."""

from __future__ import annotations

import itertools

import pytest

from actr_trio.errors import ConfigError
from actr_trio.signaling._throttle import (
    BASE_DELAY,
    MAX_DELAY,
    AuthThrottle,
    AuthThrottleStatistics,
    source_key,
)

A = "192.0.2.1"
B = "192.0.2.2"


def guess_sequentially(throttle: AuthThrottle, guesses: int, *, start: float = 0.0) -> list[float]:
    """An attacker who reconnects the moment a guess fails; returns when each guess ran."""
    served = []
    now = start
    for _ in range(guesses):
        wait = throttle.admit(A, now)
        assert wait is not None
        now += wait
        served.append(now)
        throttle.failed(A, now)
    return served


def test_wrong_guesses_from_one_address_take_exponentially_longer_up_to_the_bound() -> None:
    throttle = AuthThrottle()
    served = guess_sequentially(throttle, 10)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(served)]
    assert gaps == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert throttle.statistics() == AuthThrottleStatistics(
        failures=10, delayed=9, turned_away=0, addresses=1
    )


def test_2000_guesses_take_hours_not_seconds() -> None:
    # The finding: 2,000 wrong guesses ran at 69/s. Now they need ~2000 * MAX_DELAY.
    served = guess_sequentially(AuthThrottle(), 2000)
    assert served[-1] > 1990 * MAX_DELAY


def test_parallel_connections_get_one_slot_each_and_the_rest_are_turned_away() -> None:
    throttle = AuthThrottle()
    for _ in range(3):
        throttle.failed(A, 0.0)  # delay is now 0.4 s per connection
    waits = [throttle.admit(A, 0.0) for _ in range(20)]
    slots = [w for w in waits if w is not None]
    # One connection per 0.4 s, no further ahead than MAX_DELAY: at most 13 get a turn.
    assert slots == pytest.approx([0.4 * i for i in range(1, 13)])
    assert waits[len(slots) :] == [None] * (20 - len(slots))
    assert throttle.statistics().turned_away == 20 - len(slots)


def test_other_addresses_are_not_slowed() -> None:
    throttle = AuthThrottle()
    guess_sequentially(throttle, 5)
    assert throttle.admit(B, 1.0) == 0.0
    assert throttle.admit(source_key("2001:db8:1::1"), 1.0) == 0.0


def test_a_correct_client_from_the_same_address_gets_in_after_the_window() -> None:
    throttle = AuthThrottle()
    served = guess_sequentially(throttle, 3)
    # The honest node waits for the next slot, then is served (its secret is checked then).
    wait = throttle.admit(A, served[-1])
    assert wait == pytest.approx(0.4)
    # Success does not reset the address: the next connection still waits its turn...
    assert throttle.admit(A, served[-1] + wait) == pytest.approx(0.4)


def test_an_address_is_forgotten_a_while_after_its_last_failure() -> None:
    throttle = AuthThrottle(forget_after=60.0)
    served = guess_sequentially(throttle, 8)
    assert throttle.admit(A, served[-1] + 59.0) is not None
    assert throttle.statistics().addresses == 1
    assert throttle.admit(A, served[-1] + 61.0) == 0.0
    assert throttle.statistics().addresses == 0
    assert throttle.failed(A, served[-1] + 62.0) == BASE_DELAY  # starts afresh


def test_the_table_is_bounded_and_forgets_the_stalest_address_first() -> None:
    throttle = AuthThrottle(max_addresses=3)
    for i in range(5):
        throttle.failed(f"198.51.100.{i}", float(i))
    assert throttle.statistics().addresses == 3
    assert throttle.admit("198.51.100.0", 5.0) == 0.0  # evicted
    assert throttle.admit("198.51.100.1", 5.0) == 0.0  # evicted
    assert throttle.admit("198.51.100.4", 4.0) == pytest.approx(BASE_DELAY)


def test_the_delay_never_overflows() -> None:
    throttle = AuthThrottle()
    assert throttle.delay(0) == 0.0
    assert throttle.delay(1) == BASE_DELAY
    assert throttle.delay(10**9) == MAX_DELAY


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_ipv6_hosts_are_throttled_by_their_64(address: str, key: str) -> None:
    assert source_key(address) == key


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        AuthThrottle(base_delay=0)
    with pytest.raises(ConfigError):
        AuthThrottle(base_delay=10, max_delay=5)
    with pytest.raises(ConfigError):
        AuthThrottle(max_addresses=0)
