"""The loop's deciding half, ``ingest → score → guard → decide``: :func:`decide` for one prediction and
:func:`decide_batch` for many in one transaction, both over the store protocol (:mod:`npo.store_protocol`);
:func:`effective_misalignment` is the m(k) they score with. ``npo.loop`` re-exports them."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields

import numpy as np

from npo.bandit import choose_batch
from npo.loop_types import ConflictingPrediction, DecideResult, LoopConfig
from npo.misalignment import KeyAlignment, pooled
from npo.policy_eval import evaluate
from npo.policy_types import Policy, PolicyContext
from npo.retrain import LogisticModel
from npo.scoring import features, scenario_key, score
from npo.store_protocol import BatchLoopTransaction, LoopTransaction
from npo.types import Decision, Prediction, Verdict, _require_text, _require_time, trusted_decision


# -- the threshold's reason ---------------------------------------------------------------------------------
def shown_threshold(tau: float) -> str:
    """τ as a reason shows it: two decimals (the default arms 0.50 … 0.90), or every digit τ needs when two would
    show another number (an arm at 0.725 is "0.725", not "0.72")."""
    text = f"{tau:.2f}"
    return text if float(text) == tau else repr(float(tau))


def threshold_reason(r: float, tau: float, tau_text: str) -> str:
    """``R(s)=… < τ=…`` when r < τ, else ``R(s)=… ≥ τ=…``, with τ as ``tau_text`` shows it (:func:`shown_threshold`)
    and R with three decimals, or as many more as it takes for the shown numbers to agree with the comparison: R =
    0.6996 below τ = 0.7 reads "R(s)=0.6996 < τ=0.70", never "R(s)=0.700 < τ=0.70"."""
    below = r < tau
    shown_tau = float(tau_text)
    for digits in range(3, 18):
        shown = f"{r:.{digits}f}"
        if (float(shown) < shown_tau) == below:
            break
    else:
        shown = repr(float(r))
    return f"R(s)={shown} {'<' if below else '≥'} τ={tau_text}"


# -- one decision --------------------------------------------------------------------------------------------
def duplicate_audit(earlier: Decision, conflict: tuple[str, ...]) -> dict[str, object]:
    """The detail of a duplicate's audit line: the prediction it duplicates, and the fields in which it differs
    from that one's body when it came under the same id with another (a conflict)."""
    detail: dict[str, object] = {"first": earlier.prediction_id}
    if conflict:
        detail["differs"] = list(conflict)
    return detail


def conflict_of(prediction: Prediction, earlier: Decision, stored: Prediction | None) -> tuple[str, ...]:
    """The fields in which ``prediction`` differs from ``stored``, the prediction on record under its id, when
    ``earlier`` (its duplicate) is that prediction's own decision; empty for a duplicate by fingerprint or alias
    (another id: nothing to compare its body with) or an identical re-send."""
    if stored is None or earlier.prediction_id != prediction.id:
        return ()
    return prediction.differs_from(stored)


def effective_misalignment(
    key_state: KeyAlignment,
    prediction: Prediction,
    model: LogisticModel | None,
    config: LoopConfig,
    parent: KeyAlignment | None = None,
) -> float:
    """m used for scoring: m(k) — pooled with its ``parent``'s when ``config.pool_keys`` (and the parent's state is
    given) — shrunk toward the promoted feature model's P(override | φ(s)) for young keys."""
    m = key_state.m
    if parent is not None and config.pool_keys:
        m = pooled(m, key_state.weight_sum, parent.m, parent.weight_sum, config.pool_strength)
    if model is None or config.model_prior_strength <= 0:
        return m
    q = float(model.predict(features(prediction)[None, :])[0])
    c = config.model_prior_strength
    return (key_state.n * m + c * q) / (key_state.n + c)


