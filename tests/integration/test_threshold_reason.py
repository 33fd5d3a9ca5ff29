"""The reason of a threshold verdict never shows numbers that contradict its comparison, on a real SQLite file: a score
R(s) = 0.6996 just below τ = 0.7 read "R(s)=0.700 < τ=0.70" (R rounded up to τ), in ``decide`` and ``decide_batch``
alike. R is shown with as many digits as it takes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npo.bandit import BanditConfig
from npo.deciding import shown_threshold, threshold_reason
from npo.loop import LoopConfig, decide, decide_batch
from npo.policy import DEFAULT_POLICY
from npo.types import Prediction, Verdict
from storage import SQLiteStore

NOW = 1000.0


def _decide(path: Path, thresholds: tuple[float, ...], confidence: float, batch: bool) -> tuple[Verdict, str]:
    config = LoopConfig(bandit=BanditConfig(thresholds=thresholds))  # one arm: τ is known
    prediction = Prediction("p0", "disk_failure", "r1-n1", "investigate", confidence, received_at=NOW)
    rng = np.random.default_rng(0)
    with SQLiteStore(path, config) as store, store.transaction() as tx:
        if batch:
            (result,) = decide_batch(tx, [prediction], config=config, policy=DEFAULT_POLICY, rng=rng, now=NOW)
        else:
            result = decide(tx, prediction, config=config, policy=DEFAULT_POLICY, rng=rng, now=NOW)
    return result.decision.verdict, result.decision.reason  # a new key: m = 0, so R(s) = p(s)


@pytest.mark.parametrize("batch", [False, True], ids=["decide", "decide_batch"])
@pytest.mark.parametrize(
    ("thresholds", "confidence", "verdict", "shown"),
    [
        ((0.7,), 0.6996, Verdict.SUPPRESS, "R(s)=0.6996 < τ=0.70"),
        ((0.7,), 0.69999999, Verdict.SUPPRESS, "R(s)=0.69999999 < τ=0.70"),
        ((0.7,), 0.6994, Verdict.SUPPRESS, "R(s)=0.699 < τ=0.70"),
        ((0.7,), 0.7, Verdict.SURFACE, "R(s)=0.700 ≥ τ=0.70"),
        ((0.725,), 0.7251, Verdict.SURFACE, "R(s)=0.725 ≥ τ=0.725"),  # τ = 0.725 itself is no two-digit number
        ((0.725,), 0.7249, Verdict.SUPPRESS, "R(s)=0.7249 < τ=0.725"),
    ],
)
def test_the_shown_numbers_agree_with_the_comparison(
    tmp_path: Path, thresholds: tuple[float, ...], confidence: float, verdict: Verdict, shown: str, batch: bool
) -> None:
    got_verdict, reason = _decide(tmp_path / "npo.db", thresholds, confidence, batch)
    assert got_verdict is verdict
    assert reason.startswith(shown), reason


@given(r=st.floats(0.0, 1.0), tau=st.floats(0.0, 1.0))
def test_any_score_and_threshold_read_as_compared(r: float, tau: float) -> None:
    reason = threshold_reason(r, tau, shown_threshold(tau))
    shown_r, sign, shown_tau = re.fullmatch(r"R\(s\)=(\S+) (<|≥) τ=(\S+)", reason).groups()  # type: ignore[union-attr]
    assert sign == ("<" if r < tau else "≥")
    assert (float(shown_r) < float(shown_tau)) == (r < tau)
