"""The bound on log lines of one kind (:mod:`bot.log_throttle`), on a clock the test moves."""

from __future__ import annotations

import pytest

from bot.log_throttle import LogThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_past_the_limit_are_held_and_counted_by_the_next_line_written() -> None:
    clock = Clock()
    throttle = LogThrottle(limit=3, window_s=60.0, clock=clock)
    assert [throttle.admit() for _ in range(5)] == [(True, 0), (True, 0), (True, 0), (False, 0), (False, 0)]
    clock.now += 59.9  # the same window
    assert throttle.admit() == (False, 0)
    clock.now += 0.1  # a new window: the first line says three were left out, once
    assert throttle.admit() == (True, 3)
    assert throttle.admit() == (True, 0)
    assert throttle.note(3) == "; 3 more such lines left out before it (at most 3 per 60 s)"
    assert throttle.note(1) == "; 1 more such line left out before it (at most 3 per 60 s)"
    assert throttle.note(0) == ""


def test_a_window_starts_with_the_first_line_after_the_last_one_ended() -> None:
    clock = Clock()
    throttle = LogThrottle(limit=1, window_s=10.0, clock=clock)
    assert throttle.admit() == (True, 0)
    clock.now += 25.0  # quiet for two windows: nothing held, nothing to report
    assert throttle.admit() == (True, 0)
    clock.now += 5.0
    assert throttle.admit() == (False, 0)


@pytest.mark.parametrize(("limit", "window_s"), [(0, 60.0), (1, 0.0), (1, -1.0)])
def test_a_limit_that_would_hold_every_line_is_refused(limit: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        LogThrottle(limit=limit, window_s=window_s)
