"""The demo's fault streams: what the predictors say, what really happens, and what the engineer will answer.

:class:`BuiltinStream` draws from the simulated data center of :mod:`npo.sim.world` (the world behind
``npo-bot simulate``): each of its scenario keys becomes a named kind of recommendation — a few reliable ones
(a fault follows most of the time) and many noisy ones — with the predictor's over-confident score, the true
outcome and the engineer's answer (truthful, flipped with probability ε, sometimes neutral or skipped).
:class:`ReplayStream` reads predictions from a JSONL or CSV file (the format of ``npo-bot replay``); a
``real_fault`` field, when present, is the outcome and lets ``--auto`` engineers answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bot.ingest.records import prediction_from_json
from bot.ingest.replay import read_records
from npo.scoring import CONFIDENCE_BANDS
from npo.sim.world import WorldConfig, make_world
from npo.types import InvalidRecord

__all__ = ["ENGINEERS", "BuiltinStream", "Noise", "ReplayStream", "StreamItem", "answer_for"]

Answer = Literal["like", "override", "neutral", "skip"]

# (user id, name) of the simulated on-call engineers; the first is also the page's default user in auto mode.
ENGINEERS: tuple[tuple[str, str], ...] = (
    ("U0ALICE", "alice"),
    ("U0BORIS", "boris"),
    ("U0CHIDI", "chidi"),
    ("U0DANA", "dana"),
    ("U0EMEKA", "emeka"),
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named kind of recommendation: fault type, action, target pattern (``{a}``/``{b}`` are numbers)."""

    fault_type: str
    action: str
    target: str
    severity: str
    time_to_fault_s: float
    reliable: bool  # named for a predictor that is usually right; matched to the world's high-rate keys


CATALOGUE: tuple[Scenario, ...] = (
    Scenario("disk_failure", "drain", "r{a}-n{b}", "critical", 6 * 3600, True),
    Scenario("psu_failure", "failover", "pdu{a}-{b}", "critical", 2 * 3600, True),
    Scenario("memory_ecc", "migrate_vms", "r{a}-n{b}", "warning", 24 * 3600, True),
    Scenario("fan_degraded", "investigate", "r{a}-n{b}", "warning", 48 * 3600, False),
    Scenario("nic_flapping", "reboot", "sw{a}-p{b}", "warning", 3600, False),
    Scenario("thermal_spike", "investigate", "r{a}-n{b}", "info", 4 * 3600, False),
    Scenario("disk_latency", "replace_disk", "r{a}-n{b}", "warning", 12 * 3600, False),
    Scenario("raid_degraded", "investigate", "stor{a}-d{b}", "warning", 24 * 3600, False),
    Scenario("bmc_unresponsive", "power_cycle", "r{a}-n{b}", "info", 8 * 3600, False),
    Scenario("link_errors", "investigate", "sw{a}-p{b}", "info", 6 * 3600, False),
)