def decide(
    tx: LoopTransaction,
    prediction: Prediction,
    *,
    config: LoopConfig,
    policy: Policy,
    rng: np.random.Generator,
    now: float,
    refuse_conflicts: bool = False,
) -> DecideResult:
    """Score, guard and decide one prediction; record the decision (and the audit line) in ``tx``. A prediction
    whose id was received before is a duplicate; with another body, ``refuse_conflicts`` raises
    :class:`ConflictingPrediction` (nothing written), else it is a duplicate whose ``conflict`` names the fields."""
    earlier = tx.find_duplicate(prediction, config.dedupe_window_s)
    if earlier is not None:
        stored = tx.get_prediction(prediction.id) if earlier.prediction_id == prediction.id else None
        conflict = conflict_of(prediction, earlier, stored)
        if conflict and refuse_conflicts:
            raise ConflictingPrediction(prediction.id, conflict)
        tx.audit("duplicate_prediction", prediction.id, duplicate_audit(earlier, conflict), now)
        return DecideResult(earlier, duplicate=True, conflict=conflict)
    channel = prediction.channel or config.default_channel
    key = scenario_key(prediction, config.key_spec)
    key_state = tx.get_key(key)
    parent = tx.get_key(config.key_spec.parent(key)) if config.pool_keys else None
    m = min(1.0, max(0.0, effective_misalignment(key_state, prediction, tx.get_model(), config, parent)))
    r = score(prediction.confidence, m)
    verdict = evaluate(policy, prediction, key, channel, tx.policy_context(prediction, key, channel, now))
    arm: int | None = None
    tau: float | None = None
    if verdict.outcome == "block":
        outcome, rule, reason = Verdict.BLOCK, verdict.rule, verdict.reason
    else:
        bandit = tx.get_bandit()
        arm = bandit.choose(rng)
        tau = bandit.threshold(arm)
        if r < tau:
            outcome, rule, reason = Verdict.SUPPRESS, "threshold", threshold_reason(r, tau, shown_threshold(tau))
        elif verdict.outcome == "digest":
            outcome, rule, reason = Verdict.DIGEST, verdict.rule, verdict.reason
        else:
            outcome, rule = Verdict.SURFACE, verdict.rule
            reason = f"{threshold_reason(r, tau, shown_threshold(tau))}; {verdict.reason}"
    decision = Decision(
        prediction_id=prediction.id,
        key=key,
        verdict=outcome,
        rule=rule,
        reason=reason,
        confidence=prediction.confidence,
        misalignment=m,
        score=r,
        threshold=tau,
        arm=arm,
        decided_at=now,
    )
    tx.add_decision(prediction, decision, channel)  # with its audit line
    return DecideResult(decision, duplicate=False)


