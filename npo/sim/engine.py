"""One experimental condition run over a :class:`~npo.sim.world.World`, all seeds at once.

The engine applies the same pure update rules the production loop uses (``npo.misalignment.update_batch``,
``npo.bandit.choose_batch``/``update_batch``, ``npo.trust``, ``npo.monitor``), vectorised over seeds. Per
episode: one prediction arrives, is scored R = p·(1 − m(k)), compared with τ (drawn by the bandit, or fixed),
surfaced or suppressed; a surfaced one gets an engineer's answer at once, and every prediction's outcome (real
fault or not) becomes known ``outcome_delay`` episodes later.

The meta-monitor checks every ``monitor_every`` episodes with the bot's rules (``bot.jobs.monitor``): an alarm of
the Page–Hinkley detector at any episode since the last check counts, and a drift alarm the cooldown holds back is
remembered (:class:`npo.monitor.HeldAlarm`, here one per seed as arrays) — the level of y before the change, and
the count and sum of the codes since the detector was last in alarm; it counts at a check while
:func:`npo.monitor.held_alarm_persists_batch` says it still stands, and is forgotten when a check triggers, or finds
no cause to trigger.
An approval is immediate (there is no open proposal), so only the cooldown holds alarms back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from npo.bandit import BanditConfig, choose_batch, new_batch, observe_batch, observe_suppressed_batch
from npo.feedback import validate_skip_lambda
from npo.misalignment import EtaSchedule, pooled_array
from npo.misalignment import update_batch as update_m
from npo.monitor import LOSS_TOLERANCE, PageHinkleyConfig, held_alarm_persists_batch, page_hinkley_step
from npo.sim.world import World
from npo.trust import TrustConfig, outcome_agreement, peer_agreement, trust_weight_array
from npo.types import InvalidRecord

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Condition:
    """One arm of the experiment: which parts of NPO are switched on, and how they are tuned."""

    name: str
    fixed_threshold: float | None = None
    eta: EtaSchedule = field(default_factory=EtaSchedule)
    bandit: BanditConfig = field(default_factory=BanditConfig)
    miss_term: bool = True
    skips_count: bool = True
    monitor: bool = True
    trust: bool = True
    skip_lambda: float = 0.3
    suppressed_outcome_weight: float = 0.5
    monitor_every: int = 50  # episodes between meta-monitor checks ("hourly")
    monitor_window: int = 50  # most recent surfaced recommendations in the L_align window the monitor reads
    monitor_threshold: float = 0.3  # L_align above this (beyond rounding: LOSS_TOLERANCE) triggers, with enough samples
    monitor_min_samples: int = 30
    monitor_cooldown: int = 200  # episodes after a trigger before the next one
    # Scaled to the short simulated horizon (production default: threshold 15 over longer streams).
    page_hinkley: PageHinkleyConfig = field(default_factory=lambda: PageHinkleyConfig(threshold=8.0))
    peer_min_updates: int = 5  # updates (not effective samples) a key needs before its m is a peer consensus
    pool_keys: bool = False  # partial pooling of m(k) with its family's (LoopConfig.pool_keys)
    pool_strength: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip_lambda", validate_skip_lambda(self.skip_lambda))
        if self.fixed_threshold is not None and not 0.0 <= self.fixed_threshold <= 1.0:
            raise InvalidRecord("fixed_threshold", f"must be in [0, 1], got {self.fixed_threshold}")
        if self.monitor_every <= 0 or self.monitor_window <= 0:
            raise InvalidRecord("monitor_every", "monitor cadence and window must be positive")
        if not self.pool_strength > 0:
            raise InvalidRecord("pool_strength", f"must be positive, got {self.pool_strength}")


@dataclass(frozen=True, slots=True)
class Trace:
    """What happened in every episode of every seed, shape (S, T) unless noted."""

    condition: Condition
    surfaced: BoolArray
    y: FloatArray  # observed feedback code (NaN when not surfaced)
    truthful_y: FloatArray  # what a truthful engineer would have answered (NaN when not surfaced)
    threshold: FloatArray  # τ in force
    reward: FloatArray  # per-episode reward (see metrics)
    real_fault: BoolArray
    triggers: BoolArray  # (S, C) monitor triggered at check c
    ideal: BoolArray  # (S, C) the ideal supervisory response G_t at check c
    check_episodes: npt.NDArray[np.int64]  # (C,)
    trust_weights: FloatArray  # (S, O) final trust weight per operator (ones without trust)
    misalignment: FloatArray  # (S, K) final m(k)
    bandit_alpha: FloatArray  # (S, arms) final Beta posterior of every threshold arm
    bandit_beta: FloatArray


def run(world: World, condition: Condition, *, seed: int = 1) -> Trace:
    """Run ``condition`` on ``world``; ``seed`` drives only the bandit's Thompson draws."""
    cfg = world.config
    rng = np.random.default_rng(seed)
    s, t_max, k = world.seeds, cfg.episodes, cfg.n_keys
    rows = np.arange(s)
    thresholds = np.asarray(condition.bandit.thresholds)
    bandit_cfg = condition.bandit
    if not condition.miss_term:
        bandit_cfg = replace(bandit_cfg, miss_weight=0.0, quiet_weight=0.0)
    trust_cfg = TrustConfig()
    ph_cfg = condition.page_hinkley
    lam = condition.skip_lambda

    m = np.zeros((s, k))
    n = np.zeros((s, k))  # effective sample size (the sum of trust weights): drives the decaying η
    updates = np.zeros((s, k), dtype=np.int64)  # KeyAlignment.n: what the peer check reads; kept by a retraining
    pool = condition.pool_keys
    family = world.family
    m_par = np.zeros((s, cfg.n_families))  # the parent keys' m and effective sample size (used when pooling)
    n_par = np.zeros((s, cfg.n_families))
    alpha, beta = new_batch((s,), bandit_cfg)
    agree = np.full((s, cfg.n_operators), trust_cfg.prior_agree)
    disagree = np.full((s, cfg.n_operators), trust_cfg.prior_disagree)
    ph_n: npt.NDArray[np.int64] | FloatArray = np.zeros(s, dtype=np.int64)
    ph_mean = np.zeros(s)
    ph_cum = np.zeros(s)
    ph_min = np.zeros(s)
    alarm_seen = np.zeros(s, dtype=bool)  # the detector was in alarm at an episode since the last check
    # The held-back alarm (npo.monitor.HeldAlarm, one per seed): ph_base is the detector's running mean at its last
    # new minimum of C (npo.monitor.page_hinkley_baseline), alarm_base its value when the detector was last in alarm
    # (the level of y before the change); after_n / after_sum count the codes since then.
    ph_base = np.zeros(s)
    alarm_base = np.zeros(s)
    after_n = np.zeros(s, dtype=np.int64)
    after_sum = np.zeros(s)
    held = np.zeros(s, dtype=bool)
    held_base = np.zeros(s)
    ring = np.zeros((s, condition.monitor_window))  # last surfaced feedback codes, per seed
    ring_count = np.zeros(s, dtype=np.int64)

    surfaced = np.zeros((s, t_max), dtype=bool)
    y_obs = np.full((s, t_max), np.nan)
    y_true = np.full((s, t_max), np.nan)
    tau_trace = np.zeros((s, t_max))
    reward = np.zeros((s, t_max))
    arms = np.zeros((s, t_max), dtype=np.int64)
    scores = np.zeros((s, t_max))

    checks = np.arange(condition.monitor_every, t_max + 1, condition.monitor_every) - 1
    triggers = np.zeros((s, checks.size), dtype=bool)
    ideal = np.zeros((s, checks.size), dtype=bool)
    last_trigger = np.full(s, -(10**9))
    drift_ep = cfg.drift_episode
    handled = np.zeros(s, dtype=bool)
    check_i = 0

    truthful_all = np.where(world.real_fault, 0.0, 1.0)
    adversary = world.adversarial_ops[rows[:, None], world.operator]
    if cfg.adversary == "invert":
        inverted = world.flip ^ adversary
        answer_all = np.where(inverted, 1.0 - truthful_all, truthful_all)
        y_all = np.where(world.skipped, lam, np.where(world.neutral, 0.5, answer_all))
    else:  # one-sided: the adversary's every answer (neutral ones included) is the same
        answer_all = np.where(world.flip, 1.0 - truthful_all, truthful_all)
        one_side = 1.0 if cfg.adversary == "override_all" else 0.0
        y_all = np.where(world.skipped, lam, np.where(adversary, one_side, np.where(world.neutral, 0.5, answer_all)))
    fixed_arm = None
    if condition.fixed_threshold is not None:
        fixed_arm = np.full(s, int(np.argmin(np.abs(thresholds - condition.fixed_threshold))), dtype=np.int64)

    for t in range(t_max):
        key = world.key[:, t]
        mk = m[rows, key]
        fam = family[key]
        m_score = (
            pooled_array(mk, n[rows, key], m_par[rows, fam], n_par[rows, fam], condition.pool_strength) if pool else mk
        )
        r = world.confidence[:, t] * (1.0 - m_score)
        if condition.fixed_threshold is not None:
            arm = fixed_arm
            assert arm is not None
            tau = np.full(s, condition.fixed_threshold)
        else:
            arm = choose_batch(alpha, beta, rng)
            tau = thresholds[arm]
        surf = r >= tau
        y = y_all[:, t]
        skip = world.skipped[:, t]
        op = world.operator[:, t]
        learn = surf & (~skip | condition.skips_count)
        w = np.ones(s)
        if condition.trust:
            human = surf & ~skip
            w = np.where(skip, 1.0, trust_weight_array(agree[rows, op], disagree[rows, op], trust_cfg))
            peer = human & (updates[rows, key] >= condition.peer_min_updates)
            a_peer = peer_agreement(y, mk)
            agree[rows, op] += np.where(peer, trust_cfg.peer_weight * a_peer, 0.0)
            disagree[rows, op] += np.where(peer, trust_cfg.peer_weight * (1.0 - a_peer), 0.0)
        new_m, new_n = update_m(mk, n[rows, key], y, learn, condition.eta, weight=w)
        m[rows, key] = new_m
        n[rows, key] = new_n
        updates[rows, key] += learn & (w > 0.0)  # an answer of weight 0 is no update (npo.learning)
        if pool:
            m_par[rows, fam], n_par[rows, fam] = update_m(
                m_par[rows, fam], n_par[rows, fam], y, learn, condition.eta, weight=w
            )
        if condition.fixed_threshold is None:
            alpha, beta = observe_batch(alpha, beta, arm, r, 1.0 - y, np.where(learn, w, 0.0), bandit_cfg)

        surfaced[:, t] = surf
        y_obs[:, t] = np.where(surf, y, np.nan)
        y_true[:, t] = np.where(surf, truthful_all[:, t], np.nan)
        tau_trace[:, t] = tau
        arms[:, t] = arm
        scores[:, t] = r
        reward[:, t] = np.where(surf, 1.0 - y, np.where(world.real_fault[:, t], 0.0, 1.0))

        ring[rows[surf], ring_count[surf] % condition.monitor_window] = y[surf]
        ring_count += surf
        if condition.monitor:
            ph_n, ph_mean, ph_cum, ph_min, alarm = page_hinkley_step(
                ph_n, ph_mean, ph_cum, ph_min, y, ph_cfg, mask=surf
            )
            alarm_seen |= alarm
            ph_base = np.where(surf & (ph_cum <= ph_min), ph_mean, ph_base)
            alarm_base = np.where(alarm, ph_base, alarm_base)
            after_n = np.where(alarm, 0, after_n + surf)  # npo.monitor.held_alarm_observe
            after_sum = np.where(alarm, 0.0, after_sum + np.where(surf, y, 0.0))

        j = t - cfg.outcome_delay
        if j >= 0:
            real = world.real_fault[:, j]
            kj = world.key[:, j]
            suppressed = ~surfaced[:, j]
            if condition.fixed_threshold is None:
                # Without the miss term (weights 0) only full information still learns here: what the arms that
                # would have surfaced the prediction would have earned.
                alpha, beta = observe_suppressed_batch(
                    alpha, beta, arms[:, j], scores[:, j], real, suppressed, bandit_cfg
                )
            if condition.suppressed_outcome_weight > 0:
                new_m, new_n = update_m(
                    m[rows, kj],
                    n[rows, kj],
                    truthful_all[:, j],
                    suppressed,
                    condition.eta,
                    weight=condition.suppressed_outcome_weight,
                )
                m[rows, kj] = new_m
                n[rows, kj] = new_n
                updates[rows, kj] += suppressed
                if pool:
                    fj = family[kj]
                    m_par[rows, fj], n_par[rows, fj] = update_m(
                        m_par[rows, fj],
                        n_par[rows, fj],
                        truthful_all[:, j],
                        suppressed,
                        condition.eta,
                        weight=condition.suppressed_outcome_weight,
                    )
            if condition.trust:
                answered = surfaced[:, j] & ~world.skipped[:, j]
                opj = world.operator[:, j]
                a = outcome_agreement(y_all[:, j], world.real_fault[:, j])
                agree[rows, opj] += np.where(answered, a, 0.0)
                disagree[rows, opj] += np.where(answered, 1.0 - a, 0.0)

        if check_i < checks.size and t == checks[check_i]:
            count = np.minimum(ring_count, condition.monitor_window)
            loss = ring.sum(axis=1) / np.maximum(count, 1)
            g = np.zeros(s, dtype=bool) if drift_ep is None or t < drift_ep else ~handled
            if condition.monitor:
                persists = held & held_alarm_persists_batch(after_n, after_sum, held_base, ph_cfg)
                # "Above θ" as the bot reads it: by more than rounding (a window of skips, each λ = 0.3 = θ, averages
                # to 0.30000000000000004).
                above = loss > condition.monitor_threshold + LOSS_TOLERANCE
                want = (above & (count >= condition.monitor_min_samples)) | alarm_seen | persists
                trig = want & (t - last_trigger >= condition.monitor_cooldown)
                # Held back by the cooldown: a drift alarm (new, or still held) is kept, with the level before the
                # change the first check that held it back saw; a trigger, or no cause at all, forgets it.
                held_base = np.where(held, held_base, alarm_base)
                held = want & ~trig & (held | alarm_seen)
                last_trigger = np.where(trig, t, last_trigger)
                approve = trig & g  # engineers approve a retraining only when the world really changed
                if approve.any():
                    n[approve] = 0.0  # retraining: the decaying step size restarts for every key
                    n_par[approve] = 0.0  # parents are key rows too
                    prior_alpha, prior_beta = bandit_cfg.arm_prior  # the bandit back to its prior, every arm
                    alpha[approve] = prior_alpha
                    beta[approve] = prior_beta
                    handled |= approve
                for arr in (ph_n, ph_mean, ph_cum, ph_min, ph_base, after_n, after_sum):
                    arr[trig] = 0
                alarm_seen[:] = False
                triggers[:, check_i] = trig
            ideal[:, check_i] = g
            check_i += 1

    weights = trust_weight_array(agree, disagree, trust_cfg) if condition.trust else np.ones_like(agree)
    return Trace(
        condition,
        surfaced,
        y_obs,
        y_true,
        tau_trace,
        reward,
        world.real_fault.copy(),
        triggers,
        ideal,
        checks,
        weights,
        m,
        alpha,
        beta,
    )
