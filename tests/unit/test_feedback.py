"""Feedback codes: a click becomes the per-event alignment loss y, and the bandit reward 1 − y."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npo.feedback import DEFAULT_SKIP_LAMBDA, FeedbackCodes, feedback_code, validate_skip_lambda
from npo.types import FeedbackKind, InvalidRecord


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(FeedbackKind.OVERRIDE, 1.0), (FeedbackKind.LIKE, 0.0), (FeedbackKind.NEUTRAL, 0.5), (FeedbackKind.SKIPPED, 0.3)],
)
def test_default_codes(kind: FeedbackKind, expected: float) -> None:
    codes = FeedbackCodes()
    assert codes.code(kind) == expected
    assert codes.code(kind.value) == expected  # the string form is accepted too
    assert feedback_code(kind) == expected
    assert codes.reward(kind) == pytest.approx(1.0 - expected)


def test_default_lambda_is_0_3() -> None:
    assert DEFAULT_SKIP_LAMBDA == 0.3
    assert FeedbackCodes().skip_lambda == 0.3


@settings(deadline=None)
@given(skip_lambda=st.floats(0.2, 0.4))
def test_skip_code_is_lambda_and_other_codes_do_not_depend_on_it(skip_lambda: float) -> None:
    codes = FeedbackCodes(skip_lambda)
    assert codes.code(FeedbackKind.SKIPPED) == skip_lambda
    assert codes.reward(FeedbackKind.SKIPPED) == pytest.approx(1.0 - skip_lambda)
    assert feedback_code("skipped", skip_lambda) == skip_lambda
    assert (codes.code("override"), codes.code("like"), codes.code("neutral")) == (1.0, 0.0, 0.5)


@settings(deadline=None)
@given(skip_lambda=st.floats(0.2, 0.4), kind=st.sampled_from(list(FeedbackKind)))
def test_reward_is_one_minus_code(skip_lambda: float, kind: FeedbackKind) -> None:
    codes = FeedbackCodes(skip_lambda)
    assert codes.reward(kind) == 1.0 - codes.code(kind)
    assert 0.0 <= codes.code(kind) <= 1.0


def test_bandit_rewards_in_the_design_order() -> None:
    codes = FeedbackCodes()
    assert codes.reward("like") == 1.0
    assert codes.reward("override") == 0.0
    assert codes.reward("neutral") == 0.5
    assert codes.reward("skipped") == pytest.approx(0.7)


@pytest.mark.parametrize("bad", [0.19999, 0.40001, 0.0, 1.0, -0.3, float("nan"), float("inf"), True, "0.3", None])
def test_lambda_outside_range_raises_naming_skip_lambda(bad: object) -> None:
    with pytest.raises(InvalidRecord) as excinfo:
        FeedbackCodes(bad)  # type: ignore[arg-type]
    assert excinfo.value.field == "skip_lambda"
    with pytest.raises(InvalidRecord) as excinfo:
        validate_skip_lambda(bad)  # type: ignore[arg-type]
    assert excinfo.value.field == "skip_lambda"
    with pytest.raises(InvalidRecord):
        feedback_code("skipped", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("edge", [0.2, 0.4, 0.25, 1 / 3])
def test_lambda_edges_are_accepted(edge: float) -> None:
    assert validate_skip_lambda(edge) == edge
    assert FeedbackCodes(edge).code(FeedbackKind.SKIPPED) == edge


def test_integer_lambda_is_range_checked_not_type_rejected() -> None:
    with pytest.raises(InvalidRecord, match="skip_lambda"):
        validate_skip_lambda(1)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="bogus"):
        FeedbackCodes().code("bogus")