# -- batches of decisions ------------------------------------------------------------------------------------
class _OneByOne:
    """:func:`decide_batch` over the plain :class:`LoopTransaction`: every read goes to the transaction and every
    write is applied at once, so each prediction sees the earlier ones exactly as with :func:`decide`."""

    def __init__(self, tx: LoopTransaction, window_s: float, now: float) -> None:
        self._tx = tx
        self._window_s = window_s
        self._now = now

    def duplicate(self, prediction: Prediction) -> Decision | None:
        return self._tx.find_duplicate(prediction, self._window_s)

    def stored(self, prediction_id: str) -> Prediction | None:
        """The prediction on record (or decided earlier in the batch) under ``prediction_id``."""
        return self._tx.get_prediction(prediction_id)

    def key_state(self, key: str) -> KeyAlignment:
        return self._tx.get_key(key)

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext:
        return self._tx.policy_context(prediction, key, channel, self._now)

    def add(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        self._tx.add_decision(prediction, decision, channel)

    def audit(self, kind: str, subject: str, detail: dict[str, object], at: float) -> None:
        self._tx.audit(kind, subject, detail, at)

    def finish(self) -> None:
        pass


class _Bulk:
    """:func:`decide_batch` over a :class:`BatchLoopTransaction`: the store's state is read once before the batch,
    the batch's own decisions are tracked here (duplicates by id and fingerprint) and in the store's
    :class:`~npo.store_protocol.BatchContexts` (policy), and the writes go to the store in one call per table at
    the end."""

    def __init__(
        self,
        tx: BatchLoopTransaction,
        predictions: Sequence[Prediction],
        keys: Sequence[str],
        channels: Sequence[str],
        window_s: float,
        now: float,
        parents: Sequence[str] = (),
    ) -> None:
        self._tx = tx
        self._window_s = window_s
        self._stored, self._stored_fingerprints = tx.lookup_predictions(predictions)
        # the bodies on record of the batch's ids that have their own (compared with a body sent again: a conflict)
        own = [p.id for p in predictions if (d := self._stored.get(p.id)) is not None and d.prediction_id == p.id]
        self._stored_predictions = tx.get_predictions(own) if own else {}
        self._added_predictions: dict[str, Prediction] = {}
        self._keys = dict(tx.get_keys([*keys, *dict.fromkeys(parents)] if parents else keys))
        self._fingerprint = ""  # of the prediction duplicate() last looked at (add() follows for the same one)
        self._contexts = tx.policy_contexts(predictions, keys, channels, now)
        self._decided = self._contexts.decided
        self._added: dict[str, Decision] = {}
        self._fingerprints: dict[str, tuple[str, float]] = {}
        # The writes in order, as runs of decisions and runs of other audit lines (duplicates), so the store can
        # keep the order of decide() in its log with one bulk call per run (usually one or two runs).
        self._runs: list[
            tuple[list[tuple[Prediction, Decision, str]], list[tuple[str, str, Mapping[str, object], float]]]
        ] = [([], [])]
        # decisions of the current run; None after an audit line (the next decision starts a new run)
        self._run: list[tuple[Prediction, Decision, str]] | None = self._runs[0][0]

    def duplicate(self, prediction: Prediction) -> Decision | None:
        # The rules of find_duplicate over "stored, then this batch's earlier decisions": the id first, then the
        # latest prediction with the same fingerprint (one of this batch, when there is one) within the window.
        pid = prediction.id
        earlier = self._added.get(pid) or self._stored.get(pid)
        if earlier is not None:
            return earlier
        fingerprint = self._fingerprint = prediction.fingerprint()
        seen = self._fingerprints.get(fingerprint) or self._stored_fingerprints.get(fingerprint)
        if seen is None or prediction.received_at - seen[1] >= self._window_s:
            return None
        return self._added.get(seen[0]) or self._stored.get(seen[0]) or self._tx.get_decision(seen[0])

    def stored(self, prediction_id: str) -> Prediction | None:
        """The prediction on record (or decided earlier in the batch) under ``prediction_id``."""
        return self._added_predictions.get(prediction_id) or self._stored_predictions.get(prediction_id)

    def key_state(self, key: str) -> KeyAlignment:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyAlignment(key=key)  # frozen: shared by the batch's predictions of key
        return state

    def context(self, prediction: Prediction, key: str, channel: str) -> PolicyContext:
        return self._contexts.context(prediction, key, channel)

    def add(self, prediction: Prediction, decision: Decision, channel: str) -> None:
        pid = prediction.id
        self._added[pid] = decision
        self._added_predictions[pid] = prediction
        self._fingerprints[self._fingerprint] = (pid, prediction.received_at)
        self._decided(prediction, decision, channel)
        run = self._run
        if run is None:
            run = self._run = []
            self._runs.append((run, []))
        run.append((prediction, decision, channel))

    def audit(self, kind: str, subject: str, detail: dict[str, object], at: float) -> None:
        self._runs[-1][1].append((kind, subject, detail, at))
        self._run = None

    def finish(self) -> None:
        for decided, audit in self._runs:
            self._tx.add_decisions(decided)
            self._tx.audit_many(audit)


_SET_RESULT_DECISION, _SET_RESULT_DUPLICATE, _SET_RESULT_CONFLICT = (
    getattr(DecideResult, f.name).__set__ for f in fields(DecideResult)
)
_new_result = functools.partial(object.__new__, DecideResult)


def _decision(
    prediction: Prediction,
    key: str,
    verdict: Verdict,
    rule: str,
    reason: str,
    m: float,
    r: float,
    tau: float | None,
    arm: int | None,
    now: float,
) -> Decision:
    """A :class:`Decision` from values valid by construction (a checked prediction, m and R clipped to [0, 1], τ and
    the arm from the bandit's validated grid, ``now`` checked once per batch) without re-running every check. The
    two fields the construction does not guarantee (``key``, ``rule``) must have been checked by the caller as
    :class:`Decision` checks them (:func:`decide_batch` checks each distinct value once per batch)."""
    return trusted_decision(prediction.id, key, verdict, rule, reason, prediction.confidence, m, r, tau, arm, now)


def decide_batch(
    tx: LoopTransaction,
    predictions: Iterable[Prediction],
    *,
    config: LoopConfig,
    policy: Policy,
    rng: np.random.Generator,
    now: float,
    refuse_conflicts: bool = False,
) -> list[DecideResult]:
    """:func:`decide` for each prediction, in order, in one transaction: the same duplicates (by id and by
    fingerprint, within the batch and against the store), the same policy verdicts (a prediction sees the blast
    radius and channel cap left by the batch's earlier decisions), the same scores and keys, the same audit lines.

    The bandit's τ draws are made for the whole batch at once with :func:`npo.bandit.choose_batch` (the bandit does
    not change while deciding), so the random stream, and with it which τ a given prediction draws, differs from
    calling :func:`decide` in a loop; the rules applied to the draws are the same.

    A transaction implementing :class:`BatchLoopTransaction` is read once and written once per table; any other
    :class:`LoopTransaction` is driven one prediction at a time. An exception leaves the batch to the
    transaction's rollback (nothing of the batch is kept): with ``refuse_conflicts``, a prediction sent again under
    an id already taken (stored, or earlier in the batch) with another body raises :class:`ConflictingPrediction`
    naming its place in the batch.
    """
    batch = list(predictions)
    if not batch:
        return []
    now = _checked_now(now)
    spec = config.key_spec
    keys = [scenario_key(p, spec) for p in batch]
    channels = [p.channel or config.default_channel for p in batch]
    pool = config.pool_keys
    parents = [spec.parent(k) for k in keys] if pool else []
    world: _OneByOne | _Bulk
    if isinstance(tx, BatchLoopTransaction):
        world = _Bulk(tx, batch, keys, channels, config.dedupe_window_s, now, parents)
    else:
        world = _OneByOne(tx, config.dedupe_window_s, now)
    model = tx.get_model()
    arms: list[int] | None = None
    tau_text: list[str] = []
    thresholds = config.bandit.thresholds
    results: list[DecideResult] = []
    checked: set[str] = set()  # keys and rules that passed Decision's text check in this batch
    checked_rules: set[str] = set()
    duplicate, key_state_of, context_of, add = world.duplicate, world.key_state, world.context, world.add
    append = results.append
    for i, prediction in enumerate(batch):
        earlier = duplicate(prediction)
        if earlier is not None:
            own = earlier.prediction_id == prediction.id
            conflict = conflict_of(prediction, earlier, world.stored(prediction.id) if own else None)
            if conflict and refuse_conflicts:
                raise ConflictingPrediction(prediction.id, conflict, i)
            world.audit("duplicate_prediction", prediction.id, duplicate_audit(earlier, conflict), now)
            append(DecideResult(earlier, duplicate=True, conflict=conflict))
            continue
        key, channel = keys[i], channels[i]
        key_state = key_state_of(key)
        if pool:
            parent = key_state_of(parents[i])
            m = float(min(1.0, max(0.0, effective_misalignment(key_state, prediction, model, config, parent))))
        elif model is None:
            m = key_state.m  # usually a float in (0, 1] already: then the clip below would return it unchanged
            if type(m) is not float or not 0.0 < m <= 1.0:
                m = float(min(1.0, max(0.0, m)))
        else:
            m = float(min(1.0, max(0.0, effective_misalignment(key_state, prediction, model, config))))
        r = score(prediction.confidence, m)
        verdict = evaluate(policy, prediction, key, channel, context_of(prediction, key, channel))
        arm: int | None = None
        tau: float | None = None
        if verdict.outcome == "block":
            outcome, rule, reason = Verdict.BLOCK, verdict.rule, verdict.reason
        else:
            if arms is None:
                bandit = tx.get_bandit()
                thresholds = bandit.config.thresholds
                shape = (len(batch), bandit.config.n_arms)
                alpha = np.broadcast_to(np.asarray(bandit.alpha, dtype=np.float64), shape)
                beta = np.broadcast_to(np.asarray(bandit.beta, dtype=np.float64), shape)
                arms = choose_batch(alpha, beta, rng).tolist()
                tau_text = [shown_threshold(t) for t in thresholds]  # τ as the reason prints it, once per arm
            arm = arms[i]
            tau = thresholds[arm]
            if r < tau:
                outcome, rule, reason = Verdict.SUPPRESS, "threshold", threshold_reason(r, tau, tau_text[arm])
            elif verdict.outcome == "digest":
                outcome, rule, reason = Verdict.DIGEST, verdict.rule, verdict.reason
            else:
                outcome, rule = Verdict.SURFACE, verdict.rule
                reason = f"{threshold_reason(r, tau, tau_text[arm])}; {verdict.reason}"
        if key not in checked:
            _require_text("key", key)
            checked.add(key)
        if rule not in checked_rules:
            _require_text("rule", rule)
            checked_rules.add(rule)
        decision = _decision(prediction, key, outcome, rule, reason, m, r, tau, arm, now)
        add(prediction, decision, channel)  # with its audit line
        result: DecideResult = _new_result()
        _SET_RESULT_DECISION(result, decision)
        _SET_RESULT_DUPLICATE(result, False)
        _SET_RESULT_CONFLICT(result, ())
        append(result)
    world.finish()
    return results


def _checked_now(now: float) -> float:
    """``now`` as :class:`Decision` stores ``decided_at`` (a finite float), checked once for a whole batch."""
    return _require_time("decided_at", now)
