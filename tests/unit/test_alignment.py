"""Alignment loss L_align over count and time windows, per key, per channel, trust-weighted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.alignment import AlignmentSample, alignment_loss, loss_by_key, rolling_loss, window, windowed_loss
from npo.types import InvalidRecord

# key, y, at, weight, channel — in time order
SAMPLES = [
    AlignmentSample("a", 1.0, 10.0, 1.0, "ops"),
    AlignmentSample("b", 0.0, 20.0, 0.5, "ops"),
    AlignmentSample("a", 0.0, 30.0, 0.2, "db"),
    AlignmentSample("a", 0.5, 40.0, 1.0, "ops"),
    AlignmentSample("b", 0.3, 50.0, 0.0, "db"),
    AlignmentSample("b", 1.0, 60.0, 0.8, "db"),
]


def test_global_loss_is_the_plain_mean() -> None:
    assert windowed_loss(SAMPLES) == pytest.approx((1.0 + 0.0 + 0.0 + 0.5 + 0.3 + 1.0) / 6)


def test_count_window_takes_the_last_n() -> None:
    assert windowed_loss(SAMPLES, last_n=2) == pytest.approx((0.3 + 1.0) / 2)
    assert windowed_loss(SAMPLES, last_n=100) == windowed_loss(SAMPLES)
    assert [s.at for s in window(SAMPLES, last_n=3)] == [40.0, 50.0, 60.0]


def test_time_window_includes_since_itself() -> None:
    assert windowed_loss(SAMPLES, since=40.0) == pytest.approx((0.5 + 0.3 + 1.0) / 3)
    assert windowed_loss(SAMPLES, since=40.1) == pytest.approx((0.3 + 1.0) / 2)


def test_time_then_count() -> None:
    # filter by time first (4 samples at ≥ 30), then the last 2 of them
    assert [s.at for s in window(SAMPLES, since=30.0, last_n=2)] == [50.0, 60.0]


def test_per_key_and_per_channel() -> None:
    assert windowed_loss(SAMPLES, key="a") == pytest.approx(0.5)
    assert windowed_loss(SAMPLES, key="b") == pytest.approx(1.3 / 3)
    assert windowed_loss(SAMPLES, channel="db") == pytest.approx(1.3 / 3)
    assert windowed_loss(SAMPLES, channel="ops") == pytest.approx(0.5)
    assert windowed_loss(SAMPLES, key="a", channel="db") == pytest.approx(0.0)
    assert windowed_loss(SAMPLES, key="b", last_n=1) == pytest.approx(1.0)  # the last of key b, not of all


def test_trust_weighted() -> None:
    expected = (1.0 * 1.0 + 0.5 * 0.0 + 0.2 * 0.0 + 1.0 * 0.5 + 0.0 * 0.3 + 0.8 * 1.0) / (1.0 + 0.5 + 0.2 + 1.0 + 0.8)
    assert windowed_loss(SAMPLES, weighted=True) == pytest.approx(expected)
    assert windowed_loss(SAMPLES, key="a", weighted=True) == pytest.approx(1.5 / 2.2)
    # a zero-weight window has no loss
    assert windowed_loss(SAMPLES, key="b", since=45.0, last_n=1, weighted=True) == pytest.approx(1.0)
    assert windowed_loss([SAMPLES[4]], weighted=True) is None
    assert windowed_loss([SAMPLES[4]]) == pytest.approx(0.3)


def test_empty_windows_are_none() -> None:
    assert windowed_loss([]) is None
    assert windowed_loss(SAMPLES, key="nope") is None
    assert windowed_loss(SAMPLES, since=1000.0) is None
    assert windowed_loss(SAMPLES, channel="nope", weighted=True) is None
    assert alignment_loss([]) is None
    assert alignment_loss([0.5, 1.0], [0.0, 0.0]) is None


def test_loss_by_key() -> None:
    assert loss_by_key(SAMPLES) == pytest.approx({"a": 0.5, "b": 1.3 / 3})
    assert loss_by_key(SAMPLES, weighted=True) == pytest.approx({"a": 1.5 / 2.2, "b": 0.8 / 1.3})
    assert loss_by_key([SAMPLES[4]], weighted=True) == {}


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidRecord, match="last_n"):
        window(SAMPLES, last_n=0)
    with pytest.raises(InvalidRecord, match="weights"):
        alignment_loss([0.1, 0.2], [1.0])
    with pytest.raises(InvalidRecord, match="y"):
        AlignmentSample("a", 1.5, 0.0)
    with pytest.raises(InvalidRecord, match="weight"):
        AlignmentSample("a", 0.5, 0.0, weight=-0.1)
    with pytest.raises(InvalidRecord, match="width"):
        rolling_loss([0.1], 0)


@pytest.mark.parametrize("at", [math.nan, math.inf, -math.inf])
def test_a_sample_at_a_non_finite_time_is_refused(at: float) -> None:
    """Before, a NaN time was accepted and the sample silently left out of every time window."""
    with pytest.raises(InvalidRecord) as info:
        AlignmentSample("a", 0.5, at)
    assert info.value.field == "at"


@pytest.mark.parametrize("since", [math.nan, math.inf, -math.inf])
def test_a_window_from_a_non_finite_time_is_refused(since: float) -> None:
    """Before, ``since=NaN`` compared false with every time: an empty window, L_align None, without a word."""
    with pytest.raises(InvalidRecord) as info:
        window(SAMPLES, since=since)
    assert info.value.field == "since"
    with pytest.raises(InvalidRecord, match="since"):
        windowed_loss(SAMPLES, since=since)


def _naive_rolling(ys: list[float], width: int) -> list[float]:
    out = []
    for i in range(len(ys)):
        chunk = [y for y in ys[max(0, i - width + 1) : i + 1] if not math.isnan(y)]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


@settings(max_examples=200, deadline=None)
@given(
    ys=st.lists(st.one_of(st.floats(0.0, 1.0), st.just(math.nan)), max_size=60),
    width=st.integers(1, 20),
)
def test_rolling_loss_matches_a_naive_loop(ys: list[float], width: int) -> None:
    got = rolling_loss(ys, width)
    expected = np.array(_naive_rolling(ys, width), dtype=np.float64)
    assert got.shape == (len(ys),)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], atol=1e-9)


_sample = st.builds(
    AlignmentSample,
    key=st.sampled_from(["a", "b", "c"]),
    y=st.floats(0.0, 1.0),
    at=st.floats(0.0, 100.0),
    weight=st.floats(0.0, 1.0),
    channel=st.sampled_from(["ops", "db"]),
)


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(_sample, max_size=40),
    last_n=st.none() | st.integers(1, 50),
    since=st.none() | st.floats(0.0, 100.0),
    key=st.none() | st.sampled_from(["a", "b", "c"]),
    channel=st.none() | st.sampled_from(["ops", "db"]),
    weighted=st.booleans(),
)
def test_windowed_loss_matches_a_naive_definition(
    samples: list[AlignmentSample],
    last_n: int | None,
    since: float | None,
    key: str | None,
    channel: str | None,
    weighted: bool,
) -> None:
    chosen = [
        s
        for s in samples
        if (key is None or s.key == key)
        and (channel is None or s.channel == channel)
        and (since is None or s.at >= since)
    ]
    if last_n is not None:
        chosen = chosen[len(chosen) - last_n :] if len(chosen) > last_n else chosen
    weights = [s.weight if weighted else 1.0 for s in chosen]
    got = windowed_loss(samples, last_n=last_n, since=since, key=key, channel=channel, weighted=weighted)
    if sum(weights) <= 0.0:
        assert got is None
    else:
        assert got is not None
        assert got == pytest.approx(sum(w * s.y for w, s in zip(weights, chosen, strict=True)) / sum(weights))
        assert -1e-12 <= got <= 1.0 + 1e-12


@pytest.mark.parametrize(
    ("ys", "weights", "field"),
    [
        ([0.5, float("nan")], None, "ys"),
        ([0.5, float("inf")], None, "ys"),
        ([2.0], None, "ys"),
        ([0.5, 1.0], [1.0, float("nan")], "weights"),
        ([0.5, 1.0], [1.0, float("inf")], "weights"),
        ([0.0, 1.0], [2.0, -1.0], "weights"),  # would give L_align = −1
        ([0.5, 0.5], [1.0], "weights"),  # one weight for two codes
    ],
)
def test_alignment_loss_refuses_codes_and_weights_it_cannot_average(
    ys: list[float], weights: list[float] | None, field: str
) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        alignment_loss(ys, weights)
    assert excinfo.value.field == field
