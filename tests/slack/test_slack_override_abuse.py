"""A responder who clicks Override on everything, through the real path (ingest over HTTP, recommendations posted
to the stand-in, signed clicks and override modals, outcomes over HTTP), against the same sequence without them.

The sequence: 40 predictions, four in five from a kind that is usually a real fault (90 %), one in five from a
noisy kind (10 %). Two honest engineers take turns answering what is surfaced (Like a real fault, Override a
false alarm, through the modal with a reason); each outcome is reported three predictions later. The abuser
overrides every surfaced recommendation, sometimes before and sometimes after the honest answer. The click limit
is off here, so only the trust weights bound the abuser (the limit has its own tests)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from abuse_testing import running_bot, write_policy
from slack_testing import ALICE, BOB, MALLORY, SECRET, BotUnderTest, make_settings, prediction, wait_for

from bot.standin import StandIn
from npo.trust import TrustConfig, trust_weight

N = 40
LAG = 3  # an outcome arrives this many predictions after its own
REAL_KEY = "disk_failure|investigate|r#-n#|p>=0.9"


@dataclass(frozen=True, slots=True)
class Step:
    pid: str
    fault_type: str
    real: bool


@dataclass
class Run:
    m: list[float] = field(default_factory=list)  # m(k) of the real-fault kind after each prediction
    abuser_weight: list[float | None] = field(default_factory=list)
    surfaced: int = 0
    audited_weights: list[tuple[str, float]] = field(default_factory=list)  # (operator, weight): the audit log
    final_weights: dict[str, float] = field(default_factory=dict)  # everyone's trust weight at the end


def sequence(prefix: str) -> list[Step]:
    world = np.random.default_rng(7)
    steps = []
    for i in range(N):
        usually_real = i % 5 != 4
        real = bool(world.random() < (0.9 if usually_real else 0.1))
        steps.append(Step(f"{prefix}{i}", "disk_failure" if usually_real else "temp_spike", real))
    return steps


def override(bot: BotUnderTest, user: str, message: tuple[str, str]) -> None:
    opened = len(bot.standin.views())
    assert bot.click(user, "npo_override", message).status_code == 200
    view = wait_for(lambda: len(views := bot.standin.views()) > opened and views[-1])
    values = {"reason": {"reason": "false_positive"}}
    response = bot.standin.submit_view(bot.events_url, SECRET, user_id=user, view_id=view["id"], values=values)
    assert response.status_code == 200 and (not response.content or "errors" not in response.json())


def play(bot: BotUnderTest, steps: list[Step], *, abuser: bool, lag: int | None) -> Run:
    run = Run()
    config = TrustConfig()
    for i, step in enumerate(steps):
        target = f"r12-n{i}"
        body = prediction(step.pid, fault_type=step.fault_type, target=target, confidence=0.95)
        decided = bot.ingest(body)
        assert decided.status_code == 200, decided.text
        if decided.json()["verdict"] == "surface":
            run.surfaced += 1
            message = bot.posted(step.pid)
            honest = ALICE if i % 2 else BOB
            answers = [honest, MALLORY] if i % 2 == 0 else [MALLORY, honest]
            for user in answers if abuser else [honest]:
                if user == MALLORY or not step.real:
                    override(bot, user, message)
                else:
                    assert bot.click(user, "npo_like", message).status_code == 200
        if lag is not None and i >= lag:
            earlier = steps[i - lag]
            outcome = {"prediction_id": earlier.pid, "real_fault": earlier.real, "source": "test"}
            assert bot.ingest(outcome, path="/api/v1/outcomes").status_code == 200
        keys = bot.bot.store.keys()
        run.m.append(keys[REAL_KEY].m if REAL_KEY in keys else 0.0)
        trust = bot.bot.store.trust().get(MALLORY)
        run.abuser_weight.append(None if trust is None else trust_weight(trust, config))
    conn = sqlite3.connect(bot.bot.settings.db_path)  # what `npo-bot db export --what audit` shows
    try:
        lines = conn.execute("SELECT detail FROM audit_log WHERE kind = 'feedback' ORDER BY id").fetchall()
    finally:
        conn.close()
    run.audited_weights = [(d["operator"], d["weight"]) for d in (json.loads(line[0]) for line in lines)]
    run.final_weights = {op: trust_weight(t, config) for op, t in bot.bot.store.trust().items()}
    return run


def both_runs(tmp_path: Path, standin: StandIn, lag: int | None) -> tuple[Run, Run]:
    """The sequence with the abuser and without, each on a bot and database of its own."""
    for user in (ALICE, BOB, MALLORY):
        standin.add_user(user)
    policy = write_policy(tmp_path)
    out: list[Run] = []
    for name, abuser in (("abuser", True), ("honest", False)):
        directory = tmp_path / name
        directory.mkdir()
        settings = make_settings(
            directory, standin, responders=(ALICE, BOB, MALLORY), policy_file=policy, feedback_rate_per_min=0.0
        )
        with running_bot(settings, standin) as bot:
            out.append(play(bot, sequence(name[0]), abuser=abuser, lag=lag))
    return out[0], out[1]


def test_an_override_everything_responder_is_distrusted_and_moves_m_k_little(tmp_path: Path, standin: StandIn) -> None:
    with_abuser, without = both_runs(tmp_path, standin, LAG)
    assert with_abuser.surfaced >= 25 and without.surfaced >= 25  # a realistic share reached the channel
    # The abuser starts as trusted as any newcomer (≈ 0.86) and is at the floor within the first ten predictions:
    # the outcomes that arrive contradict them, and peers on the liked kind disagree with them.
    weights = with_abuser.abuser_weight
    first_zero = next(i for i, w in enumerate(weights) if w == 0.0)
    assert weights[0] == pytest.approx(TrustConfig().prior_weight) and first_zero <= 12
    assert all(w == 0.0 for w in weights[first_zero:])  # and stays there
    # From then on their overrides carry weight 0 in the audit log: they move nothing.
    abuser_weights = [w for op, w in with_abuser.audited_weights if op == MALLORY]
    assert abuser_weights[0] > 0.8 and abuser_weights[-10:] == [0.0] * 10
    # The honest engineers keep their full weight (the abuser cannot drag them down through peer comparisons).
    assert with_abuser.final_weights[ALICE] == 1.0 and with_abuser.final_weights[BOB] == 1.0
    # m(k) of the usually-real kind: the abuser's early weight moves it for a while; by the end the difference is
    # small, and at no point is it near what an equally trusted abuser would cause (m ≈ ½: one like, one override).
    gap = np.abs(np.array(with_abuser.m) - np.array(without.m))
    assert without.m[-1] < 0.2
    assert gap[-1] <= 0.05, (with_abuser.m, without.m)
    assert gap.max() <= 0.35, (with_abuser.m, without.m)
    assert float(np.mean(gap[N // 2 :])) <= 0.1
    print(
        f"m(k) of {REAL_KEY}: with the abuser {with_abuser.m[-1]:.3f}, without {without.m[-1]:.3f}; "
        f"largest gap {gap.max():.3f} after prediction {int(gap.argmax())}, mean gap over the second half "
        f"{float(np.mean(gap[N // 2 :])):.3f}; abuser's weight 0 from prediction {first_zero}; "
        f"surfaced {with_abuser.surfaced} / {without.surfaced} of {N}"
    )


def test_before_any_outcome_peers_catch_the_abuser_but_m_k_recovers_slowly(tmp_path: Path, standin: StandIn) -> None:
    """The same sequence with no outcome reported. Peers catch the abuser: on the usually-real kind the honest likes
    keep the consensus below ½, so every override there counts as a peer disagreement (half an outcome's worth)
    and their weight reaches 0 after about a dozen. What they moved before that stays in m(k), and with the step
    size already decayed the honest answers pull it back slowly: the gap is larger than with outcomes."""
    with_abuser, without = both_runs(tmp_path, standin, None)
    weights = with_abuser.abuser_weight
    first_zero = next(i for i, w in enumerate(weights) if w == 0.0)
    assert 5 < first_zero <= 20 and all(w == 0.0 for w in weights[first_zero:])
    gap = np.abs(np.array(with_abuser.m) - np.array(without.m))
    assert gap[-1] <= 0.15 and gap.max() <= 0.45
    assert gap[-1] < gap.max() / 2  # falling once the abuser no longer counts
    print(
        f"no outcomes: m(k) with the abuser {with_abuser.m[-1]:.3f}, without {without.m[-1]:.3f}; largest gap "
        f"{gap.max():.3f}; abuser's weight 0 from prediction {first_zero}"
    )
