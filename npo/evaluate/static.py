"""The conventional alerting rule an on-call team would otherwise run: surface a prediction when its confidence is
at least τ, learn nothing. τ = 0 is "surface everything the predictor flags".

The engineers' clicks on what is surfaced are the same pre-drawn answers the loop conditions see, so the observed
L_align of a static rule is comparable with NPO's.
"""

from __future__ import annotations

import math

import numpy as np

from npo.evaluate.engineers import Answers
from npo.evaluate.replay import ReplayTrace, Stream
from npo.feedback import FeedbackCodes


def static_trace(stream: Stream, answers: Answers, tau: float, codes: FeedbackCodes) -> ReplayTrace:
    """What the rule ``confidence ≥ tau`` surfaces, and the feedback codes it would receive."""
    surfaced = np.asarray(stream.confidence >= tau, dtype=bool)
    y = np.full(len(stream), math.nan)
    for i in np.flatnonzero(surfaced).tolist():
        y[i] = codes.code(answers.kind[i])
    return ReplayTrace(
        surfaced=surfaced,
        tau=np.full(len(stream), float(tau)),
        y=y,
        y_true=np.where(stream.real_fault, 0.0, 1.0),
        f_monitor=math.nan,
        monitor_triggers=0,
    )
