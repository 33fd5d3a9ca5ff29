"""The simulator's adversarial operators: inverting (the default) or one-sided (override, or like, everything they
answer), and what the trust weights make of them."""

from __future__ import annotations

import numpy as np
import pytest

from npo.sim.engine import Condition, run
from npo.sim.world import WorldConfig, make_world
from npo.types import InvalidRecord


def test_the_adversary_kind_is_validated() -> None:
    with pytest.raises(InvalidRecord, match="adversary"):
        WorldConfig(adversary="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "code"), [("override_all", 1.0), ("like_all", 0.0)])
def test_one_sided_adversaries_give_one_answer_and_the_others_are_unchanged(kind: str, code: float) -> None:
    config = WorldConfig(episodes=300, adversarial=0.2, adversary=kind)  # type: ignore[arg-type]
    world = make_world(config, 3, 0)
    trace = run(world, Condition("full", trust=False))
    who = world.adversarial_ops[np.arange(3)[:, None], world.operator]
    answered = trace.surfaced & ~world.skipped
    assert (answered & who).any() and np.all(trace.y[answered & who] == code)
    inverting = run(make_world(WorldConfig(episodes=300, adversarial=0.2), 3, 0), Condition("full", trust=False))
    honest = answered & ~who & inverting.surfaced  # the same world, surfaced alike: the same honest answers
    assert honest.any() and np.array_equal(trace.y[honest], inverting.y[honest])


@pytest.mark.parametrize("kind", ["invert", "override_all", "like_all"])
def test_trust_weighs_every_kind_of_adversary_below_the_honest_operators(kind: str) -> None:
    """Outcomes catch an inverting operator fully; a one-sided one only on the side the truth is not — so overriding
    everything, on a stream where most answered recommendations are real faults, loses more weight than liking
    everything (README, Feedback abuse)."""
    world = make_world(WorldConfig(adversarial=0.2, adversary=kind), 8, 100)  # type: ignore[arg-type]
    weights = run(world, Condition("full"), seed=101).trust_weights
    adversarial = world.adversarial_ops
    assert weights[adversarial].mean() < 0.5 < weights[~adversarial].mean()