@dataclass(frozen=True, slots=True)
class Noise:
    """How the simulated engineers deviate from the truth: ``epsilon`` flips an answer, ``neutral`` and
    ``skip`` are the shares of neutral answers and of recommendations nobody answers (each in [0, 1])."""

    epsilon: float = 0.1
    neutral: float = 0.03
    skip: float = 0.1

    def __post_init__(self) -> None:
        for name in ("epsilon", "neutral", "skip"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidRecord(name, f"must be in [0, 1], got {value}")
        if self.neutral + self.skip > 1.0:
            raise InvalidRecord("skip", "skip + neutral must be <= 1")


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One prediction for the ingest API (a JSON object), its true outcome (None: unknown), which engineer
    answers it (an index into :data:`ENGINEERS`) and what they will answer if it is surfaced."""

    prediction: Mapping[str, Any]
    real_fault: bool | None
    engineer: int
    answer: Answer | None

    @property
    def id(self) -> str:
        return str(self.prediction["id"])


def answer_for(real_fault: bool, *, flipped: bool, neutral: bool, skipped: bool) -> Answer:
    """The engineer's answer: nothing when skipped, neutral, else Like for a real fault and Override for a false
    alarm — the other way round when ``flipped`` (label noise)."""
    if skipped:
        return "skip"
    if neutral:
        return "neutral"
    return "like" if real_fault != flipped else "override"


class BuiltinStream:
    """An endless stream of predictions from the simulated data center (``seed`` makes it repeatable)."""

    def __init__(self, *, seed: int = 0, noise: Noise | None = None, run_tag: str = "demo", block: int = 5000) -> None:
        self.noise = noise or Noise()
        self.seed = seed
        self.run_tag = run_tag
        self.block = block
        self._count = 0

    def _config(self) -> WorldConfig:
        return WorldConfig(
            episodes=self.block,
            n_keys=len(CATALOGUE),
            good_share=0.3,
            confidence_noise=0.03,
            epsilon=self.noise.epsilon,
            skip=self.noise.skip,
            neutral=self.noise.neutral,
            n_operators=len(ENGINEERS),
            drift_at=None,
        )

    def __iter__(self) -> Iterator[StreamItem]:
        block_seed = self.seed
        while True:
            yield from self._block(block_seed)
            block_seed += 1

    def _block(self, seed: int) -> Iterator[StreamItem]:
        world = make_world(self._config(), seeds=1, seed=seed)
        rng = np.random.default_rng([seed, 7])
        # The world's keys by true fault rate, highest first, take the catalogue's reliable names first.
        rates = world.true_rate[0, 0]
        order = np.argsort(-rates, kind="stable")
        names = sorted(range(len(CATALOGUE)), key=lambda i: not CATALOGUE[i].reliable)
        scenario_of = {int(k): CATALOGUE[names[rank]] for rank, k in enumerate(order)}
        # Each kind keeps to one confidence band (edges 0.5 / 0.7 / 0.9, part of the scenario key), as a predictor
        # that reports one kind of fault with a steady confidence does; otherwise one kind splits into two keys.
        edges = np.array([0.0, *CONFIDENCE_BANDS, 1.0])
        bands = {}
        for k in range(len(CATALOGUE)):
            mean = float(world.confidence[0, world.key[0] == k].mean()) if (world.key[0] == k).any() else 0.8
            band = int(np.searchsorted(edges, mean, side="right")) - 1
            bands[k] = (float(edges[band]) + 0.01, float(edges[band + 1]) - 0.01)
        for t in range(world.config.episodes):
            k = int(world.key[0, t])
            scenario = scenario_of[k]
            self._count += 1
            target = scenario.target.format(a=int(rng.integers(1, 49)), b=f"{int(rng.integers(1, 65)):02d}")
            real = bool(world.real_fault[0, t])
            prediction = {
                "id": f"{self.run_tag}-{self._count:05d}",
                "fault_type": scenario.fault_type,
                "target": target,
                "action": scenario.action,
                "confidence": round(float(np.clip(world.confidence[0, t], *bands[k])), 3),
                "severity": scenario.severity,
                "time_to_fault_s": scenario.time_to_fault_s,
            }
            answer = answer_for(
                real,
                flipped=bool(world.flip[0, t]),
                neutral=bool(world.neutral[0, t]),
                skipped=bool(world.skipped[0, t]),
            )
            yield StreamItem(prediction, real, int(world.operator[0, t]), answer)


class ReplayStream:
    """Predictions from a JSONL or CSV file, in file order; malformed lines are listed in ``errors``.

    A ``real_fault`` (true/false) field is taken out of each record as its outcome; with it the engineers
    answer as in the built-in stream (same noise), without it they leave the recommendation unanswered.
    """

    def __init__(self, path: Path, *, seed: int = 0, noise: Noise | None = None, fmt: str | None = None) -> None:
        self.path = path
        self.noise = noise or Noise()
        self.items: list[StreamItem] = []
        self.errors: list[str] = []
        rng = np.random.default_rng(seed)
        # the records as `npo-bot replay` reads them (UTF-8 with or without a byte-order mark; raises UnreadableFile)
        for number, record in read_records(path, fmt):
            try:
                if isinstance(record, InvalidRecord):
                    raise record
                if not isinstance(record, dict):
                    raise InvalidRecord("(line)", "expected a JSON object")
                fields = dict(record)
                real = _truth(fields.pop("real_fault", None))
                prediction_from_json(fields, received_at=0.0)  # validate here: report the line, send nothing bad
            except InvalidRecord as exc:
                self.errors.append(f"line {number}: {exc.field}: {exc.message}")
                continue
            engineer = int(rng.integers(0, len(ENGINEERS)))
            u = rng.random()
            answer = None
            if real is not None:
                answer = answer_for(
                    real,
                    flipped=bool(rng.random() < self.noise.epsilon),
                    neutral=self.noise.skip <= u < self.noise.skip + self.noise.neutral,
                    skipped=u < self.noise.skip,
                )
            self.items.append(StreamItem(fields, real, engineer, answer))

    def __iter__(self) -> Iterator[StreamItem]:
        return iter(self.items)


def _truth(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise InvalidRecord("real_fault", f"must be true or false, got {value!r}")
