"""What the bot did with each kind of recommendation over a demo run: for the end-of-run summary.

The built-in stream knows which kinds come from the reliable predictor (:data:`bot.demo.scenarios.CATALOGUE`), so
the summary can say whether the bot learnt to surface those and to hold back the noisy ones — the trade-off the
bandit's miss weight (``NPO_MISS_WEIGHT``, ``--miss-weight``) sets — and which thresholds τ it drew as it learnt.
Pure: the caller reads the decisions from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bot.demo.scenarios import CATALOGUE

__all__ = ["Decided", "KindCounts", "Surfacing", "surfacing"]

RELIABLE: Mapping[str, bool] = {s.fault_type: s.reliable for s in CATALOGUE}
SHOWN = ("surface", "digest")  # verdicts that reach the channel (a digest lists the recommendation)


@dataclass(frozen=True, slots=True)
class Decided:
    """One decision of the run: the prediction's kind, the verdict, the τ drawn (None: blocked first), when."""

    fault_type: str
    verdict: str
    threshold: float | None
    at: float


@dataclass(frozen=True, slots=True)
class KindCounts:
    """Decisions for a group of kinds: how many, how many reached the channel, how many τ suppressed."""

    decided: int = 0
    shown: int = 0
    suppressed: int = 0

    def add(self, verdict: str) -> KindCounts:
        return KindCounts(self.decided + 1, self.shown + (verdict in SHOWN), self.suppressed + (verdict == "suppress"))


@dataclass(frozen=True, slots=True)
class Surfacing:
    """Per half of the run, the reliable and the noisy kinds' counts; per quarter, the mean τ drawn."""

    reliable: tuple[KindCounts, KindCounts]
    noisy: tuple[KindCounts, KindCounts]
    tau_by_quarter: tuple[float | None, float | None, float | None, float | None]

    def lines(self) -> list[str]:
        """The summary's lines (the reliable/noisy line only when the run saw catalogue kinds)."""
        out = []
        rel, noisy = self.reliable[1], self.noisy[1]
        if any(c.decided for c in (*self.reliable, *self.noisy)):
            out.append(
                f"second half: reliable kinds surfaced {rel.shown} of {rel.decided} ({rel.suppressed} suppressed by "
                f"τ), noisy kinds surfaced {noisy.shown} of {noisy.decided}"
            )
        shown = " → ".join("–" if t is None else f"{t:.2f}" for t in self.tau_by_quarter)
        out.append(f"mean τ drawn by quarter of the run: {shown}")
        return out


def surfacing(decisions: Iterable[Decided], start: float, end: float) -> Surfacing:
    """Count ``decisions`` made in ``[start, end]`` (Unix seconds) by half and quarter of that span. Kinds not in
    the built-in catalogue (a replayed file) count only towards τ."""
    span = max(end - start, 1e-9)
    reliable = [KindCounts(), KindCounts()]
    noisy = [KindCounts(), KindCounts()]
    taus: list[list[float]] = [[], [], [], []]
    for d in decisions:
        if not start <= d.at <= end:
            continue
        quarter = min(3, int((d.at - start) / span * 4))
        if d.threshold is not None:
            taus[quarter].append(d.threshold)
        kind = RELIABLE.get(d.fault_type)
        if kind is not None:
            group = reliable if kind else noisy
            group[quarter // 2] = group[quarter // 2].add(d.verdict)
    means = tuple(sum(q) / len(q) if q else None for q in taus)
    return Surfacing((reliable[0], reliable[1]), (noisy[0], noisy[1]), (means[0], means[1], means[2], means[3]))
